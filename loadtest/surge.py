"""The surge campaign: the users of locustfile.py under the surge arrival shape."""

from __future__ import annotations

from harness.shapes import SurgeShape
from locustfile import Agent, Customer, StandbyAgent, Supervisor  # also registers the hooks

__all__ = ["Agent", "Customer", "StandbyAgent", "Supervisor", "SurgeShape"]
