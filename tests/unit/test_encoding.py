"""The ledger's composed JSON transcoder writes exactly the bytes of the library's.

Stored event states are the chain's input: `ComposedJSONTranscoder.encode` must give the
bytes `eventsourcing.persistence.JSONTranscoder.encode` gives, for every state, or leave
the state to it. Generated states mix what the ledger stores (text in any script, control
characters, big and negative integers, Decimals of every shape, aware and naive datetimes,
UUIDs, nested dicts and lists) with what only the library's encoder handles (floats,
tuples, non-string keys, subclasses of str and int, unregistered types). The stored
events of a whole demo firm are checked against the library in
tests/integration/test_demo.py.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Transcoding,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.encoding import ComposedJSONTranscoder


def _registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY = _registered(JSONTranscoder())
COMPOSED = _registered(ComposedJSONTranscoder())


class _Label(str):
    pass


class _Count(enum.IntEnum):
    ONE = 1


_zones = st.none() | st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60)
)
_leaves = st.one_of(
    st.text(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.none(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(Decimal, st.from_regex(r"\A-?[0-9]{1,20}(\.[0-9]{0,8})?(E[+-]?[0-9]{1,3})?\Z")),
    st.datetimes(timezones=_zones),
    st.uuids(),
)
_unusual = st.one_of(
    st.floats(),
    st.tuples(st.integers()),
    st.builds(_Label, st.text(max_size=5)),
    st.just(_Count.ONE),
    st.dates(),
)
_values = st.recursive(
    _leaves | _unusual,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)
_states = st.dictionaries(st.text(max_size=12), _values, max_size=8) | st.dictionaries(
    st.integers(0, 3) | st.text(max_size=3), _leaves, max_size=3
)


def _outcome(transcoder: JSONTranscoder, state: Any) -> bytes | type[BaseException]:
    try:
        return transcoder.encode(state)
    except Exception as error:  # the library's refusal must be the composed one's too
        return type(error)


@settings(max_examples=600, deadline=None)
@given(state=_states)
def test_composed_bytes_are_the_library_bytes(state: dict[Any, Any]) -> None:
    assert _outcome(COMPOSED, state) == _outcome(LIBRARY, state)


def test_a_trade_event_state_is_composed_not_handed_over() -> None:
    state = {
        "timestamp": datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC),
        "trade": {
            "trade_id": "T-1",
            "volume": Decimal("1.5"),
            "profit": Decimal("-120.50"),
            "opened_at": datetime(2026, 3, 2, 9, 0, tzinfo=timezone(timedelta(hours=1))),
        },
        "board": {"status": "active", "balance": Decimal("99879.50"), "trading_days": 1},
        "breach": None,
        "passed": False,
        "ids": [UUID(int=7)],
        "actor": "bridge-ü\n",
    }
    composed = COMPOSED.encode(state)
    assert composed == LIBRARY.encode(state)
    assert LIBRARY.decode(composed) == state


def test_a_transcoder_with_other_registrations_leaves_encoding_to_the_library() -> None:
    class DateAsISO(Transcoding):
        type = date
        name = "date_iso"

        def encode(self, obj: date) -> str:
            return obj.isoformat()

        def decode(self, data: str) -> date:
            return date.fromisoformat(data)

    class DecimalAsText(Transcoding):  # the same type under another name
        type = Decimal
        name = "decimal_text"

        def encode(self, obj: Decimal) -> str:
            return str(obj)

        def decode(self, data: str) -> Decimal:
            return Decimal(data)

    states = [
        (DateAsISO(), {"on": date(2026, 3, 2), "amount": Decimal("1.00")}),
        (DecimalAsText(), {"amount": Decimal("1.00")}),
    ]
    for extra, state in states:
        library, composed = _registered(JSONTranscoder()), _registered(ComposedJSONTranscoder())
        library.register(extra)
        composed.register(extra)
        assert composed.encode(state) == library.encode(state)
        assert extra.name.encode() in composed.encode(state)


@pytest.mark.parametrize("value", [1.5, float("nan"), (1, 2), _Label("x"), _Count.ONE])
def test_values_json_handles_its_own_way_go_to_the_library(value: Any) -> None:
    state = {"value": value, "amount": Decimal("2.50")}
    assert COMPOSED.encode(state) == LIBRARY.encode(state)


def test_nesting_too_deep_to_compose_goes_to_the_library() -> None:
    deep: Any = {"leaf": Decimal("1.00")}
    for _ in range(3000):
        deep = {"next": deep}
    assert COMPOSED.encode(deep) == LIBRARY.encode(deep)
