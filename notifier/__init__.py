"""notifier (see README.md for what it owns)."""
