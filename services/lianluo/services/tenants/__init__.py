"""The tenants service: every tenant's configuration, API keys, and its `tenant.config` events."""
