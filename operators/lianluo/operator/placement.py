"""Where a new tenant goes: best-fit bin packing on expected sessions and tenant count. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_CELL_NAME = re.compile(r"^cell-([1-9][0-9]*)$")


@dataclass(frozen=True)
class CellRoom:
    """A cell's capacity and what is already placed in it."""

    name: str
    max_sessions: int
    max_tenants: int
    sessions: int = 0
    tenants: int = 0
    ready: bool = True

    def fits(self, sessions: int) -> bool:
        return self.tenants < self.max_tenants and self.sessions + sessions <= self.max_sessions

    def with_tenant(self, sessions: int) -> CellRoom:
        return CellRoom(
            self.name,
            self.max_sessions,
            self.max_tenants,
            self.sessions + sessions,
            self.tenants + 1,
            self.ready,
        )


def best_fit(cells: Iterable[CellRoom], sessions: int) -> CellRoom | None:
    """The cell this tenant fills most tightly, Ready cells first; None when none has room."""
    candidates = [c for c in cells if c.fits(sessions)]
    if not candidates:
        return None
    # Least session room left after placing wins; ties go to fewer free tenant slots, then name,
    # so the same inputs always give the same cell.
    return min(
        candidates,
        key=lambda c: (
            not c.ready,
            c.max_sessions - c.sessions - sessions,
            c.max_tenants - c.tenants,
            _order(c.name),
        ),
    )


def next_cell_name(existing: Iterable[str]) -> str:
    """The lowest free name of the form cell-N, so two attempts always pick the same one."""
    taken = {int(m.group(1)) for name in existing if (m := _CELL_NAME.match(name))}
    n = 1
    while n in taken:
        n += 1
    return f"cell-{n}"


def _order(name: str) -> tuple[int, str]:
    m = _CELL_NAME.match(name)
    return (int(m.group(1)) if m else 1 << 30, name)


def place_all(
    demands: Iterable[int], max_sessions: int, max_tenants: int
) -> tuple[list[CellRoom], list[str]]:
    """Place tenants one by one, cloning cells as needed; returns the cells and each placement."""
    cells: dict[str, CellRoom] = {}
    placed: list[str] = []
    for sessions in demands:
        if sessions > max_sessions:
            raise ValueError(f"a tenant of {sessions} sessions exceeds a cell of {max_sessions}")
        chosen = best_fit(cells.values(), sessions)
        if chosen is None:
            chosen = CellRoom(next_cell_name(cells), max_sessions, max_tenants)
        cells[chosen.name] = chosen.with_tenant(sessions)
        placed.append(chosen.name)
    return list(cells.values()), placed
