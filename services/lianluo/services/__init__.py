"""The services of a cell. Each one is a package with the same inner shape:

app.py (composition root and SPEC), settings.py, grpc_api.py (adapter), service.py (logic),
domain.py (pure rules), repository.py (Postgres, tenant-scoped), events.py (Kafka in and out)
and migrations/. Services never import each other; they share lianluo.runtime and
lianluo.domain, and talk through events.
"""

# The services that exist, by their one name (CLI subcommand, schema, consumer group, ...).
# Modules are imported lazily so that `lianluo serve X` loads only X.
SERVICES = {
    "tenants": "lianluo.services.tenants.app",
    "media": "lianluo.services.media.app",
    "ivr": "lianluo.services.ivr.app",
    "acd": "lianluo.services.acd.app",
    "notification": "lianluo.services.notification.app",
    "recording": "lianluo.services.recording.app",
    "gateway": "lianluo.services.gateway.app",
    "console": "lianluo.services.console.app",
    # Phone calls over SIP (docs/voice.md).
    "voice": "lianluo.services.voice.app",
    # The global plane: one per platform, not one per cell.
    "edge": "lianluo.services.edge.app",
}
# What a cell runs (the operator clones these; `lianluo run` starts them as one local cell).
CELL_SERVICES = [
    "tenants",
    "media",
    "ivr",
    "acd",
    "notification",
    "recording",
    "gateway",
    "console",
    "voice",
]
# What a local cell of the test suite and the benchmarks starts unless told otherwise: all but
# voice, which needs SIP and RTP ports of its own (its tests start it with their own settings).
LOCAL_SERVICES = [s for s in CELL_SERVICES if s != "voice"]
