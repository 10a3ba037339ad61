"""`python -m message_service`."""

from libs.lifecycle import serve
from message_service.app import SERVICE

if __name__ == "__main__":
    serve(SERVICE)
