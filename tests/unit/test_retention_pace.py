"""gateway/retention.py: the pruning loop's pace (pure)."""

from __future__ import annotations

import pytest

from gateway.retention import MIN_PAUSE, pause_after


def test_pruning_pace_keeps_to_its_share_of_the_time() -> None:
    assert pause_after(0.05, 10) == pytest.approx(0.45)  # 0.05 busy of every 0.5 s
    assert pause_after(0.05, 50) == pytest.approx(0.05)
    assert pause_after(0.05, 100) == MIN_PAUSE
    assert pause_after(0.05, 1000) == MIN_PAUSE
    assert pause_after(0.0, 10) == MIN_PAUSE
