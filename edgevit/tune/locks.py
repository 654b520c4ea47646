"""A device is timed by one trial at a time.

Trials overlap everywhere else (passes, fine-tuning, export run in parallel), but two
timings on one board would each measure the other's load. The lock is held only while the
device runner runs (``LockedTransport``), so the rest of a trial is not serialised.

- ``file``: ``fcntl.flock`` on ``<lock dir>/<device>.lock`` — storage workers on one host,
  or hosts sharing the lock folder; the kernel drops it when a worker dies, however it dies.
- ``ray``: a named Ray actor per device (``edgevit-device:<name>``, one per cluster), so
  trials on any node of the cluster queue for the same board.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RAY_NAMESPACE = "edgevit-tune"


def device_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "device"


@dataclass(frozen=True)
class LockSpec:
    """Picklable description of a device lock (it travels to Ray workers)."""

    kind: str  # file | ray
    device: str
    where: str = ""  # file: the lock folder

    @contextlib.contextmanager
    def hold(self) -> Iterator[float]:
        """Blocks until this trial has the device; yields the seconds it waited."""
        t0 = time.monotonic()
        if self.kind == "file":
            Path(self.where).mkdir(parents=True, exist_ok=True)
            fd = os.open(Path(self.where) / f"{device_slug(self.device)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield time.monotonic() - t0
            finally:
                os.close(fd)  # closing drops the flock
            return
        import ray

        actor = _ray_lock_actor(self.device)
        ticket = ray.get(actor.acquire.remote())
        try:
            yield time.monotonic() - t0
        finally:
            ray.get(actor.release.remote(ticket))


def _ray_lock_actor(device: str) -> Any:
    import ray

    @ray.remote(num_cpus=0, max_concurrency=64)
    class DeviceLock:
        """A FIFO lock; threaded actor so a waiting acquire does not block release."""

        def __init__(self) -> None:
            import threading

            self._cond = threading.Condition()
            self._next = 0
            self._serving = 0

        def acquire(self) -> int:
            with self._cond:
                ticket, self._next = self._next, self._next + 1
                self._cond.wait_for(lambda: self._serving == ticket)
                return ticket

        def release(self, ticket: int) -> None:
            with self._cond:
                if ticket == self._serving:
                    self._serving += 1
                    self._cond.notify_all()

    return DeviceLock.options(name=f"edgevit-device:{device_slug(device)}", namespace=RAY_NAMESPACE,
                              get_if_exists=True, lifetime="detached").remote()


class LockedTransport:
    """A transport whose runs hold the device lock; records how long trials queued."""

    def __init__(self, inner: Any, lock: LockSpec):
        self.inner = inner
        self.lock = lock
        self.name = inner.name
        self.waited_s = 0.0
        self.holds: list[tuple[float, float]] = []  # wall-clock (start, end) of each run: the record shows no overlap

    def run(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock.hold() as waited:
            self.waited_s += waited
            start = time.time()
            try:
                return self.inner.run(*args, **kwargs)
            finally:
                self.holds.append((start, time.time()))
