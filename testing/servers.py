"""The one way the harness runs a loopback server: a free port, a server in a child process started and waited on
until healthy, an HTTP server in a thread, and one teardown that always stops, kills if need be, and reaps.

Standard library only (the token server, which the demo runs with nothing but the core installed, is built on it).
Every server listens on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """A server did not start (the message ends with the tail of its log, when it has one)."""


def free_port() -> int:
    """A loopback port nothing listens on right now (also a port to find closed, for "unreachable" tests)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """In a child, before exec: get SIGTERM when the parent dies, however it dies (Linux), so a server never
    outlives the tests or the benchmark that started it. Only where ``setpriv`` is missing (see ``tethered``):
    Python code between fork and exec can crash a child forked from a process that runs gRPC's threads."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def tethered(command: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``command`` made to get SIGTERM when this process dies (Linux), and the preexec_fn that needs, if any:
    util-linux's ``setpriv --pdeathsig`` runs no Python in the forked child; the ctypes fallback does."""
    if sys.platform != "linux":
        return list(command), None
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "TERM", "--", *command], None
    return list(command), die_with_parent


def http_ok(path: str) -> Callable[[int], bool]:
    """A health check: ``GET http://127.0.0.1:PORT/path`` answers 200."""

    def check(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return check


def accepting(port: int) -> bool:
    """A health check: something accepts connections on the port (a gRPC server, say)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaped, its pipes closed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


class ServerProcess:
    """A server running in a child process on ``port``; ``stop()`` (or leaving ``with``) ends and reaps it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path | None) -> None:
        self.proc, self.port, self.log = proc, port, log

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self, size: int = 2000) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-size:]

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_server(command: Callable[[int], Sequence[str]], healthy: Callable[[int], bool], *, name: str,
                 log: Path | None = None, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 30, attempts: int = 3) -> ServerProcess:
    """Start ``command(port)`` on a free port in its own session (dying with this process) and wait until
    ``healthy(port)``. A server that exits before it is healthy (its port was taken meanwhile) is tried again on
    another port, up to ``attempts`` times; one that is not healthy within ``timeout`` seconds is an error.
    Output goes to ``log`` (appended), else nowhere."""
    problem = ""
    for _ in range(attempts):
        port = free_port()
        out = open(log, "ab") if log is not None else None  # noqa: SIM115 (closed once the child has it)
        try:
            argv, preexec = tethered(command(port))
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                env=None if env is None else dict(env), cwd=cwd, start_new_session=True, preexec_fn=preexec,
            )
        finally:
            if out is not None:
                out.close()
        server = ServerProcess(proc, port, log)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if healthy(port):
                    return server
                time.sleep(0.05)
            exited = proc.poll() is not None
        except BaseException:
            server.stop()
            raise
        server.stop()
        if not exited:
            raise ServerError(f"{name} did not become healthy within {timeout}s:\n{server.log_tail()}")
        problem = f"{name} exited with {proc.returncode}:\n{server.log_tail()}"
    raise ServerError(problem)


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 that knows its ``service`` and how many requests are in progress."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 makes 64 simultaneous clients hit SYN retries

    def __init__(self, handler: type[BaseHTTPRequestHandler], service: object, port: int = 0, *,
                 quiet: bool = False) -> None:
        super().__init__((LOOPBACK, port), handler)
        self.service = service
        self.quiet = quiet
        self.active = 0
        self.idle = threading.Condition()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.idle:  # in the accept thread: counted before the handler thread even exists
            self.active += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self.idle:
                self.active -= 1
                self.idle.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timeout test) is expected; anything else is printed as usual, unless
        ``quiet`` (a server that cuts connections on purpose)."""
        if not self.quiet and not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class ThreadedHTTPService:
    """Base of an in-process loopback HTTP server: ``with Service(...) as s`` serves in a daemon thread and stops
    on exit. The handler reaches the service as ``self.server.service``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0, *, name: str = "loopback-http",
                 quiet: bool = False) -> None:
        self.httpd = LoopbackHTTPServer(handler, self, port, quiet=quiet)
        self.port = int(self.httpd.server_address[1])
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (in-flight handlers are daemons)."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def wait_idle(self, timeout: float) -> int:
        """Wait until no request is in progress, at most ``timeout`` seconds; the number still in progress."""
        deadline = time.monotonic() + timeout
        with self.httpd.idle:
            while self.httpd.active:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.httpd.idle.wait(left)
            return self.httpd.active

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

