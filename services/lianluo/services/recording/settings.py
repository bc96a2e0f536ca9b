"""Settings of the recording service (environment variables prefixed LIANLUO_)."""

from typing import Annotated

from pydantic import Field

from lianluo.runtime.settings import ObjectStoreSettings, ServiceSettings


class RecordingSettings(ServiceSettings, ObjectStoreSettings):
    """Retention defaults, the purge loop's pace, and where a record's objects are (the cell's
    object store: the purge deletes them) and who opens them (the gateway: export links)."""

    # Off the per-contact path (it records what already happened): a longer fetch wait than the
    # hot path's 20 ms, so an idle cell wakes the broker less.
    kafka_fetch_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = 250

    # How long an ended interaction's record is kept unless SetRetention says otherwise.
    recording_retention_days: Annotated[int, Field(ge=1, le=36_500)] = 365
    recording_purge_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    recording_purge_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    # The channel gateway's public base URL: an export's links to a record's files and call
    # audio open there, signed with the cell's link key.
    recording_link_base_url: str = "http://127.0.0.1:8088"
