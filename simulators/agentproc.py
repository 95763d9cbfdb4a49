"""`edge-agent run` as a real child process, so a test or a fault run can SIGTERM or SIGKILL it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]


class AgentProcess:
    """`edge-agent run` as a real child process, so a test can SIGTERM or SIGKILL it."""

    def __init__(self, config: Path, log: Path, cwd: Path = ROOT) -> None:
        """`cwd`: where relative paths in the config (data_dir, a file sink's path) are taken from."""
        self.cwd = cwd
        self.config = config
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "-c", str(self.config), "--log-format", "json"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=env,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return out

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)
