"""`python -m gateway`."""

from gateway.app import SERVICE
from libs.lifecycle import serve

if __name__ == "__main__":
    serve(SERVICE)
