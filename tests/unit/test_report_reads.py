"""Where reports are read from (api/reads.py): the replica while it answers, the primary
while it cannot be reached, and a busy replica is waited for, not abandoned."""

from __future__ import annotations

from typing import Any

from psycopg_pool import PoolTimeout

from api.reads import REPLICA_PROBE_SECONDS, ReportReads


class Runner:
    """A projection runner that answers as told and records how it was asked."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.asked: list[float | None] = []

    def wait_for(self, position: int, timeout: float, connect_timeout: float | None = None) -> bool:
        self.asked.append(connect_timeout)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)


def reads(replica_answers: list[Any]) -> tuple[ReportReads, Runner, Runner, object, object]:
    primary, replica = object(), object()
    primary_runner, replica_runner = Runner([True] * 10), Runner(replica_answers)
    made = ReportReads(primary, primary_runner, replica, replica_runner)  # type: ignore[arg-type]
    return made, primary_runner, replica_runner, primary, replica


def test_a_replica_that_cannot_be_reached_is_left_alone_and_the_primary_answers() -> None:
    made, primary_runner, replica_runner, primary, _ = reads([PoolTimeout("no connection")])
    assert made.wait(5, timeout=10) is primary
    assert replica_runner.asked == [REPLICA_PROBE_SECONDS]  # a short probe, not 10 s
    assert made.wait(6, timeout=10) is primary
    assert made.current() is primary
    assert replica_runner.asked == [REPLICA_PROBE_SECONDS]  # not tried again meanwhile
    assert len(primary_runner.asked) == 2  # current() reads the primary without waiting


def test_a_replica_that_answered_a_moment_ago_is_waited_for_when_busy() -> None:
    made, _, replica_runner, _, replica = reads([True, True, False])
    assert made.wait(5, timeout=10) is replica
    assert made.current() is replica
    # Behind (replication lag): a 503 for the caller, not the primary's answer.
    assert made.wait(7, timeout=10) is None
    # The first wait probed; later ones, the replica having answered, get the whole wait.
    assert replica_runner.asked == [REPLICA_PROBE_SECONDS, None, None]
