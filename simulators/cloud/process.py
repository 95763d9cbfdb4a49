"""`python -m simulators.cloud` as a child process on 127.0.0.1, for tests, benchmarks and demos.

with CloudReceiver(tmp_path / "cloud", tokens=["secret"]) as cloud:
    ... cloud.url, cloud.db, cloud.set_faults(throttle_next=2, retry_after=3) ...

Tokens reach the process through a 0600 file, never its command line; so does a PostgreSQL
`db` DSN's password (through the PGPASSWORD environment variable).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulators.cloud.store import POSTGRESQL_SCHEMES
from simulators.ports import free_port
from simulators.procs import stop_process

ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
# Straight to 127.0.0.1 whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CloudReceiver:
    """The receiver as a real process: start, stop (SIGTERM), kill (SIGKILL); its log in `directory`.

    `db` defaults to `directory/cloud.sqlite3`; give several receivers the same `db` to share it, a file
    or a PostgreSQL DSN (a `str` starting with postgresql://).
    `args` are further command-line flags (e.g. ["--throttle-next", "1"]).
    """

    def __init__(
        self,
        directory: Path,
        *,
        tokens: Sequence[str] = ("test-token",),
        db: Path | str | None = None,
        port: int | None = None,
        test_controls: bool = True,
        args: Sequence[str] = (),
        name: str = "cloud",
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tokens = list(tokens)
        self.db: Path | str = db if db is not None else self.dir / "cloud.sqlite3"
        self.port = port if port is not None else free_port()
        self.test_controls = test_controls
        self.args = list(args)
        self.log_path = self.dir / f"{name}.log"
        self.token_file = self.dir / f"{name}.tokens"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> CloudReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> CloudReceiver:
        if self.running:
            return self
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{t}\n" for t in self.tokens))
        db, env = str(self.db), {**os.environ, "PYTHONUNBUFFERED": "1"}
        if db.startswith(POSTGRESQL_SCHEMES):
            from simulators.cloud.pgstore import without_password

            db, password = without_password(db)
            if password is not None:
                env["PGPASSWORD"] = password
        cmd = [
            sys.executable,
            "-m",
            "simulators.cloud",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            db,
            "--token-file",
            str(self.token_file),
            *(["--test-controls"] if self.test_controls else []),
            *self.args,
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + _START_TIMEOUT
        while not self.healthy():
            if self._proc.poll() is not None:
                raise RuntimeError(f"the cloud receiver exited with {self._proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the cloud receiver did not answer on {self.url} within {_START_TIMEOUT} s")
            # The pause between probes, cut short if the receiver exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.05)
        return self

    def healthy(self) -> bool:
        """Whether GET /v1/health answers 200 right now."""
        try:
            with _OPENER.open(f"{self.url}/v1/health", timeout=1.0) as answer:
                return int(answer.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """POST /_faults (needs test controls): the given knobs, every other one back to its default."""
        request = urllib.request.Request(
            f"{self.url}/_faults",
            data=json.dumps(settings).encode(),
            headers={"Authorization": f"Bearer {self.tokens[0]}", "Content-Type": "application/json"},
            method="POST",
        )
        with _OPENER.open(request, timeout=10.0) as answer:
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def stop(self) -> None:
        """SIGTERM and wait: the receiver finishes what it is answering and closes the store."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, _STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: a receiver crash."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
