"""Aggregate ids derived from external keys: the same key always names the same aggregate,
and keys of different kinds never collide."""

from __future__ import annotations

from uuid import UUID

from domain.ids import first_account_id, next_account_id, program_id_to_uuid, trader_id_to_uuid


def test_the_same_external_key_always_gives_the_same_id() -> None:
    assert program_id_to_uuid("classic-100k") == program_id_to_uuid("classic-100k")
    assert trader_id_to_uuid("trader-1") == trader_id_to_uuid("trader-1")
    assert first_account_id("pi_123") == first_account_id("pi_123")


def test_ids_are_name_based_uuid5() -> None:
    for value in (
        program_id_to_uuid("classic-100k"),
        trader_id_to_uuid("trader-1"),
        first_account_id("pi_123"),
        next_account_id(UUID("00000000-0000-4000-8000-000000000001")),
    ):
        assert value.version == 5


def test_the_same_string_names_different_aggregates_of_different_kinds() -> None:
    ids = {program_id_to_uuid("x"), trader_id_to_uuid("x"), first_account_id("x")}
    assert len(ids) == 3


def test_different_keys_give_different_ids() -> None:
    assert program_id_to_uuid("classic-100k") != program_id_to_uuid("classic-200k")
    assert first_account_id("pi_1") != first_account_id("pi_2")


def test_each_phase_has_its_own_next_account() -> None:
    phase_1 = first_account_id("pi_123")
    phase_2 = next_account_id(phase_1)
    funded = next_account_id(phase_2)
    assert len({phase_1, phase_2, funded}) == 3
    assert next_account_id(phase_1) == phase_2
