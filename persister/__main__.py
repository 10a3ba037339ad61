"""`python -m persister`."""

from libs.lifecycle import serve
from libs.settings import load_settings
from persister.app import create_app
from persister.settings import PersisterSettings


def main() -> None:
    serve("persister", lambda: load_settings(PersisterSettings), create_app)


if __name__ == "__main__":
    main()
