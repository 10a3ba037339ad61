"""`python -m gateway`."""

from gateway.app import create_app
from gateway.settings import GatewaySettings
from libs.lifecycle import serve
from libs.settings import load_settings


def main() -> None:
    serve("gateway", lambda: load_settings(GatewaySettings), create_app)


if __name__ == "__main__":
    main()
