"""Gateway endpoints: groups (being built; see the issue tracker)."""

from gateway.api import Routes

routes = Routes(tag="groups")
