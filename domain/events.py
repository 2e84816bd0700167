"""What several event classes share."""

from __future__ import annotations

from typing import Any


class RecordsActor:
    """Mixed into events whose version 2 added `actor`, the token subject that caused them.

    Version 1 events, stored before actors were recorded, are read through the library's
    upcasting (`class_version` and `upcast_v1_v2`) with an unknown actor.
    """

    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["actor"] = None
