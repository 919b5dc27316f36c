"""A real `redis-server` (Debian's package) for the tests: its own free 127.0.0.1 port, its own temp dir.

    server = RedisServer(tmp_dir)
    server.start()            # returns once redis-server said READY (systemd notify), no polling
    server.url                # redis://127.0.0.1:<port>/0
    server.stop(); server.start()   # the same port and dir again: failure tests
    server.close()

No persistence unless asked (`persistent=True`: an append-only file in the temp dir, fsynced on every
write, so a restart keeps everything acknowledged). Readiness comes from redis-server's own systemd
notification (`--supervised systemd` with `NOTIFY_SOCKET` pointing at a datagram socket of ours), so
the harness neither sleeps nor polls the port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

__all__ = ["RedisServer", "RedisUnavailable", "redis_server_binary"]

START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 10.0
PORT_ATTEMPTS: Final = 5


class RedisUnavailable(RuntimeError):
    """No redis-server executable on this machine."""


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisUnavailable("redis-server is not installed (Debian: `apt-get install -y redis-server`)")
    return found


def _free_port() -> int:
    # Redis binds its own port (no socket passing), so a port is picked and released here; a race
    # with another process is retried by `start` with a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, *, persistent: bool = False, password: str | None = None) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.persistent = persistent
        self.password = password
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        assert self.port is not None, "start the server first"
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _arguments(self, port: int) -> list[str]:
        arguments = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--supervised", "systemd",
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
        ]  # fmt: skip
        if self.password:
            arguments += ["--requirepass", self.password]
        return arguments

    def start(self) -> None:
        """Start (or restart, on the same port) and return once it accepts connections."""
        assert not self.running, "already running"
        attempts = 1 if self.port is not None else PORT_ATTEMPTS
        for _ in range(attempts):
            port = self.port if self.port is not None else _free_port()
            if self._start_on(port):
                self.port = port
                self._starts += 1
                return
        log = self.directory / "redis.log"
        raise RuntimeError(f"redis-server did not start: {log.read_text() if log.exists() else 'no log'}")

    def _start_on(self, port: int) -> bool:
        notify_path = self.directory / f"notify-{self._starts}.sock"
        notify_path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            # Short waits: a redis-server that exits at once (port taken) sends nothing at all.
            notify.settimeout(0.2)
            deadline = time.monotonic() + START_TIMEOUT
            process = subprocess.Popen(
                self._arguments(port),
                env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                # redis-server sends READY=1 once it accepts clients.
                while time.monotonic() < deadline and process.poll() is None:
                    try:
                        message = notify.recv(4096)
                    except TimeoutError:
                        continue
                    if b"READY=1" in message.split(b"\n"):
                        self._process = process
                        return True
                process.kill()
                process.wait()
                return False
            finally:
                notify_path.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop as an operator would (SIGTERM: clients see the connection drop); idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Crash it (SIGKILL): nothing is flushed beyond what the append-only file already holds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.kill()
