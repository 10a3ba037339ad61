"""Settings every service shares, read from the environment by pydantic-settings.

Infrastructure addresses are unprefixed and the same for every service
(KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, MONGO_SHARDS, MONGO_DATABASE,
MESSENGER_NAMESPACE, LOG_LEVEL); what belongs to one service carries that
service's prefix (GATEWAY_HTTP_PORT, PERSISTER_BATCH_MAX_RECORDS...).
A subclass sets `model_config = service_config("GATEWAY_")`.

What several services have in common lives here once: `ServiceSettings` (every
service), `ConsumerBatches` (every service with consumer loops: batch size,
linger, retry backoff; read by libs/service.py) and `ProjectionChecks` (every
service that keeps a Redis projection). A service's class derives from them and
overrides a default where its own differs (`http_port: Port = 8095`), so each
field is declared, bounded and described in one place (docs/services.md).

Local defaults match the stack that `make up` starts (deploy/local).
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOCAL_KAFKA = "127.0.0.1:19092"
LOCAL_REDIS = "redis://127.0.0.1:16379/0"
LOCAL_MONGO_SHARDS = ("mongodb://127.0.0.1:27117/", "mongodb://127.0.0.1:27118/")

#: A TCP port (0: any free one).
Port = Annotated[int, Field(ge=0, le=65535)]
#: The most records a consumer batch holds.
BatchRecords = Annotated[int, Field(ge=1, le=20_000)]
#: How long a consumer batch waits for more records after its first, in ms.
LingerMs = Annotated[float, Field(ge=0, le=10_000)]


class ConfigurationError(Exception):
    """Configuration that cannot work; the message is one line for the operator."""


def service_config(env_prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=env_prefix, extra="ignore", frozen=True)


def _shared(name: str) -> AliasChoices:
    return AliasChoices(name)


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclass per service with its own prefix."""

    model_config = service_config("MESSENGER_")

    kafka_bootstrap_servers: str = Field(
        LOCAL_KAFKA, validation_alias=_shared("KAFKA_BOOTSTRAP_SERVERS")
    )
    redis_url: str = Field(LOCAL_REDIS, validation_alias=_shared("REDIS_URL"))
    mongo_shards: Annotated[tuple[str, ...], NoDecode] = Field(
        LOCAL_MONGO_SHARDS, validation_alias=_shared("MONGO_SHARDS")
    )
    #: The PostgreSQL database under each MONGO_SHARDS entry when the shards are FerretDB
    #: on PostgreSQL (the local stack), in the same order; empty on a real MongoDB. The
    #: bootstrap makes there the expression indexes FerretDB's queries can use.
    mongo_shards_sql: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_shared("MONGO_SHARDS_SQL")
    )
    mongo_database: str = Field("messenger", validation_alias=_shared("MONGO_DATABASE"))
    #: Isolates topics, consumer groups, Redis keys and the database name (tests, tenants).
    namespace: str = Field(
        "", validation_alias=_shared("MESSENGER_NAMESPACE"), pattern=r"^[a-z0-9_]{0,32}$"
    )
    kafka_partitions: int = Field(8, ge=1, le=1024, validation_alias=_shared("KAFKA_PARTITIONS"))
    kafka_replication_factor: int = Field(
        1, ge=1, le=7, validation_alias=_shared("KAFKA_REPLICATION_FACTOR")
    )
    log_level: str = Field("INFO", validation_alias=_shared("LOG_LEVEL"))

    http_host: str = "127.0.0.1"
    http_port: Port = 0
    #: Where /metrics is served: on a listener of its own when set (the gateway's
    #: API port is public, so its metrics are not on it), else on the HTTP port.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(None, ge=0, le=65535)
    #: Static group membership (KIP-345): each consumer joins its group as
    #: `<group>@<host name>:<HTTP port>`, an id no other live process can hold (the
    #: port is bound before any consumer starts). A restarted instance, after a crash
    #: too, takes its partitions back at once instead of waiting for the dead member's
    #: session to time out; a stopped one keeps them for the session timeout.
    kafka_static_membership: bool = Field(True, validation_alias=_shared("KAFKA_STATIC_MEMBERSHIP"))
    #: How long a service keeps trying to reach Kafka at start before it gives up.
    kafka_connect_timeout_s: float = Field(
        30.0, gt=0, validation_alias=_shared("KAFKA_CONNECT_TIMEOUT_S")
    )
    #: A client must send a request's line and headers within this many seconds of
    #: connecting or of the previous response (slowloris); also the keep-alive idle limit.
    http_header_timeout_s: float = Field(
        15.0, gt=0, le=3600, validation_alias=_shared("HTTP_HEADER_TIMEOUT_S")
    )
    #: Seconds a SIGTERM'd service waits for in-flight work before it gives up.
    shutdown_grace_seconds: float = Field(10.0, gt=0)

    @field_validator("mongo_shards", "mongo_shards_sql", mode="before")
    @classmethod
    def _split_shards(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("mongo_shards")
    @classmethod
    def _check_shards(cls, shards: tuple[str, ...]) -> tuple[str, ...]:
        if not shards:
            raise ValueError("MONGO_SHARDS names no shard; give comma-separated MongoDB URIs")
        for uri in shards:
            if not uri.startswith(("mongodb://", "mongodb+srv://")):
                raise ValueError(
                    f"MONGO_SHARDS entry {uri!r} is not a MongoDB URI (mongodb://host:port/)"
                )
        if len(set(shards)) != len(shards):
            raise ValueError("MONGO_SHARDS lists the same URI twice")
        return shards

    @model_validator(mode="after")
    def _check_shards_sql(self) -> ServiceSettings:
        if self.mongo_shards_sql and len(self.mongo_shards_sql) != len(self.mongo_shards):
            raise ValueError("MONGO_SHARDS_SQL must name one PostgreSQL URL per MONGO_SHARDS entry")
        for url in self.mongo_shards_sql:
            if not url.startswith(("postgresql://", "postgres://")):
                raise ValueError(f"MONGO_SHARDS_SQL entry {url!r} is not a PostgreSQL URL")
        return self

    @property
    def database_name(self) -> str:
        return f"{self.mongo_database}_{self.namespace}" if self.namespace else self.mongo_database

    def consumer_group(self, service: str) -> str:
        return f"{self.namespace}.{service}" if self.namespace else service


class ConsumerBatches(BaseModel):
    """How a service's consumer loops batch and retry (mixed into its settings class).

    Prefixed like the service's own fields (PERSISTER_BATCH_MAX_RECORDS,
    NOTIFIER_BATCH_LINGER_MS...). libs/service.py hands them to every ConsumerLoop.
    """

    #: A batch is up to this many records (one write per shard per batch, whatever
    #: its size)...
    batch_max_records: BatchRecords = 500
    #: ...or what arrived within this many ms of its first record, whichever comes
    #: first. 0 = take what one fetch returned: a request's latency is its batch's,
    #: so lingering only pays where nobody waits for the answer.
    batch_linger_ms: LingerMs = 0
    #: Ceiling of the backoff between retries of a batch that failed (its offsets
    #: stay uncommitted meanwhile: a shard that is down is waited out, not skipped).
    max_retry_backoff_s: float = Field(5.0, gt=0, le=60)


class ProjectionChecks(BaseModel):
    """Mixed into the settings of a service that keeps a Redis projection of MongoDB."""

    #: How often the projection's sentinel is checked (a missing one: the projection
    #: is rebuilt from MongoDB).
    projection_check_interval_s: float = Field(1.0, gt=0, le=60)


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S]) -> S:
    """Read settings, turning validation errors into one ConfigurationError line."""
    from pydantic import ValidationError

    try:
        return cls()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"bad configuration: {problems}") from None
