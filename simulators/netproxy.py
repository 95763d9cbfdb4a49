"""A TCP proxy on 127.0.0.1 that adds latency or black-holes a link, for tests and benchmarks.

No kernel traffic shaping needed: every chunk read from one side is written to the other after
`delay` seconds (each direction, so the round trip grows by 2 × delay), pipelined, so throughput
is not capped by the delay. `blackhole = True` keeps connections open but silently discards
everything in both directions, as a cable pulled behind a switch does; `reset()` closes them all.

    async with TcpProxy("127.0.0.1", broker_port, delay=0.05) as proxy:   # +100 ms RTT
        ... connect to proxy.port ...

`ProxyThread` runs one in a thread of its own, for synchronous tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0, delay: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.blackhole = False
        self._listen_port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        self._listen_port = self.port  # a restart listens on the same port
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reset(self) -> None:
        """Close every proxied connection now (both sides see the connection drop)."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self.connections += 1
        self._writers |= {client_w, server_w}
        for reader, read_w, writer in ((client_r, client_w, server_w), (server_r, server_w, client_w)):
            task = asyncio.create_task(self._pump(reader, read_w.get_extra_info("socket"), writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, sock: socket.socket, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while data := await reader.read(65536):
                if _QUICKACK is not None:
                    # As the agent's MQTT sink does: without it, a peer with Nagle on (mosquitto) and
                    # our delayed ACKs stall every exchange by 40 ms, which no real link would add.
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                if not self.blackhole:
                    queue.put_nowait((loop.time() + self.delay, data))
        except (ConnectionError, OSError):
            pass
        finally:
            await queue.put((0.0, b""))  # end of stream, after what is queued
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not self.blackhole:
                    writer.write(data)
                    await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()


class ProxyThread:
    """A TcpProxy on its own event loop in a daemon thread; settings may be changed from any thread."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0, delay: float = 0.0) -> None:
        self.proxy = TcpProxy(target_host, target_port, port=port, delay=delay)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Stop listening and drop every connection (a link cut for good); stopping twice is harmless."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def set_blackhole(self, on: bool) -> None:
        self._loop.call_soon_threadsafe(setattr, self.proxy, "blackhole", on)

    def reset(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.reset)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
