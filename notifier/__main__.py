"""`python -m notifier`."""

from libs.lifecycle import serve
from libs.settings import load_settings
from notifier.app import create_app
from notifier.settings import NotifierSettings


def main() -> None:
    serve("notifier", lambda: load_settings(NotifierSettings), create_app)


if __name__ == "__main__":
    main()
