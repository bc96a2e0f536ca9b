"""The shared runtime of every Lianluo service.

Settings, logging, telemetry, the gRPC server bootstrap, Kafka events, Postgres, the outbox and
the service lifecycle live here once. Services import it; it imports no service.
"""
