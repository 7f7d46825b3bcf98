"""A real ``tritonserver`` on loopback, for tests and the load benchmark.

The binary is the one the ``nvidia-pytriton`` wheel bundles (Triton 2.51 with the
Python backend and no other backend; it starts without a GPU), or ``$TRITONSERVER``.
The Python backend gets a private backend folder holding the stub built for the
environment's Python version, and runs in :mod:`swinedge.serving.python_env`'s
environment. HTTP, gRPC and metrics listen on 127.0.0.1 at free ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from swinedge.errors import MissingDependencyError, SwinedgeError
from swinedge.serving.python_env import default_python_env, python_env_problem, python_env_version


def bundled_server_root() -> Path | None:
    """``pytriton/tritonserver`` of the installed ``nvidia-pytriton`` wheel (not imported:
    pytriton itself pins NumPy 1)."""
    from importlib import metadata

    try:
        root = Path(str(metadata.distribution("nvidia-pytriton").locate_file("pytriton/tritonserver")))
    except metadata.PackageNotFoundError:
        return None
    return root if (root / "bin" / "tritonserver").is_file() else None


def server_problem(python_env: Path | None = None) -> str | None:
    """Why a local server cannot start here (None when it can)."""
    if os.environ.get("TRITONSERVER") is None and bundled_server_root() is None:
        return "no tritonserver: pip install --no-deps nvidia-pytriton (it bundles one), or set TRITONSERVER"
    return python_env_problem(python_env or default_python_env())


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalTritonServer:
    """``with LocalTritonServer(repo) as server: server.http_url ...``; stopped on exit."""

    def __init__(self, repository: str | Path, *, python_env: str | Path | None = None, startup_timeout: float = 180.0):
        self.repository = Path(repository)
        self.python_env = Path(python_env) if python_env else default_python_env()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._scratch: Path | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log(self) -> str:
        return (self._scratch / "server.log").read_text(errors="replace") if self._scratch else ""

    def _backends(self, root: Path) -> Path:
        version = "{}.{}".format(*python_env_version(self.python_env))
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise SwinedgeError(f"the bundled tritonserver has no Python-backend stub for Python {version}: make the environment with Python 3.8..3.13")
        backends = self._scratch / "backends"
        shutil.copytree(root / "backends", backends)
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        return backends

    def start(self) -> "LocalTritonServer":
        problem = server_problem(self.python_env)
        if problem:
            raise MissingDependencyError(problem)
        self._scratch = Path(tempfile.mkdtemp(prefix="swinedge-tritonserver-"))
        binary = os.environ.get("TRITONSERVER")
        root = bundled_server_root()
        env = dict(os.environ)
        env["PATH"] = f"{self.python_env / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        libdirs = [sysconfig.get_config_var("LIBDIR") or ""]
        if binary is None:
            assert root is not None
            binary = str(root / "bin" / "tritonserver")
            libdirs.append(str(root.parent.parent / "nvidia_pytriton.libs"))
        env["LD_LIBRARY_PATH"] = os.pathsep.join([d for d in libdirs if d] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        self.http_port, self.grpc_port, self.metrics_port = _free_ports(3)
        cmd = [
            binary, f"--model-repository={self.repository}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=10", "--strict-readiness=true",
        ]  # fmt: skip
        if root is not None and binary.startswith(str(root)):
            cmd.append(f"--backend-directory={self._backends(root)}")
        log = open(self._scratch / "server.log", "wb")
        try:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self._fail(f"tritonserver exited with code {self.process.returncode} while starting")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self._fail(f"tritonserver was not ready within {self.startup_timeout:.0f}s")

    def _fail(self, what: str) -> None:
        """Stop, and say why with the end of the server's log (which stop() removes)."""
        tail = " | ".join(self.log.strip().splitlines()[-3:])
        self.stop()
        raise SwinedgeError(f"{what}: {tail[-400:]}")

    def memory_bytes(self) -> int:
        """Resident memory of the server and its Python-backend stubs (its process group)."""
        if self.process is None:
            return 0
        total = 0
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                if os.getpgid(int(pid_dir.name)) != self.process.pid:
                    continue
                for line in (pid_dir / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except (OSError, ValueError, ProcessLookupError):
                continue
        return total

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.process is not None:
            # the Python-backend stubs live in the server's process group
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
