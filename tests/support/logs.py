"""What the server logged of its unsuccessful replies (``starlette_cometd.errors``), as a test
captured it with pytest's ``caplog``."""

from __future__ import annotations

import logging

import pytest


def refusal_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "starlette_cometd.errors"]


def refusals_logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str | None, ...]]:
    """``(client_id, channel, error)`` of each refusal logged, as its fields say."""
    return [
        (r.client_id, r.channel, r.error)  # type: ignore[attr-defined]
        for r in refusal_records(caplog)
    ]
