"""delivery_service (see README.md for what it owns)."""
