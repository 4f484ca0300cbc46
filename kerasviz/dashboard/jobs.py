"""Background work for the dashboard: a fair model lock and cancellable jobs on one thread.

Every model call of the dashboard holds :class:`TicketLock`, so TensorFlow work never
interleaves inside kerasviz's caches. Long jobs (feature inversion, unit patterns, SmoothGrad
and integrated gradients) run on one worker thread, in segments: between segments the job
hands the lock to any waiting page request (first come, first served) and checks whether it
was cancelled. A page request therefore waits at most one segment, never a whole job. A new job
in the same slot (a new inversion, say) cancels the previous one.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class TicketLock:
    """A FIFO lock: threads enter in the order they asked, so a job cannot starve requests."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0

    def acquire(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            while self._serving != ticket:
                self._cond.wait()

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Threads waiting for the lock (the holder excluded)."""
        with self._cond:
            return max(0, self._next - self._serving - 1)

    def pause(self) -> None:
        """Lets every thread that is already waiting go first, then takes the lock back."""
        if self.waiting:
            self.release()
            self.acquire()

    def __enter__(self) -> TicketLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class Cancelled(Exception):
    """Raised inside a job at its next checkpoint once it was cancelled."""


class Job:
    """One background computation: its state, progress and the frames it produced so far.

    Attributes:
        id: ``"j1"``, ``"j2"``, ...
        kind: what it computes (``"invert"``, ``"pattern"``, ``"gradients"``, ...).
        state: ``"queued"``, ``"running"``, ``"done"``, ``"error"`` or ``"cancelled"``.
        step, total: progress in the job's own units (optimization steps, path points).
        frames: JSON-ready snapshots, in order; ``t`` is each one's time since the job started.
        result: the final JSON-ready result, once done.
        error: the message shown in the page when the job failed.
    """

    def __init__(self, job_id: str, kind: str, slot: str, total: int, run: Callable, lock):
        self.id = job_id
        self.kind = kind
        self.slot = slot
        self.total = int(total)
        self.step = 0
        self.state = "queued"
        self.frames: list[dict] = []
        self.result: dict | None = None
        self.error: str | None = None
        self.started = self.finished = None
        self._run = run
        self._lock = lock
        self._cancel = threading.Event()
        self._changed = threading.Condition()

    def cancel(self) -> None:
        self._cancel.set()
        with self._changed:
            if self.state == "queued":
                self.state = "cancelled"
            self._changed.notify_all()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished_state(self) -> bool:
        return self.state in ("done", "error", "cancelled")

    def checkpoint(self, step: int | None = None, frame: dict | None = None) -> None:
        """Records progress and a frame, yields the model lock to waiting requests.

        Raises:
            Cancelled: the job was cancelled.
        """
        with self._changed:
            if step is not None:
                self.step = int(step)
            if frame is not None:
                frame.setdefault("t", round(time.monotonic() - self.started, 3))
                self.frames.append(frame)
            self._changed.notify_all()
        if self._cancel.is_set():
            raise Cancelled
        self._lock.pause()
        if self._cancel.is_set():
            raise Cancelled

    def wait(self, after: int, timeout: float) -> None:
        """Blocks until a frame beyond ``after`` exists, the job ends, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.frames) <= after and not self.finished_state:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def join(self, timeout: float | None = None) -> bool:
        """Blocks until the job has ended (or ``timeout`` seconds); True when it has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self.finished_state:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def view(self, after: int = 0) -> dict:
        """The JSON-ready state with the frames after index ``after``."""
        with self._changed:
            return {
                "id": self.id,
                "kind": self.kind,
                "state": self.state,
                "step": self.step,
                "total": self.total,
                "frames": self.frames[after:],
                "next": len(self.frames),
                "result": self.result,
                "error": self.error,
                "seconds": None
                if self.started is None
                else round((self.finished or time.monotonic()) - self.started, 3),
            }

    def execute(self) -> None:
        with self._changed:
            if self.state != "queued":
                return
            self.state = "running"
            self.started = time.monotonic()
        state, result, error = "done", None, None
        try:
            with self._lock:
                if self._cancel.is_set():
                    raise Cancelled
                result = self._run(self)
        except Cancelled:
            state = "cancelled"
        except ValueError as exc:  # kerasviz's argument errors are shown as they are
            state, error = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - a failing job must not stop the worker
            traceback.print_exc()
            state, error = "error", f"{type(exc).__name__}: {exc}"
        with self._changed:
            self.state, self.result, self.error = state, result, error
            self.finished = time.monotonic()
            self._changed.notify_all()


class JobManager:
    """Runs jobs one at a time on a daemon thread; one live job per slot."""

    def __init__(self, lock: TicketLock, *, keep: int = 64) -> None:
        self.lock = lock
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._slots: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._queue: queue.Queue = queue.Queue()
        self._keep = keep
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="kerasviz-jobs", daemon=True)
        self._thread.start()

    def submit(self, kind: str, run: Callable[[Job], dict], *, total: int, slot=None) -> Job:
        """Queues ``run(job)``; a live job in the same ``slot`` (default: ``kind``) is cancelled."""
        slot = slot or kind
        with self._guard:
            job = Job(f"j{next(self._ids)}", kind, slot, total, run, self.lock)
            old = self._slots.get(slot)
            if old is not None:
                old.cancel()
            self._slots[slot] = job
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                self._jobs.popitem(last=False)
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._guard:
            return self._jobs.get(job_id)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancels every job and ends the worker thread."""
        with self._guard:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.execute()
