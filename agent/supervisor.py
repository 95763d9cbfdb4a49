"""Supervision: every long-running part of the agent is a named component, and none can die unseen.

A component is a coroutine function that runs until cancelled (an OPC UA source, a forwarder, a
sink's connection, the heartbeat). If it raises, or returns, the supervisor logs it with its
traceback, reports it (the agent writes a status record), and starts it again after a backoff
delay. While any component is waiting to be restarted the agent is "degraded". If one
component fails `max_failures` times within `window_s`, restarting is not helping: `wait()`
raises `ComponentFailed`, and the agent exits non-zero so that its service manager starts a
fresh process.

Cancellation always propagates: a component's CancelledError is never counted as a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Report = Callable[[str, str, str], Awaitable[None]]
"""(component, kind, message): kind is "component-failed", "component-restarted" or "component-gave-up"."""


class ComponentFailed(Exception):
    """A component failed too often; the process should end and be restarted from outside."""

    def __init__(self, name: str, failures: int, window_s: float, last: str) -> None:
        super().__init__(f"{name} failed {failures} times within {window_s:g} s; last: {last}")
        self.name = name


@dataclass
class _Component:
    name: str
    run: Callable[[], Awaitable[None]]
    task: asyncio.Task[None] | None = None
    failures: deque[float] = field(default_factory=deque)  # loop times of recent failures


class Supervisor:
    def __init__(
        self,
        *,
        delays: Callable[[], Iterator[float]],
        max_failures: int,
        window_s: float,
        report: Report,
    ) -> None:
        self._delays = delays
        self._max_failures = max_failures
        self._window_s = window_s
        self._report = report
        self._components: dict[str, _Component] = {}
        self._fatal: ComponentFailed | None = None
        self._changed = asyncio.Event()
        self.down: set[str] = set()

    @property
    def degraded(self) -> bool:
        return bool(self.down)

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run()` as component `name`, kept running until `stop(name)`."""
        if name in self._components:
            raise ValueError(f"component {name!r} is already running")
        c = _Component(name, run)
        c.task = asyncio.create_task(self._keep(c), name=name)
        self._components[name] = c

    async def wait(self, stop: asyncio.Event) -> None:
        """Return when `stop` is set; raise ComponentFailed when a component gave up."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._changed.clear()
                if self._fatal is not None:
                    raise self._fatal
                changed = asyncio.create_task(self._changed.wait())
                try:
                    await asyncio.wait({stopping, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
            if self._fatal is not None:
                raise self._fatal
        finally:
            stopping.cancel()

    async def stop(self, *names: str) -> None:
        """Cancel these components (none if none are named) and wait until they have ended."""
        chosen = [self._components.pop(n) for n in names if n in self._components]
        for c in chosen:
            if c.task is not None:
                c.task.cancel()
        await asyncio.gather(*(c.task for c in chosen if c.task is not None), return_exceptions=True)
        for c in chosen:
            self.down.discard(c.name)

    async def stop_all(self) -> None:
        """Cancel every component and wait until they have ended."""
        await self.stop(*self._components)

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self._components if n.startswith(prefix)]

    async def _keep(self, c: _Component) -> None:
        loop = asyncio.get_running_loop()
        delays: Iterator[float] | None = None
        while True:
            started = loop.time()
            try:
                await c.run()
                why = "ended by itself (a component must run until cancelled)"
                exc: BaseException | None = None
            except asyncio.CancelledError:
                raise
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
                exc = e
            now = loop.time()
            if delays is None or now - started > self._window_s:
                delays = self._delays()  # it ran well for a while: start the backoff over
            c.failures.append(now)
            while c.failures and now - c.failures[0] > self._window_s:
                c.failures.popleft()
            self.down.add(c.name)
            self._changed.set()
            if len(c.failures) >= self._max_failures:
                log.critical(
                    "%s failed %d times within %g s, giving up: %s",
                    c.name,
                    len(c.failures),
                    self._window_s,
                    why,
                    exc_info=exc,
                )
                await self._safe_report(c.name, "component-gave-up", why)
                self._fatal = ComponentFailed(c.name, len(c.failures), self._window_s, why)
                self._changed.set()
                return
            delay = next(delays)
            log.error("%s failed, restarting in %.1f s: %s", c.name, delay, why, exc_info=exc)
            await self._safe_report(c.name, "component-failed", f"{why}; restarting in {delay:.1f} s")
            await asyncio.sleep(delay)
            self.down.discard(c.name)
            self._changed.set()
            log.info("%s restarted", c.name)
            await self._safe_report(c.name, "component-restarted", f"restarted after {len(c.failures)} failure(s)")

    async def _safe_report(self, name: str, kind: str, message: str) -> None:
        # Reporting goes through the buffer, which may be the very thing that failed (a full disk):
        # a report that cannot be written must not stop the restart.
        try:
            await self._report(name, kind, message)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("could not record that %s %s: %s", name, kind.removeprefix("component-"), e)
