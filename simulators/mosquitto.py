"""A private mosquitto on 127.0.0.1 for tests, benchmarks and demos: start, stop, kill, suspend, restart.

with MosquittoBroker(tmp_path / "broker") as broker:
    ... broker.port ...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from simulators.ports import free_port

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class MosquittoUnavailable(RuntimeError):
    """The mosquitto binary is not installed."""


def mosquitto_binary() -> str:
    """The mosquitto executable; raises MosquittoUnavailable saying how to install it."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if found is None:
        raise MosquittoUnavailable("mosquitto not found: install it with apt-get install -y mosquitto")
    return found


class MosquittoBroker:
    """mosquitto on 127.0.0.1, restartable on the same port with its persistence kept.

    `extra_conf` lines go right after the listener line, so listener options (certfile, ...)
    apply to it; `allow_anonymous=False` with a `password_file` line makes an authenticating broker.
    """

    def __init__(
        self,
        tmp_path: Path,
        port: int | None = None,
        persistence: bool = True,
        *,
        allow_anonymous: bool = True,
        extra_conf: Sequence[str] = (),
    ) -> None:
        self.binary = mosquitto_binary()
        self.dir = tmp_path
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *extra_conf,
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            # Started as root, mosquitto would drop to user "mosquitto" and lose access to tmp_path.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            # The default (1000 per client) would silently drop what a slow test subscriber missed.
            "max_queued_messages 1000000",
        ]
        if persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.dir}/",
                # Saved on SIGTERM anyway; the interval bounds what a SIGKILL loses.
                "autosave_interval 1",
            ]
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> MosquittoBroker:
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._accepts_connections():
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto did not listen on {self.port} within {_START_TIMEOUT} s:\n{self.log()}")
            # The pause between probes, cut short if mosquitto exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.02)
        return self

    def stop(self) -> None:
        """SIGTERM and wait, so mosquitto saves its persistence and frees the port."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a suspended broker would never act on SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: a broker crash. Clients see their connections reset."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def suspend(self) -> None:
        """SIGSTOP: connections stay open but nothing is acknowledged until `resume()` or `kill()`."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False
