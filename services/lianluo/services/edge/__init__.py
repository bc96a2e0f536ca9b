"""The edge: tells a client which cell serves its tenant, and where that cell answers."""
