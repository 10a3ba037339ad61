"""`python -m user_service`."""

from libs.lifecycle import serve
from libs.settings import load_settings
from user_service.app import create_app
from user_service.settings import UserServiceSettings


def main() -> None:
    serve("user_service", lambda: load_settings(UserServiceSettings), create_app)


if __name__ == "__main__":
    main()
