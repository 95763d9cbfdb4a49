"""Start the node-opcua load server (server.js) as a child process, for tests and benchmarks.

    with NodeOpcuaServer(port=4850, vars=5000) as server:
        server.endpoint, server.namespace_index, server.variable_ids()

Needs Node.js and `npm ci --prefix simulators/nodeopcua`; `node_opcua_available()` says what is
missing, for pytest skip messages.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from simulators.procs import stop_process

HERE = Path(__file__).resolve().parent
SERVER_JS = HERE / "server.js"
NODE_MODULES = HERE / "node_modules"
INSTALL_HINT = "run `npm ci --prefix simulators/nodeopcua`"
# server.js makes this its application URI, so it is always namespace index 1.
NAMESPACE_URI = "urn:edge-agent:simulators:nodeopcua"
# node-opcua 2.186 declares node >= 22.13 but runs (and is tested here) on Node.js 20.
MIN_NODE_MAJOR = 20


class NodeOpcuaUnavailable(RuntimeError):
    """Node.js or the node-opcua package is missing."""


def node_opcua_available() -> str | None:
    """None when the server can start, else the reason it cannot."""
    node = shutil.which("node")
    if node is None:
        return f"Node.js (`node`) is not on PATH; install Node.js >= {MIN_NODE_MAJOR}"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < MIN_NODE_MAJOR:
        return f"Node.js {version or '(unknown version)'} is too old; node-opcua needs >= {MIN_NODE_MAJOR}"
    if not (NODE_MODULES / "node-opcua" / "package.json").is_file():
        return f"node-opcua is not installed in {NODE_MODULES}; {INSTALL_HINT}"
    return None


class NodeOpcuaServer:
    """server.js on 127.0.0.1:`port`, stopped (SIGTERM, then SIGKILL) when the context exits."""

    def __init__(
        self,
        port: int,
        vars: int = 5000,
        period_ms: int = 100,
        max_nodes_per_call: int = 1000,
        max_notifications_per_publish: int = 10000,
        max_sessions: int = 50,
        secure: bool = False,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.vars = vars
        self.period_ms = period_ms
        self.max_nodes_per_call = max_nodes_per_call
        self.max_notifications_per_publish = max_notifications_per_publish
        self.max_sessions = max_sessions
        self.secure = secure
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.namespace_index = -1
        self.process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    def node_id(self, name: str) -> str:
        return f"ns={self.namespace_index};s={name}"

    def variable_ids(self) -> list[str]:
        """Node ids of the --vars Double variables, in order."""
        return [self.node_id(f"Var{i:05d}") for i in range(self.vars)]

    @property
    def fast_id(self) -> str:
        return self.node_id("Fast")

    @property
    def ramp_id(self) -> str:
        return self.node_id("Ramp")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start server.js and wait until it prints READY; raises with its stderr if it does not."""
        if self.process is not None:
            raise RuntimeError("node-opcua server already running")
        reason = node_opcua_available()
        node = shutil.which("node")
        if reason is not None or node is None:
            raise NodeOpcuaUnavailable(reason)
        # A private PKI folder: concurrent servers would otherwise race to create one certificate.
        self._workdir = tempfile.TemporaryDirectory(prefix="nodeopcua-")
        workdir = Path(self._workdir.name)
        command = [
            node,
            str(SERVER_JS),
            f"--port={self.port}",
            f"--vars={self.vars}",
            f"--period-ms={self.period_ms}",
            f"--max-nodes-per-call={self.max_nodes_per_call}",
            f"--max-notifications-per-publish={self.max_notifications_per_publish}",
            f"--max-sessions={self.max_sessions}",
            *(["--secure"] if self.secure else []),
            f"--pki={workdir / 'PKI'}",
        ]
        # Files rather than pipes: nobody has to keep draining them while the server runs.
        with self._stdout_path.open("wb") as stdout, self._stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(command, cwd=HERE, stdout=stdout, stderr=stderr)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, self.stop_timeout)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            for line in self._stdout_path.read_text(errors="replace").splitlines():
                words = line.split()
                if len(words) == 3 and words[0] == "READY":
                    self.namespace_index = int(words[2])
                    return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"node-opcua server exited with code {self.process.returncode} before READY:\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"node-opcua server not READY after {self.start_timeout} s ({self.vars} vars):\n{self.stderr()}"
                )
            time.sleep(0.05)

    def stderr(self) -> str:
        """What the server wrote to stderr so far (last 4,000 characters)."""
        if self._workdir is None:
            return ""
        return self._stderr_path.read_text(errors="replace")[-4000:]

    @property
    def _stdout_path(self) -> Path:
        assert self._workdir is not None
        return Path(self._workdir.name) / "stdout.log"

    @property
    def _stderr_path(self) -> Path:
        assert self._workdir is not None
        return Path(self._workdir.name) / "stderr.log"
