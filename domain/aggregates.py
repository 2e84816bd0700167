"""The Program and Trader aggregates."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate

from domain.ids import program_id_to_uuid, trader_id_to_uuid
from domain.program import ProgramDefinition


class Program(Aggregate):
    """A published rule set. Each (re)definition is a new version; accounts pin theirs."""

    class Defined(Aggregate.Created):
        definition: dict[str, Any]

    class Revised(Aggregate.Event):
        definition: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Program)
            aggregate.definition = ProgramDefinition.parse(self.definition)

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = ProgramDefinition.parse(definition)

    @classmethod
    def define(cls, definition: ProgramDefinition) -> Program:
        return cls._create(
            cls.Defined,
            id=program_id_to_uuid(definition.program_id),
            definition=definition.to_dict(),
        )

    def revise(self, definition: ProgramDefinition) -> bool:
        """Record a new version; False (nothing recorded) when the definition is unchanged."""
        if definition.program_id != self.definition.program_id:
            raise ValueError("a program's id cannot change")
        if definition.to_dict() == self.definition.to_dict():
            return False
        self.trigger_event(self.Revised, definition=definition.to_dict())
        return True


class Trader(Aggregate):
    """A trader as the ledger knows them: registered on their first purchase or payment."""

    class Registered(Aggregate.Created):
        trader_id: str

    def __init__(self, trader_id: str) -> None:
        self.trader_id = trader_id
        self.status = "active"

    @classmethod
    def register(cls, trader_id: str) -> Trader:
        return cls._create(cls.Registered, id=trader_id_to_uuid(trader_id), trader_id=trader_id)
