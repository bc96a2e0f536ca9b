"""Arrival shapes. Customers loop over contacts, so arrivals follow the number of customers."""

from __future__ import annotations

from locust import LoadTestShape

from harness.users import SURGE


class SurgeShape(LoadTestShape):
    """The seasonal peak: a calm base, arrivals rising tenfold within a minute, standby agents
    signing in as it starts, a plateau, then the fall."""

    def tick(self) -> tuple[int, float] | None:
        o = self.runner.environment.parsed_options
        staff = o.agents + o.standby_agents + o.supervisors
        base, peak = o.surge_base, o.surge_base * o.surge_factor
        t = self.get_run_time()
        calm, rise, plateau, fall = 60, 60, 120, 30
        if t < calm:
            customers, rate = base, float(base)
        elif t < calm + rise + plateau:
            SURGE.set()
            # Spawning the extra customers over 50 s keeps the rise within the minute.
            customers, rate = peak, (peak - base) / 50
        elif t < calm + rise + plateau + fall:
            customers, rate = base, float(peak)
        else:
            return None
        return staff + customers, max(rate, 1.0)
