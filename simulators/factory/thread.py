"""Run the factory simulator on a background thread, for synchronous tests and tools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from simulators.factory.plant import Plant
from simulators.factory.record import ValueRecorder
from simulators.factory.server import FactorySimulator


class FactoryThread:
    """A FactorySimulator on its own thread and event loop.

    stop() and start() may alternate any number of times; every start serves the same port and
    continues the same plant (counters, alarms) and the same record of written values, as a
    machine's OPC UA server restarting while the machine keeps running would.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        machines: int = 3,
        period: float = 0.5,
        seed: int = 1,
        alarm_every: int = 0,
        record: str | Path | None = None,
        history: int = 1000,
        start_timeout: float = 60.0,
        clock_offset: float = 0.0,
        security: Sequence[str] = ("NoSecurity",),
        certificate_dir: Path | None = None,
        users: Mapping[str, str] | None = None,
        user_certificates: Sequence[bytes] | None = None,
        numeric_ids: int | None = None,
    ) -> None:
        self.numeric_ids = numeric_ids  # FactorySimulator's; may be changed between a stop and a start
        self.clock_offset = clock_offset
        self.security = tuple(security)
        self.certificate_dir = certificate_dir
        self.users = users
        self.user_certificates = user_certificates
        self.host = host
        self.port = port
        self.period = period
        self.start_timeout = start_timeout
        self.plant = Plant(machines, seed, alarm_every)
        self.recorder = ValueRecorder(history, record)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._simulator: FactorySimulator | None = None
        self._error: BaseException | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start serving; returns once clients can connect."""
        if self._thread is not None:
            raise RuntimeError("factory simulator already running")
        self._error = None
        ready = threading.Event()
        thread = threading.Thread(target=self._main, args=(ready,), name=f"factory-{self.port}", daemon=True)
        thread.start()
        if not ready.wait(self.start_timeout):
            raise TimeoutError(f"factory simulator on {self.endpoint} not ready after {self.start_timeout} s")
        if self._error is not None:
            thread.join()
            raise RuntimeError(f"factory simulator on {self.endpoint} failed to start") from self._error
        self._thread = thread
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and close all connections; raises if the update loop had failed."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"factory simulator on {self.endpoint} did not stop within {timeout} s")
        self._thread = self._loop = self._stop = self._simulator = None
        if self._error is not None:
            raise RuntimeError(f"factory simulator on {self.endpoint} failed while running") from self._error

    def invalidate_sessions(self, timeout: float = 10.0) -> int:
        """FactorySimulator.invalidate_sessions, from the calling thread."""
        loop, simulator = self._loop, self._simulator
        if loop is None or simulator is None:
            raise RuntimeError("factory simulator not running")
        return asyncio.run_coroutine_threadsafe(simulator.invalidate_sessions(), loop).result(timeout)

    def reset_alarm(self, machine: str, timeout: float = 10.0) -> bool:
        """Same as calling the ResetAlarm method of `machine`; True if an alarm was active."""
        loop, simulator = self._loop, self._simulator
        if loop is None or simulator is None:
            raise RuntimeError("factory simulator not running")
        return asyncio.run_coroutine_threadsafe(simulator.reset_alarm(machine), loop).result(timeout)

    def address(self, node_id: str) -> str:
        """FactorySimulator.address: the node id a catalogue signal is served under now."""
        simulator = self._simulator
        if simulator is None:
            raise RuntimeError("factory simulator not running")
        return simulator.address(node_id)

    def remove(self, node_id: str, timeout: float = 10.0) -> None:
        """FactorySimulator.remove (delete a signal's node), from the calling thread."""
        loop, simulator = self._loop, self._simulator
        if loop is None or simulator is None:
            raise RuntimeError("factory simulator not running")
        asyncio.run_coroutine_threadsafe(simulator.remove(node_id), loop).result(timeout)

    def move(self, node_id: str, new_id: int, timeout: float = 10.0) -> None:
        """FactorySimulator.move (another numeric node id for a signal, while serving), from the calling thread."""
        loop, simulator = self._loop, self._simulator
        if loop is None or simulator is None:
            raise RuntimeError("factory simulator not running")
        asyncio.run_coroutine_threadsafe(simulator.move(node_id, new_id), loop).result(timeout)

    def retype(self, node_id: str, timeout: float = 10.0) -> None:
        """FactorySimulator.retype (serve a signal as a String from now on), from the calling thread."""
        loop, simulator = self._loop, self._simulator
        if loop is None or simulator is None:
            raise RuntimeError("factory simulator not running")
        asyncio.run_coroutine_threadsafe(simulator.retype(node_id), loop).result(timeout)

    def read(self, node_id: str, timeout: float = 10.0) -> object:
        """FactorySimulator.read (the node's current value), from the calling thread."""
        loop, simulator = self._loop, self._simulator
        if loop is None or simulator is None:
            raise RuntimeError("factory simulator not running")
        return asyncio.run_coroutine_threadsafe(simulator.read(node_id), loop).result(timeout)

    def written(self, node_id: str) -> list[tuple[datetime, object]]:
        """(source time, value) pairs written to `node_id` (e.g. "ns=2;s=CNC01.State"), oldest first."""
        return self.recorder.written(node_id)

    def _main(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # reported to the owning thread by start() or stop()
            self._error = exc
        finally:
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        simulator = FactorySimulator(
            self.host,
            self.port,
            period=self.period,
            plant=self.plant,
            recorder=self.recorder,
            clock_offset=self.clock_offset,
            security=self.security,
            certificate_dir=self.certificate_dir,
            users=self.users,
            user_certificates=self.user_certificates,
            numeric_ids=self.numeric_ids,
        )
        stop = asyncio.Event()
        await simulator.start()
        self._loop, self._stop, self._simulator = asyncio.get_running_loop(), stop, simulator
        ready.set()
        try:
            await simulator.serve(stop)
        finally:
            await simulator.stop()
