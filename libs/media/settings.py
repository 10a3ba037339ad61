"""Settings of the attachment store, shared by every process that reads or writes blobs.

Unprefixed like the other infrastructure addresses (the launcher's `env` prints
S3_ENDPOINT_URL for the local store); what only the gateway decides (size
limits, thumbnails) is in gateway/settings.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, Field

#: The local store's address and credentials (deploy/local starts it on 127.0.0.1).
LOCAL_S3_ENDPOINT = "http://127.0.0.1:19000"
LOCAL_S3_ACCESS_KEY = "messenger-local"
LOCAL_S3_SECRET_KEY = "messenger-local-secret"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class MediaSettings(BaseModel):
    """Mixed into a service's settings (fields read from unprefixed variables)."""

    #: "s3" (default; S3Proxy locally, any S3 in production) or "gridfs" (on MONGO_SHARDS).
    attachments_store: Literal["s3", "gridfs"] = Field(
        "s3", validation_alias=_env("ATTACHMENTS_STORE")
    )
    #: Empty means AWS's own endpoint for the region.
    s3_endpoint_url: str = Field(LOCAL_S3_ENDPOINT, validation_alias=_env("S3_ENDPOINT_URL"))
    s3_bucket: str = Field(
        "messenger-attachments",
        validation_alias=_env("S3_BUCKET"),
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    )
    s3_region: str = Field("us-east-1", validation_alias=_env("S3_REGION"))
    s3_access_key_id: str = Field(LOCAL_S3_ACCESS_KEY, validation_alias=_env("S3_ACCESS_KEY_ID"))
    s3_secret_access_key: str = Field(
        LOCAL_S3_SECRET_KEY, validation_alias=_env("S3_SECRET_ACCESS_KEY")
    )
    #: Create the bucket at start when it is missing (local stacks; off where it is provisioned).
    s3_create_bucket: bool = Field(True, validation_alias=_env("S3_CREATE_BUCKET"))
    #: Bytes per multipart part: an upload holds at most one part in memory (S3's minimum: 5 MiB).
    s3_part_bytes: int = Field(
        5 * 1024 * 1024, ge=5 * 1024 * 1024, validation_alias=_env("S3_PART_BYTES")
    )
    #: Parts a process sends at once, across all uploads (bounds memory; S3 is the limit).
    s3_parts_in_flight: int = Field(4, ge=1, le=256, validation_alias=_env("S3_PARTS_IN_FLIGHT"))
