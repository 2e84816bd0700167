"""The event store's JSON transcoder, composing its text instead of calling json's encoder.

eventsourcing's `JSONTranscoder` encodes an event's state with `json.JSONEncoder` and a
`default` hook: every Decimal, datetime and UUID is a call back into Python that builds a
`{"_type_": ..., "_data_": ...}` dict for the C encoder to encode in turn. A trade's event
holds fourteen such values (the trade's amounts and times, the board's money), and that was
a third of encoding it. `ComposedJSONTranscoder.encode` writes the same text directly:
the C string escaper for strings, the tagged form for the three registered types.

Stored bytes are the chain's input, so they must not change by a byte: anything this does
not compose exactly as json would (floats, tuples, non-string keys, subclasses, types other
than the library's three) goes to the library's encoder whole. tests/unit/test_encoding.py
holds the two to the same bytes over generated states and every kind of ledger event.
Decoding is the library's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Transcoding,
    UUIDAsHex,
)

_DECIMAL = '{"_type_":"decimal_str","_data_":'
_DATETIME = '{"_type_":"datetime_iso","_data_":'
_UUID = '{"_type_":"uuid_hex","_data_":"'
# The transcodings whose text is composed here, as the library registers them.
_STANDARD = {Decimal: DecimalAsStr, datetime: DatetimeAsISO, UUID: UUIDAsHex}


class _NotComposed(Exception):
    """A value this transcoder leaves to json's encoder."""


class ComposedJSONTranscoder(JSONTranscoder):
    _composes: bool | None = None  # settled at the first encode after a registration

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        self._composes = None

    def encode(self, obj: Any) -> bytes:
        if self._composes is None:
            self._composes = self._composing()
        if not self._composes:
            return super().encode(obj)
        parts: list[str] = []
        try:
            _compose(obj, parts.append)
        except (_NotComposed, RecursionError):  # deep nesting or a cycle: json's way
            return super().encode(obj)
        return "".join(parts).encode("utf8")

    def _composing(self) -> bool:
        """Composes only while exactly the library's three transcodings are registered."""
        return len(self.types) == len(_STANDARD) and all(
            type(self.types.get(kind)) is transcoding for kind, transcoding in _STANDARD.items()
        )


def _compose(value: Any, put: Callable[[str], Any]) -> None:
    kind = type(value)
    if kind is str:
        put(encode_basestring(value))
    elif kind is dict:
        put("{")
        first = True
        for key, item in value.items():
            if type(key) is not str:
                raise _NotComposed
            if first:
                first = False
            else:
                put(",")
            put(encode_basestring(key))
            put(":")
            _compose(item, put)
        put("}")
    elif kind is Decimal:
        put(_DECIMAL)
        put(encode_basestring(str(value)))
        put("}")
    elif kind is datetime:
        put(_DATETIME)
        put(encode_basestring(value.isoformat()))
        put("}")
    elif value is None:
        put("null")
    elif value is True:
        put("true")
    elif value is False:
        put("false")
    elif kind is int:
        put(int.__repr__(value))
    elif kind is list:
        put("[")
        first = True
        for item in value:
            if first:
                first = False
            else:
                put(",")
            _compose(item, put)
        put("]")
    elif kind is UUID:
        put(_UUID)
        put(value.hex)
        put('"}')
    else:
        raise _NotComposed
