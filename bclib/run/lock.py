"""One writer per run folder: a lock file holding the owner's PID, and SIGTERM handled like Ctrl-C.

``hold_run_lock(folder)`` creates ``<folder>/run.lock`` exclusively. A lock whose process is gone
(same host, PID no longer running) is stale and taken over; a live one refuses with
:class:`RunLockedError`, naming its PID and what to do.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

LOCK_FILE = "run.lock"


class RunLockedError(ValueError):
    """Another live process is writing this run folder."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a process of another user counts)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there
        import psutil

        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _is_stale(owner: dict) -> bool:
    """A lock is stale when its owner on this host is no longer running (or the file says nothing)."""
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return True
    return owner.get("host") == socket.gethostname() and not pid_alive(pid)


@contextlib.contextmanager
def hold_run_lock(folder: str | os.PathLike, log: Callable[[str], object] = print) -> Iterator[Path]:
    """Hold ``<folder>/run.lock`` for the block; raise :class:`RunLockedError` when a live process holds it."""
    path = Path(folder) / LOCK_FILE
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")}
    for _ in range(2):  # the second try follows the removal of a stale lock
        try:
            with open(path, "x", encoding="utf-8") as handle:
                json.dump(record, handle)
            break
        except FileExistsError:
            owner = _read(path)
            if not _is_stale(owner):
                raise RunLockedError(
                    f"run folder {str(path.parent)!r} is in use by process {owner['pid']} on {owner.get('host')} "
                    f"(since {owner.get('since')}): wait for that run to finish; if that process is gone, "
                    f"delete {str(path)!r}"
                ) from None
            log(f"taking over the stale lock of process {owner.get('pid')} (no longer running) in {path.parent}")
            path.unlink(missing_ok=True)
    else:
        raise RunLockedError(f"could not lock run folder {str(path.parent)!r}: another process took {path.name} first")
    try:
        yield path
    finally:
        if _read(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), as Ctrl-C would."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
