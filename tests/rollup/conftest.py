"""Every rollup test folds its steps in several reads and sends folded events ahead of the step's
end, as large steps do in production (worker/rollup_share.py): the tests' steps are small."""

from __future__ import annotations

import pytest

from worker import rollup_share


@pytest.fixture(autouse=True)
def small_reads_and_early_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollup_share, "_READ_CHUNK", 7)
    monkeypatch.setattr(rollup_share, "_EVENTS_PER_INSERT", 20)
