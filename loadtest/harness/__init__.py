"""Locust harness for Lianluo: synchronous gRPC under gevent, the load tenant, users and SLOs."""
