"""Placement: best fit on sessions and tenant count, deterministic cell names. No I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lianluo.operator.placement import CellRoom, best_fit, next_cell_name, place_all


def test_the_tightest_cell_with_room_wins() -> None:
    cells = [CellRoom("cell-1", 1000, 10, 200, 1), CellRoom("cell-2", 1000, 10, 850, 4)]
    assert best_fit(cells, 100) == cells[1]
    assert best_fit(cells, 200) == cells[0]  # 850 + 200 would pass the bound


def test_a_cell_with_all_its_tenants_takes_no_more() -> None:
    cells = [CellRoom("cell-1", 1000, 2, 10, 2), CellRoom("cell-2", 1000, 5, 900, 1)]
    assert best_fit(cells, 50) == cells[1]
    assert best_fit(cells, 500) is None


def test_ready_cells_come_before_cells_still_starting() -> None:
    cells = [CellRoom("cell-1", 1000, 5, 900, 1, ready=False), CellRoom("cell-2", 1000, 5, 0, 0)]
    assert best_fit(cells, 50) == cells[1]


def test_new_cells_take_the_lowest_free_number() -> None:
    assert next_cell_name([]) == "cell-1"
    assert next_cell_name(["cell-1", "cell-3", "other", "cell-x"]) == "cell-2"
    assert next_cell_name(["cell-2", "cell-1"]) == "cell-3"


def test_a_tenant_larger_than_a_cell_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        place_all([1001], 1000, 10)


@given(st.lists(st.integers(min_value=1, max_value=1000), max_size=200))
def test_no_cell_ever_goes_past_its_bounds(demands: list[int]) -> None:
    cells, placed = place_all(demands, 1000, 7)
    assert len(placed) == len(demands)
    for cell in cells:
        assert cell.sessions <= 1000
        assert cell.tenants <= 7
    assert sum(c.sessions for c in cells) == sum(demands)
    # Best fit never needs more than twice the ideal number of cells (plus one).
    ideal = max(-(-sum(demands) // 1000), -(-len(demands) // 7))
    assert len(cells) <= 2 * ideal + 1


@given(st.lists(st.integers(min_value=1, max_value=1000), max_size=50))
def test_the_same_tenants_always_give_the_same_placement(demands: list[int]) -> None:
    assert place_all(demands, 1000, 7)[1] == place_all(demands, 1000, 7)[1]
