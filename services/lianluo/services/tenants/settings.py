"""Settings of the tenants service (environment variables prefixed LIANLUO_)."""

from lianluo.runtime.settings import ServiceSettings


class TenantsSettings(ServiceSettings):
    """The tenants service needs nothing beyond the shared settings yet."""
