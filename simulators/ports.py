"""Free TCP ports on 127.0.0.1 for the simulators, tests and benchmarks.

A port is picked below the kernel's ephemeral range, not by binding port 0: a port from the ephemeral
range can be taken as the local port of any outgoing connection (an agent reconnecting, a broker client)
in the moment between this check and the server's bind, and a restarted server finds its own port in
use. Below the range only another server binding that very port can take it.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_LOWEST = 10_000
_given: set[int] = set()
_lock = threading.Lock()
_rng = random.SystemRandom()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux's default if unreadable)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing is bound to right now, outside the ephemeral range, and not given out before by this
    process (another process may still take it before you bind it, but no outgoing connection will)."""
    low, high = ephemeral_range()
    ranges = [r for r in ((_LOWEST, low - 1), (high + 1, 65535)) if r[1] - r[0] >= 1000]
    with _lock:
        for _ in range(200):
            if not ranges:
                break
            first, last = _rng.choice(ranges)
            port = _rng.randint(first, last)
            if port not in _given and _bindable(port):
                _given.add(port)
                return port
    with socket.socket() as s:  # no room outside the ephemeral range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
