"""`python -m delivery_service`."""

from delivery_service.app import create_app
from delivery_service.settings import DeliveryServiceSettings
from libs.lifecycle import serve
from libs.settings import load_settings


def main() -> None:
    serve("delivery_service", lambda: load_settings(DeliveryServiceSettings), create_app)


if __name__ == "__main__":
    main()
