"""`gateway serve`: one process that owns the port and supervises the HTTP server and the
delivery worker, so an operator can leave it unattended.

    gateway serve (this module: binds the port, watches, restarts, cleans up)
      ├── gunicorn arbiter (gateway.cli.httpserver) ── its worker processes (the Flask app)
      └── delivery worker (`gateway worker`)

- The port is bound here, before anything starts, and handed to gunicorn as a file descriptor:
  a busy port is one clear error, never a half-started gateway.
- A child that dies is restarted with backoff (logged, with its exit status); the delivery worker
  always, gunicorn unless it failed straight after starting (a broken app would only loop).
- Children never outlive serve: they are started with the kernel's parent-death signal, so even
  a kill -9 of serve stops them (gunicorn's own workers follow their arbiter within a second).
- The Prometheus multi-process folder is private to this serve, removed on exit, and folders
  left by serves that died without cleaning up are swept at start.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config import format_bind
from gateway.heartbeat import EXPECT_WORKER_ENV

log = logging.getLogger("gateway.serve")

METRICS_PREFIX = "gateway-metrics-"
RESTART_DELAYS = (1, 2, 5, 10, 30, 60)  # seconds before restart n; the last one repeats
HEALTHY_AFTER = 30.0  # a child that ran this long is restarted from the first delay again
STOP_TIMEOUT = 45.0  # SIGTERM, then this long to finish in-flight work, then SIGKILL
PR_SET_PDEATHSIG = 1


class ServeError(Exception):
    """serve cannot start; the message says why and what to do."""


def listen(host: str, port: int, setting: str = "--bind") -> socket.socket:
    """Bind the gateway's port now, so a busy port stops serve before anything starts.
    `setting` is what the operator changes to choose another (named in the error)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"cannot listen on {host}:{port}: the address is already in use "
                             f"(another gateway? choose another port with {setting})") from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when serve dies, kill -9 included."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the children poll their parent instead
        return
    if os.getppid() != parent:  # serve died before prctl took effect
        os._exit(1)


@dataclass
class Child:
    """A supervised child process: how to start it, and its restart bookkeeping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    restart_on_early_exit: bool = True
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, pass_fds=self.pass_fds,
                                        preexec_fn=die_with_parent)
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = False

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        for child in self.children:
            child.start()
        try:
            while not self.stopping:
                for child in self.children:
                    failure = self._watch(child)
                    if failure:
                        log.error(failure)
                        return 1
                time.sleep(0.2)
            return 0
        finally:
            self._terminate_all()

    def _stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log.info("%s received: stopping", signal.Signals(signum).name)
        self.stopping = True

    def _watch(self, child: Child) -> str | None:
        """Restart a child that exited; a message when serve must give up instead."""
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.start()
                log.warning("%s restarted (pid %s)", child.name, child.pid)
            return None
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            return None
        ran = now - child.started_at
        if ran >= HEALTHY_AFTER:
            child.restarts = 0
        elif not child.restart_on_early_exit and child.restarts == 0:
            return (f"{child.name} exited {describe_exit(code)} {ran:.1f} s after starting; "
                    "not restarting (see the lines above)")
        delay = RESTART_DELAYS[min(child.restarts, len(RESTART_DELAYS) - 1)]
        child.restarts += 1
        child.restart_at = now + delay
        log.error("%s (pid %s) exited: %s after %.1f s; restarting in %d s", child.name,
                  child.pid, describe_exit(code), ran, delay)
        return None

    def _terminate_all(self) -> None:
        running = [c.process for c in self.children
                   if c.process is not None and c.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def metrics_folder() -> Path:
    """A private Prometheus multi-process folder, named after this pid; stale ones swept."""
    sweep_metrics_folders()
    return Path(tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}pid{os.getpid()}-"))


def sweep_metrics_folders() -> int:
    """Remove folders of serves that are no longer running (killed without cleaning up).
    Only folders named after their owner's pid are touched: nobody else's are guessed at."""
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}pid*-*"):
        owner = folder.name[len(METRICS_PREFIX) + 3:].split("-")[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(config_path: Path, host: str, port: int, workers: int, with_worker: bool,
          admin: tuple[str, int] | None = None, tls: bool = False) -> int:
    """Bind, start gunicorn and (unless told not to) a delivery worker, and supervise both.
    `admin` is `[admin] bind`: a second listener, the only one serving the admin surface.
    `tls`: `[server] certfile` is set, so both listeners speak HTTPS."""
    listener = listen(host, port)
    try:
        admin_listener = listen(*admin, setting="[admin] bind") if admin else None
    except ServeError:
        listener.close()
        raise
    fds = [listener.fileno()] + ([admin_listener.fileno()] if admin_listener else [])
    metrics = metrics_folder()
    # the children's [server] bind is the address served (--bind may differ from the file):
    # /metrics decides from it whether it needs the token
    env = {**os.environ, "GATEWAY_CONFIG": str(config_path), "PROMETHEUS_MULTIPROC_DIR":
           str(metrics), "GATEWAY_SERVER_BIND": format_bind(host, port)}
    if with_worker:
        env[EXPECT_WORKER_ENV] = "1"
    else:
        env.pop(EXPECT_WORKER_ENV, None)
    python = sys.executable
    fd_args = [arg for fd in fds for arg in ("--fd", str(fd))]
    children = [Child("HTTP server", [python, "-m", "gateway.cli.httpserver", *fd_args,
                                      "--workers", str(workers)],
                      env, pass_fds=tuple(fds), restart_on_early_exit=False)]
    if with_worker:
        children.append(Child("delivery worker", [python, "-m", "gateway.cli", "--config",
                                                  str(config_path), "worker"], env))
    supervisor = Supervisor(children)
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls else "http"
    print(f"Serving on {scheme}://{shown}:{port} with {workers} worker process(es)"
          + ("; delivery worker supervised" if with_worker else "; no delivery worker"),
          flush=True)
    if admin:
        print(f"Admin API, console and /metrics only on {scheme}://{format_bind(*admin)}",
              flush=True)
    try:
        return supervisor.run()
    finally:
        listener.close()
        if admin_listener:
            admin_listener.close()
        shutil.rmtree(metrics, ignore_errors=True)
