"""The IVR service: runs tenants' self-service flows and asks the ACD for a person."""
