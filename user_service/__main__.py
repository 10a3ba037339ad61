"""`python -m user_service`."""

from libs.lifecycle import serve
from user_service.app import SERVICE

if __name__ == "__main__":
    serve(SERVICE)
