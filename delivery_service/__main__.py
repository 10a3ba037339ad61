"""`python -m delivery_service`."""

from delivery_service.app import SERVICE
from libs.lifecycle import serve

if __name__ == "__main__":
    serve(SERVICE)
