"""paho-mqtt's socket driven by the asyncio event loop (the aiomqtt pattern).

paho's socket is registered with the loop (add_reader/add_writer), so all network I/O and every
paho callback run on the loop's own thread, except the blocking TCP/TLS connect, which the sink
runs in a worker thread. Measured against paho's loop_start() thread (2-core gateway class,
mosquitto 2.0.11 on loopback, send() of 20-200 messages awaiting every PUBACK): 1 KB payloads
16-18k msg/s at 51-61 us CPU per message instead of 8.3-9.2k at 111-129 us; 64 KB payloads
6.2-7.5k msg/s at 115-159 us instead of 4.1-4.5k at 217-244 us. Two threads on two cores mostly
fight over the GIL. Owning the read callback also lets us ask for an immediate TCP ACK after each
read: against mosquitto's default (Nagle on) a client that delays its ACKs stalls 40 ms on every
run of PUBACKs; loop_start() fell to about 500 msg/s for 20-message sends where this keeps 17k.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVarTuple, cast

from paho.mqtt.client import Client

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

_Ts = TypeVarTuple("_Ts")
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class SocketBridge:
    """Registers the sockets of paho clients with one event loop. `current(client)` says whether
    a client is still the one in use: sockets of abandoned clients are closed, not served."""

    def __init__(self, loop: asyncio.AbstractEventLoop, current: Callable[[Client], bool]) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._current = current

    def install(self, client: Client) -> None:
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write

    def close(self, client: Client) -> None:
        """Unregister and close `client`'s socket, if it has one; the client is not served again.

        paho keeps its reference to the closed socket and reports it once more when the client is
        garbage-collected (`__del__`): by then nothing of it may reach the loop.
        """
        client.on_socket_open = None
        client.on_socket_close = None
        client.on_socket_register_write = None
        client.on_socket_unregister_write = None
        sock = client.socket()
        if sock is not None:
            self._detach(cast(socket.socket, sock))
            sock.close()

    def _on_socket_open(self, client: Client, userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._attach, client, cast(socket.socket, sock))

    def _on_socket_close(self, client: Client, userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._detach, cast(socket.socket, sock))

    def _on_socket_register_write(self, client: Client, userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._want_write, client, cast(socket.socket, sock))

    def _on_socket_unregister_write(self, client: Client, userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._stop_writing, cast(socket.socket, sock))

    def _in_loop(self, fn: Callable[[*_Ts], None], *args: *_Ts) -> None:
        """Run `fn` on the loop thread: paho calls the socket callbacks from connect() too,
        which runs in a worker thread."""
        if threading.get_ident() == self._thread:
            fn(*args)
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The loop closed while an abandoned connect() was still running: nothing to do.
            return

    def _attach(self, client: Client, sock: socket.socket) -> None:
        if not self._current(client):
            sock.close()  # the attempt was abandoned while connect() ran
            return
        self._loop.add_reader(sock, self._on_readable, client, sock)

    def _detach(self, sock: socket.socket) -> None:
        if sock.fileno() == -1:
            return  # closed already: it was unregistered before
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _want_write(self, client: Client, sock: socket.socket) -> None:
        if self._current(client) and client.socket() is sock:
            self._loop.add_writer(sock, client.loop_write)

    def _stop_writing(self, sock: socket.socket) -> None:
        self._loop.remove_writer(sock)

    def _on_readable(self, client: Client, sock: socket.socket) -> None:
        client.loop_read()
        # TLS may hold decrypted packets that the selector cannot see.
        while client.socket() is sock and isinstance(sock, ssl.SSLSocket) and sock.pending():
            client.loop_read()
        if _QUICKACK is not None and client.socket() is sock:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
