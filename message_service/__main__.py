"""`python -m message_service`."""

from libs.lifecycle import serve
from libs.settings import load_settings
from message_service.app import create_app
from message_service.settings import MessageServiceSettings


def main() -> None:
    serve("message_service", lambda: load_settings(MessageServiceSettings), create_app)


if __name__ == "__main__":
    main()
