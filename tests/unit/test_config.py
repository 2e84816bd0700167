"""Settings helpers: what an error message may say about the configured URL."""

from __future__ import annotations

import pytest

from ledger.config import hide_password


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:hunter2@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=hunter2&sslmode=x",
            "postgresql://u@h/db?password=***&sslmode=x",
        ),
        ("host=h password=hunter2 dbname=x", "host=h password=*** dbname=x"),
        ("'mysql://u:hun@ter2@h/db'", "'mysql://u:***@h/db'"),
        ("failed for postgresql://a:hunter2@h: x@y", "failed for postgresql://a:***@h: x@y"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_a_password_is_hidden_wherever_a_message_holds_it(text: str, shown: str) -> None:
    assert hide_password(text) == shown
