"""Gateway endpoints: accounts (being built; see the issue tracker)."""

from gateway.api import Routes

routes = Routes(tag="accounts")
