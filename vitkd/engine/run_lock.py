"""One run per run folder: a lock file naming the holder's PID and host, taken by the main process.

Why a PID file and not ``fcntl.flock``: the second run must be told *who* holds the folder (PID,
host, since when), and flock is unreliable on the network file systems run folders often live on.
A lock whose holder is gone (same host, PID not alive, or alive but started after the lock was
written, i.e. a reused PID) is stale and taken over; a lock from another host cannot be checked and
is reported with how to remove it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

__all__ = ["LOCK_FILE", "RunLockedError", "acquire", "release", "run_lock"]

LOCK_FILE = ".vitkd.lock"


class RunLockedError(RuntimeError):
    """Another live run holds the run folder."""


def _process_start(pid: int) -> float | None:
    """Start time of ``pid`` in seconds since the epoch (Linux /proc), None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of proc(5): starttime, in clock ticks after boot
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(holder: dict) -> bool:
    """Whether the holder process (on this host) still runs; a reused PID started after the lock is not it."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = _process_start(pid)
    locked_at = holder.get("time")
    return started is None or not isinstance(locked_at, (int, float)) or started <= locked_at + 1.0


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # being written right now, or garbage: treated as stale below only if still unreadable


def acquire(run_dir: Path) -> Path:
    """Take ``run_dir``'s lock for this process or raise :class:`RunLockedError` naming the holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _refuse_or_clear(run_dir, path, me)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise RunLockedError(f"could not take the lock {path}: other runs keep taking it")


def _refuse_or_clear(run_dir: Path, path: Path, me: dict) -> None:
    """Raise if the lock at ``path`` belongs to a live (or uncheckable) run; else remove the stale lock."""
    holder = _read(path)
    if not holder:
        time.sleep(0.2)  # a holder between create and write
        holder = _read(path)
    if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
        raise RunLockedError(f"{run_dir} is already in use by this process (PID {me['pid']}): finish that run first")
    if holder.get("host") not in (None, me["host"]):
        raise RunLockedError(_held_message(run_dir, path, holder, other_host=True))
    if holder and _alive(holder):
        raise RunLockedError(_held_message(run_dir, path, holder, other_host=False))
    # stale: move it aside atomically so that of two takers only one removes it, then create anew
    aside = path.with_name(f"{LOCK_FILE}.stale.{me['pid']}")
    try:
        os.replace(path, aside)
        os.unlink(aside)
    except FileNotFoundError:
        pass


def _held_message(run_dir: Path, path: Path, holder: dict, *, other_host: bool) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["time"])) if "time" in holder else "?"
    who = f"PID {holder.get('pid')} on host {holder.get('host')} (since {since})"
    if other_host:
        return (f"{run_dir} is in use by {who}, which cannot be checked from here. Wait for that run to finish; "
                f"if it is no longer running, delete {path} and start again")
    return (f"{run_dir} is in use by the running {who}. Wait for it to finish or stop it, or choose another "
            "train.output_dir")


def release(path: Path) -> None:
    """Remove the lock if this process still holds it."""
    holder = _read(path)
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(accelerator: Accelerator, run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block: the main process takes it; every process raises if it is held."""
    result = ["", ""]  # [lock path, error message]; plain strings travel to the other processes
    if accelerator.is_main_process:
        try:
            result[0] = str(acquire(run_dir))
        except RunLockedError as err:
            result[1] = str(err)
    if accelerator.num_processes > 1:
        broadcast_object_list(result)
    if result[1]:
        raise RunLockedError(result[1])
    try:
        yield
    finally:
        if accelerator.is_main_process:
            release(Path(result[0]))
