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
        """Hash: user_id, created_at, expires_at (absolute, unix s), idle_s. TTL = idle timeout."""
        return self.key("session", token_hash)

    def user_sessions(self, user_id: str) -> str:
        """Set of token hashes of one user (logout everywhere, revocation)."""
        return self.key("user_sessions", user_id)

    def user_profile(self, user_id: str) -> str:
        """Hash: the public profile projection (id, username, display_name, deleted)."""
        return self.key("user", user_id)

    def rate_limit(self, scope: str, subject: str) -> str:
        """String: a GCRA bucket's theoretical arrival time (ms); written by the gateway."""
        return self.key("rl", scope, subject)

    def username(self, username_lower: str) -> str:
        """String: user_id of a (lower-cased) username; absent once deleted."""
        return self.key("username", username_lower)

    def user_credentials(self, user_id: str) -> str:
        """Hash {password_hash}: user_service's own login cache (read by nobody else)."""
        return self.key("user_cred", user_id)

    def users_projection_lock(self) -> str:
        """String: held by the user_service instance rebuilding the users projection."""
        return self.key("proj_lock", "users")

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

    def group_joined(self, group_id: str) -> str:
        """Hash user_id -> joined_at (ISO 8601) of one group: join order, for hand-over."""
        return self.key("group_joined", group_id)

    def user_groups(self, user_id: str) -> str:
        """Set of group ids a user is a member of."""
        return self.key("user_groups", user_id)

    def blocks(self, blocker_id: str) -> str:
        """Set of user ids that `blocker_id` blocks."""
        return self.key("blocks", blocker_id)

    def groups_rebuild_lock(self) -> str:
        """Lock held by the one group_service instance rebuilding the groups projection."""
        return self.key("lock", "rebuild", "groups")

    # -- message_service (owner) -------------------------------------------------------
    def recent_messages(self, conversation: str) -> str:
        """Sorted set (all scores 0, ordered by member): the positions
        ('millis:message_id', libs.contracts.messages.position) of the newest
        messages of one conversation (history cache; the gateway reads it)."""
        return self.key("recent", conversation)

    def recent_bodies(self, conversation: str) -> str:
        """Hash position -> message JSON for `recent_messages`, plus the coverage
        markers 'from:<receiver_id>': the cache holds every message of that
        receiver in the conversation at or after that position."""
        return self.key("recent_body", conversation)

    def recent_inbox(self, receiver_id: str) -> str:
        """Sorted set score seq -> message JSON: the newest messages of one receiver
        (inbox or group log; sync cache). Covers (min, max] when its size is max-min+1."""
        return self.key("recent_inbox", receiver_id)

    def message_locator(self, message_id: str) -> str:
        """String "<receiver_kind>|<receiver_id>|<seq>|<sender_id>|<position>" of a
        message, written before the send's reply (the gateway finds a message to edit,
        delete, react or reply to with it; MongoDB by _id when it expired)."""
        return self.key("msg_loc", message_id)

    # -- delivery_service (owner); the gateway publishes/reads its socket registry -----
    def session_revocations(self) -> str:
        """Pub/sub channel: a JSON list of revoked session token hashes (every gateway
        listens, to drop them from its session cache and close their sockets)."""
        return self.key("session_revocations")

    def gateway_channel(self, instance_id: str) -> str:
        """Pub/sub channel a gateway instance listens on for pushes to its sockets."""
        return self.key("push", instance_id)

    def user_connections(self, user_id: str) -> str:
        """Hash connection_id -> "<gateway instance id>|<expires_at epoch s>" (session
        registry; written by the gateway that holds the socket, refreshed by its
        heartbeat; a field past its expiry is stale: its gateway died)."""
        return self.key("conns", user_id)

    def last_seen(self, user_id: str) -> str:
        """String: epoch seconds a user was last connected (presence)."""
        return self.key("last_seen", user_id)

    def ws_ticket(self, ticket: str) -> str:
        """String "<user_id>|<token_hash>": a single-use WebSocket ticket (short TTL)."""
        return self.key("ws_ticket", ticket)

    def contacts(self, user_id: str) -> str:
        """Set of users with a direct conversation with `user_id` (presence peers)."""
        return self.key("contacts", user_id)

    def delivered_watermarks(self, receiver_id: str) -> str:
        """Hash reader_id -> delivered seq in `receiver_id`'s seq space."""
        return self.key("wm_delivered", receiver_id)

    def read_watermarks(self, receiver_id: str) -> str:
        """Hash -> read seq in `receiver_id`'s seq space. Field: the reader for a group,
        the peer (thread) for an inbox, whose reader is its owner."""
        return self.key("wm_read", receiver_id)

    def message_ref(self, message_id: str) -> str:
        """String "<receiver_kind>|<receiver_id>|<seq>|<sender_id>" of a recent message."""
        return self.key("msg_ref", message_id)

    def inbox(self, user_id: str, archived: bool) -> str:
        """Sorted set conversation ("user:<peer>" | "group:<id>") -> last activity (ms):
        the user's inbox order, one set for archived conversations, one for the rest."""
        return self.key("inbox_archived" if archived else "inbox", user_id)

    def inbox_entry(self, user_id: str, conversation: str) -> str:
        """Hash of one inbox entry: kind, id, last_message (JSON), last_activity_ms,
        muted, archived ("0"/"1")."""
        return self.key("inbox_entry", user_id, conversation)

    def unread(self, user_id: str, conversation: str) -> str:
        """Sorted set of the seqs of others' messages the user has not read in one
        conversation (its size is the unread count: O(1))."""
        return self.key("unread", user_id, conversation)

    def seq_senders(self, receiver_id: str) -> str:
        """Sorted set "<seq>:<sender_id>" by seq: who sent what recently (receipt fan-out)."""
        return self.key("seq_senders", receiver_id)
