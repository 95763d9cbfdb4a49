"""The delivery promise under faults, end to end: the agent as a process between the factory simulator
and mosquitto, broken on purpose, and every value the server produced accounted for at the receiver
(delivered, or inside a gap of its element). bench/fault_*.py run the same faults longer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from simulators import faults
from simulators.faults import Bed
from simulators.mosquitto import mosquitto_binary
from tests.helpers import unavailable

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def _needs_mosquitto() -> None:
    try:
        mosquitto_binary()
    except RuntimeError as e:
        unavailable(str(e))


def test_five_kills_at_random_moments_some_before_the_restart_connects_leave_nothing_unaccounted(
    tmp_path: Path,
) -> None:
    with Bed(tmp_path) as bed:
        report = faults.kills(bed, 5, random.Random(7))
    assert report.values > 200
    assert not report.missing, f"{report}: {report.missing[:5]}"
    assert report.reissued == 0, f"{report}: a value was stored twice under different ids"
    assert report.gaps >= 1


@pytest.mark.parametrize("offset", [-3.0, 3.0])
def test_a_device_clock_off_by_3_s_and_a_link_dropped_every_3_s_leave_nothing_unaccounted(
    tmp_path: Path, offset: float
) -> None:
    with Bed(tmp_path, clock_offset=offset, via_proxy=True) as bed:
        report = faults.link_drops(bed, every_s=3.0, duration_s=10.0)
    assert report.values > 200
    assert not report.missing, f"{report}: {report.missing[:5]}"
    assert report.gaps >= 3, f"{report}: every drop is a gap"
