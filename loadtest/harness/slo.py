"""Service-level objectives of a campaign: checked when Locust quits; a miss exits non-zero."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.users import CONTACT_TO_OFFER, RELAY_TO_AGENT, RELAY_TO_CUSTOMER


@dataclass
class Check:
    name: str
    measured: float | None
    limit: float
    unit: str

    @property
    def passed(self) -> bool:
        return self.measured is not None and self.measured <= self.limit

    def row(self) -> str:
        shown = "no samples" if self.measured is None else f"{self.measured:,.1f} {self.unit}"
        verdict = "PASS" if self.passed else "FAIL"
        return f"  {self.name:34} {shown:>16}   <= {self.limit:,.1f} {self.unit:3}  {verdict}"


def _p95(stats: Any, name: str) -> float | None:
    entry = stats.entries.get((name, "e2e"))
    if entry is None or entry.num_requests == 0:
        return None  # nothing measured is a failure, never a silent pass
    return float(entry.get_response_time_percentile(0.95))


def checks(environment: Any) -> list[Check]:
    o = environment.parsed_options
    stats = environment.stats
    total = stats.total
    error_rate = 100.0 * total.num_failures / total.num_requests if total.num_requests else None
    relays = [v for v in (_p95(stats, RELAY_TO_AGENT), _p95(stats, RELAY_TO_CUSTOMER)) if v]
    errors = Check("error rate", error_rate, o.slo_error_percent, "%")
    if o.latency_slos == "off":
        # Latency depends on the machine's load; a test suite judges only what holds anywhere.
        return [errors]
    return [
        errors,
        Check("p95 contact to offer", _p95(stats, CONTACT_TO_OFFER), o.slo_offer_p95_ms, "ms"),
        Check(
            "p95 message relay (worse direction)",
            max(relays) if relays else None,
            o.slo_relay_p95_ms,
            "ms",
        ),
    ]


def summary(environment: Any) -> tuple[str, bool]:
    """A readable table of the end-to-end figures and the SLO verdicts."""
    stats = environment.stats
    lines = ["", f"Campaign summary ({environment.parsed_options.campaign})", ""]
    lines.append(f"  {'name':34} {'count':>7} {'fails':>6} {'p50':>7} {'p95':>7} {'p99':>7}  ms")
    for (name, kind), entry in sorted(stats.entries.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if not entry.num_requests:
            continue
        pct = [entry.get_response_time_percentile(q) for q in (0.5, 0.95, 0.99)]
        lines.append(
            f"  {(kind + ' ' + name)[:34]:34} {entry.num_requests:>7} {entry.num_failures:>6} "
            + " ".join(f"{p:>7.0f}" for p in pct)
        )
    total = stats.total
    lines.append(
        f"  {'total':34} {total.num_requests:>7} {total.num_failures:>6}  "
        f"{total.total_rps:.1f} req/s"
    )
    lines += ["", "SLOs:"]
    results = checks(environment)
    lines += [c.row() for c in results]
    passed = all(c.passed for c in results)
    lines += ["", "SLOs met." if passed else "SLOs MISSED: the run fails.", ""]
    return "\n".join(lines), passed
