"""`python -m persister`."""

from libs.lifecycle import serve
from persister.app import SERVICE

if __name__ == "__main__":
    serve(SERVICE)
