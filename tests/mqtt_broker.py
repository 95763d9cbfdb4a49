"""mosquitto for tests: simulators/mosquitto.py, skipped without the binary (failed under CI=true)."""

from __future__ import annotations

from typing import Any

from simulators import mosquitto
from simulators.mosquitto import Subscriber
from tests.helpers import unavailable

__all__ = ["MosquittoBroker", "Subscriber"]


class MosquittoBroker(mosquitto.MosquittoBroker):
    """The simulators' broker; without mosquitto installed the test is skipped (failed under CI=true)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except mosquitto.MosquittoUnavailable as e:
            unavailable(str(e))
