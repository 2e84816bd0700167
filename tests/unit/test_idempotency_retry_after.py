"""`Retry-After` on a key still in progress: a second while its request is likely running,
then the time left before the claim is abandoned, at most 30 s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.idempotency import retry_after_seconds

CLAIMED = "2026-12-07T10:00:00.000000Z"
AT = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
ABANDONED = timedelta(seconds=180)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(0), 1),
        (timedelta(seconds=9.9), 1),  # a request may still be running
        (timedelta(seconds=10), 30),  # 170 s left: asks again within 30 s
        (timedelta(seconds=155), 25),
        (timedelta(seconds=168.2), 12),  # 11.8 s left: rounded up, never early
        (timedelta(seconds=179.5), 1),
        (timedelta(seconds=400), 1),  # abandoned already: the next try takes it
    ],
)
def test_retry_after_waits_for_the_claim_to_be_abandoned_once_its_request_is_gone(
    age: timedelta, expected: int
) -> None:
    assert retry_after_seconds(CLAIMED, ABANDONED, AT + age) == expected


def test_an_unreadable_claim_time_says_one_second() -> None:
    assert retry_after_seconds("yesterday", ABANDONED, AT) == 1
