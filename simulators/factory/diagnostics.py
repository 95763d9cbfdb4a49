"""Values for CNC01.Diagnostics: one variable per OPC UA built-in type, sweeping edge cases.

Even rounds carry an ordinary value, odd rounds the next edge case of that type, so every edge
case of a type shows up within 2 x (number of its edge cases) rounds: NaN, +INF and -INF of
Double and Float within the first six rounds, for example. Every variable changes every round
(Boolean toggles, LocalizedText cycles through ko-KR and en-US texts).
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
from asyncua import ua

from simulators.factory.catalogue import (
    DIAGNOSTICS_MACHINE_INDEX,
    NAMESPACE_INDEX,
    machine_name,
    machine_signals,
)

T = TypeVar("T")

# Stream id for the diagnostics Generator, far away from machine indices.
_DIAGNOSTICS_STREAM = 1_000_000

NAN = math.nan
INF = math.inf
F32_MAX = 3.4028234663852886e38
F32_MIN_NORMAL = 1.1754943508222875e-38
F32_MIN_SUBNORMAL = 1.401298464324817e-45

SBYTE_EDGES = (-128, 127, -1, 0)
BYTE_EDGES = (255, 0, 128)
INT16_EDGES = (-(2**15), 2**15 - 1, -1, 0)
UINT16_EDGES = (2**16 - 1, 0)
INT32_EDGES = (-(2**31), 2**31 - 1, -1, 0)
UINT32_EDGES = (2**32 - 1, 0, 2**31)
INT64_EDGES = (-(2**63), 2**63 - 1, 2**53 + 1, -(2**53 + 1))
UINT64_EDGES = (2**64 - 1, 2**53 + 1, 0, 2**63)
FLOAT_EDGES = (NAN, INF, -INF, F32_MAX, F32_MIN_NORMAL, F32_MIN_SUBNORMAL, -0.0)
DOUBLE_EDGES = (NAN, INF, -INF, sys.float_info.max, 5e-324, sys.float_info.min, -0.0)
STRING_EDGES = (
    "",
    "정상 가동 중 (작업자: 김민수)",
    "line 1\nline 2\t\"quoted\" \\ 'single' <tag> &amp;",
    "🏭 공장 ✓ Ünïcödé",
    "가" * 1000,
)
DATETIME_EDGES = (
    datetime(1601, 1, 1, tzinfo=UTC),  # OPC UA minimum, encoded as 0 ("no time")
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),  # OPC UA maximum
)
BYTESTRING_EDGES = (b"", b"\x00", bytes(range(256)))
LOCALIZED_TEXTS = (
    ua.LocalizedText("정상 운전", "ko-KR"),
    ua.LocalizedText("Normal operation", "en-US"),
    ua.LocalizedText("주축 과부하 경고", "ko-KR"),
    ua.LocalizedText("Spindle overload warning", "en-US"),
    ua.LocalizedText("", "ko-KR"),
)
STATUSCODE_EDGES = (
    ua.StatusCode(ua.StatusCodes.BadSensorFailure),
    ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue),
    ua.StatusCode(ua.StatusCodes.BadCommunicationError),
    ua.StatusCode(ua.StatusCodes.GoodClamped),
)
GUID_EDGES = (uuid.UUID(int=0), uuid.UUID(int=2**128 - 1))
NODEID_EDGES = (
    ua.NodeId(0, 0),
    ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime, 0),
    ua.NodeId(2**32 - 1, NAMESPACE_INDEX),
    ua.NodeId(uuid.UUID("6f1c2a9e-0b7d-4c1e-9a51-3d2f8e4b7c60"), NAMESPACE_INDEX),
    ua.NodeId(b"\x00\xffopaque", NAMESPACE_INDEX),
    ua.NodeId("a;b=c/한글 .x", NAMESPACE_INDEX),
)
# Harmonics 1x..8x of the spindle frequency: a healthy spindle is dominated by 1x.
SPECTRUM_SHAPE = (1.0, 0.45, 0.2, 0.12, 0.08, 0.05, 0.04, 0.03)
AXES = 6


class Diagnostics:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng((seed, _DIAGNOSTICS_STREAM))
        self.round = 0
        machine = machine_name(DIAGNOSTICS_MACHINE_INDEX)
        self._signal_ids = tuple(
            ua.NodeId(f"{machine}.{spec.name}", NAMESPACE_INDEX) for spec in machine_signals(DIAGNOSTICS_MACHINE_INDEX)
        )

    def step(self, now: datetime) -> dict[str, object]:
        """Values of one round, keyed by the variable names of the Diagnostics folder."""
        r = self.round
        self.round += 1
        rng = self.rng

        def pick(edges: Sequence[T], normal: T) -> T:
            return edges[(r // 2) % len(edges)] if r % 2 else normal

        spectrum = [round(float(a), 4) for a in 2.5 * np.array(SPECTRUM_SHAPE) * rng.lognormal(0, 0.1, 8)]
        return {
            "Boolean": r % 2 == 0,
            "SByte": pick(SBYTE_EDGES, int(rng.integers(-(2**7), 2**7))),
            "Byte": pick(BYTE_EDGES, int(rng.integers(0, 2**8))),
            "Int16": pick(INT16_EDGES, int(rng.integers(-(2**15), 2**15))),
            "UInt16": pick(UINT16_EDGES, int(rng.integers(0, 2**16))),
            "Int32": pick(INT32_EDGES, int(rng.integers(-(2**31), 2**31))),
            "UInt32": pick(UINT32_EDGES, int(rng.integers(0, 2**32))),
            "Int64": pick(INT64_EDGES, int(rng.integers(-(2**63), 2**63 - 1, dtype=np.int64, endpoint=True))),
            "UInt64": pick(UINT64_EDGES, int(rng.integers(0, 2**64 - 1, dtype=np.uint64, endpoint=True))),
            "Float": pick(FLOAT_EDGES, float(np.float32(rng.normal(25.0, 3.0)))),
            "Double": pick(DOUBLE_EDGES, float(rng.normal(1000.0, 250.0))),
            "String": pick(STRING_EDGES, f"LOT-{now:%Y%m%d}-{r:06d}"),
            "DateTime": pick(DATETIME_EDGES, now),
            "ByteString": pick(BYTESTRING_EDGES, rng.bytes(16)),
            "LocalizedText": LOCALIZED_TEXTS[r % len(LOCALIZED_TEXTS)],
            "StatusCode": pick(STATUSCODE_EDGES, ua.StatusCode(ua.StatusCodes.Good)),
            "Guid": pick(GUID_EDGES, uuid.UUID(bytes=rng.bytes(16), version=4)),
            "NodeId": pick(NODEID_EDGES, self._signal_ids[r // 2 % len(self._signal_ids)]),
            # A dropped-out sensor bin shows up as NaN inside the array.
            "DoubleArray": pick(([NAN, *spectrum[1:]],), spectrum),
            "Int32Array": pick(([], [-(2**31), 2**31 - 1], [0]), [int(v) for v in rng.integers(-15, 16, AXES)]),
        }
