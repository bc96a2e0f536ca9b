"""Which failures are outages of a dependency, and which are the fault of one event or record.

An outage (Postgres restarting, the broker unreachable) would fail every event alike, so it is
waited out and never counts toward dead-lettering. Anything else fails the one event.
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError

_POSTGRES_OUTAGES = (
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # class 40: serialization failure, deadlock
    asyncpg.InterfaceError,  # the pool's connection was closed under it
    # A pooled connection left mid-operation when the server went away ("cannot switch to
    # state ...; another operation is in progress"); the pool replaces it.
    asyncpg.exceptions.InternalClientError,
)


def is_outage(error: BaseException) -> bool:
    """True for a failure of Postgres, the broker or the network, rather than of the event."""
    if isinstance(error, (*_POSTGRES_OUTAGES, OSError)):
        return True
    return isinstance(error, KafkaError) and bool(getattr(error, "retriable", False))
