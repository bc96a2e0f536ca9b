"""Settings of the edge (environment variables prefixed LIANLUO_)."""

from lianluo.runtime.settings import ServiceSettings


class EdgeSettings(ServiceSettings):
    # Where a cell's service answers; the operator names a cell's Services "<cell>-<service>".
    edge_endpoint_template: str = "{cell}-{service}:50051"
    # The services a cell runs, whose endpoints a location lists.
    edge_cell_services: list[str] = ["tenants", "media", "ivr", "acd", "recording", "notification"]
