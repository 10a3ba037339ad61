"""`python -m group_service`."""

from group_service.app import create_app
from group_service.settings import GroupServiceSettings
from libs.lifecycle import serve
from libs.settings import load_settings


def main() -> None:
    serve("group_service", lambda: load_settings(GroupServiceSettings), create_app)


if __name__ == "__main__":
    main()
