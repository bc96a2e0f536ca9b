"""The channel gateway: customers' own channels outside (today the web and H5 chat widget over
WebSocket), the platform's APIs inside, and the customer store."""
