"""Report CSV cells: text that a spreadsheet would run as a formula is written as text."""

from __future__ import annotations

import pytest

from projections.payouts import _cell


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-x", "'-x"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("-5.00", "-5.00"),  # a number stays a number
        ("-1+SUM(1,2)", "'-1+SUM(1,2)"),  # starts like a number, is a formula
        ("+1-cmd|' -C calc'!A0", "'+1-cmd|' -C calc'!A0"),
        ("+3", "+3"),
        ("trader-1", "trader-1"),
        ("540.00", "540.00"),
        (7, 7),
    ],
)
def test_a_cell_that_would_start_a_formula_gets_an_apostrophe(
    value: object, written: object
) -> None:
    assert _cell(value) == written
