"""`python -m notifier`."""

from libs.lifecycle import serve
from notifier.app import SERVICE

if __name__ == "__main__":
    serve(SERVICE)
