"""Redis key names: every prefix the system uses, in one module (arq's habit).

Keys are built by `RedisKeys(namespace)` so a namespace (tests, tenants) isolates
them. Only the owning service writes a key family; others may read it, as noted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RedisKeys:
    namespace: str = ""

    def key(self, *parts: str) -> str:
        """`ns:part:part...`: the one place key strings are joined."""
        head = (self.namespace,) if self.namespace else ()
        return ":".join((*head, *parts))

    # -- user_service (owner); the gateway reads sessions to authenticate --------------
    def session(self, token_hash: str) -> str:
        """Hash: user_id, created_at, expires_at (absolute). TTL = idle timeout."""
        return self.key("session", token_hash)

    def user_sessions(self, user_id: str) -> str:
        """Set of token hashes of one user (logout everywhere, revocation)."""
        return self.key("user_sessions", user_id)

    def user_profile(self, user_id: str) -> str:
        """Hash: the public profile projection (id, username, display_name, deleted)."""
        return self.key("user", user_id)

    def rate_limit(self, scope: str, subject: str) -> str:
        return self.key("rl", scope, subject)

    def username(self, username_lower: str) -> str:
        """String: user_id of a (lower-cased) username; absent once deleted."""
        return self.key("username", username_lower)

    # -- projections: written by their owner BEFORE it replies, read by others -------
    # A projection is rebuilt from its owner's MongoDB collections when its
    # `projection_ready` sentinel is missing (e.g. after a Redis flush); a reader
    # that finds the sentinel missing answers 503 rather than guessing.
    def projection_ready(self, name: str) -> str:
        """String '1' once projection `name` ('users', 'groups') is complete."""
        return self.key("proj_ready", name)

    # -- group_service (owner); message_service, delivery_service, gateway read ------
    def group(self, group_id: str) -> str:
        """Hash: name, owner_id, created_at (absent once deleted)."""
        return self.key("group", group_id)

    def group_members(self, group_id: str) -> str:
        """Hash user_id -> role of one group."""
        return self.key("group_members", group_id)

    def user_groups(self, user_id: str) -> str:
        """Set of group ids a user is a member of."""
        return self.key("user_groups", user_id)

    def blocks(self, blocker_id: str) -> str:
        """Set of user ids that `blocker_id` blocks."""
        return self.key("blocks", blocker_id)

    # -- message_service (owner) -------------------------------------------------------
    def recent_messages(self, conversation: str) -> str:
        """Sorted set by seq: the newest messages of one conversation (history cache)."""
        return self.key("recent", conversation)

    # -- delivery_service (owner); the gateway publishes/reads its socket registry -----
    def gateway_channel(self, instance_id: str) -> str:
        """Pub/sub channel a gateway instance listens on for pushes to its sockets."""
        return self.key("push", instance_id)

    def user_connections(self, user_id: str) -> str:
        """Hash connection_id -> gateway instance id (session registry)."""
        return self.key("conns", user_id)
