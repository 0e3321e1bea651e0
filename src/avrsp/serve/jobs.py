"""The page's jobs: one background thread runs them in order, each in its own folder
under a random id, within an output budget; finished results are kept up to a limit."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

#: Results kept on disk; the oldest are removed beyond this. Only jobs that produced a
#: result count, so failed or cancelled jobs never push anyone's result out.
KEEP_RESULTS = 20
#: Failed and cancelled jobs whose status (one sentence; they keep no files) is still answered.
KEEP_ENDED = 100
#: Jobs that may wait behind the running one; more are refused (HTTP 503).
MAX_WAITING = 10
#: How often a running job measures its folder against the output budget.
BUDGET_CHECK_S = 0.5


class JobCancelled(Exception):
    """Raised inside a job when its user cancelled it."""


class OverBudget(Exception):
    """Raised inside a job whose outputs passed the server's budget per job."""


class QueueFull(Exception):
    """A job refused because the queue is full (or the server is stopping)."""


@dataclass
class Job:
    id: str
    kind: str                   # "video" (an upload or the demo) or "dataset"
    name: str
    folder: Path
    state: str = "queued"       # queued, running, done, failed, cancelled
    done: int = 0
    total: int = 0              # 0 while unknown
    message: str = ""
    result: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: float = 0.0
    budget_mb: float | None = None  # what its folder may hold
    upload: Path | None = None      # the uploaded file's folder, removed when the job ends
    checked: float = 0.0

    def status(self, position: int | None = None) -> dict:
        return {"id": self.id, "kind": self.kind, "name": self.name, "state": self.state, "done": self.done,
                "total": self.total, "message": self.message, "queue_position": position,
                "result": self.result if self.state == "done" else None}

    def tick(self, k: int) -> None:
        self.done = k + 1
        self.check()

    def check(self) -> None:
        """Stop here if the user cancelled the job or its outputs passed the budget."""
        if self.cancel.is_set():
            raise JobCancelled()
        if time.monotonic() - self.checked > BUDGET_CHECK_S:
            self.checked = time.monotonic()
            self.check_budget()

    def check_budget(self) -> None:
        if self.budget_mb is not None and _bytes_under(self.folder) > self.budget_mb * 2**20:
            raise OverBudget(f"{self.name}: its outputs passed this server's budget of {self.budget_mb:g} MB "
                             f"per job (avrsp serve --max-output-mb)")


def _bytes_under(folder: Path) -> int:
    total, todo = 0, [folder]
    while todo:
        try:
            entries = os.scandir(todo.pop())
        except FileNotFoundError:
            continue
        with entries:
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
                    else:
                        total += e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # a temporary file renamed meanwhile
                    pass
    return total


class Jobs:
    """Jobs run one at a time on a background thread, first come first served; at most
    ``max_waiting`` wait."""

    def __init__(self, root: Path, budget_mb: float | None = None, max_waiting: int = MAX_WAITING):
        self.root, self.budget_mb, self.max_waiting = root, budget_mb, max_waiting
        self.jobs: dict[str, Job] = {}
        self.waiting: list[tuple[Job, Callable[[Job], dict]]] = []
        self.lock = threading.Condition()
        self.stopping = False
        self.worker = threading.Thread(target=self._work, name="avrsp-serve-jobs", daemon=True)
        self.worker.start()

    def full(self) -> str | None:
        """Why no job can be queued now, or None."""
        with self.lock:
            if self.stopping:
                return "the server is shutting down"
            if len(self.waiting) >= self.max_waiting:
                return (f"{len(self.waiting)} jobs are waiting already, the most this server queues; "
                        f"try again when one has finished")
        return None

    def submit(self, kind: str, name: str, run: Callable[[Job], dict], upload: Path | None = None) -> Job:
        with self.lock:
            refused = self.full()
            if refused:
                raise QueueFull(refused)
            job_id = secrets.token_urlsafe(16)
            folder = self.root / job_id
            folder.mkdir(parents=True)
            job = Job(job_id, kind, name, folder, budget_mb=self.budget_mb, upload=upload)
            self.jobs[job_id] = job
            self.waiting.append((job, run))
            self.lock.notify()
        return job

    def get(self, job_id: str) -> tuple[Job, int | None] | None:
        with self.lock:
            job = self.jobs.get(job_id)
            position = next((i + 1 for i, (j, _) in enumerate(self.waiting) if j.id == job_id), None)
        return (job, position) if job is not None else None

    def cancel(self, job: Job) -> None:
        """A queued job ends at once (its place is free again); a running one at its next frame."""
        with self.lock:
            job.cancel.set()
            queued = next((i for i, (j, _) in enumerate(self.waiting) if j is job), None)
            if queued is None:
                return
            del self.waiting[queued]
            gone = self._end(job, "cancelled", "cancelled")
        _remove(gone)

    def stop(self, seconds: float) -> None:
        """Cancel every job, and wait up to ``seconds`` for the running one to stop."""
        gone = []
        with self.lock:
            self.stopping = True
            for job in self.jobs.values():
                job.cancel.set()
            for job, _ in self.waiting:
                gone += self._end(job, "cancelled", "cancelled")
            self.waiting.clear()
            self.lock.notify_all()
        _remove(gone)
        self.worker.join(seconds)

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.stopping:
                    self.lock.wait()
                if self.stopping:
                    return
                job, run = self.waiting.pop(0)
                job.state = "running"
            result, message = {}, ""
            try:
                result, state = run(job), "done"
            except JobCancelled:
                state, message = "cancelled", "cancelled"
            except Exception as e:  # noqa: BLE001 - any failure is the job's, told to its page
                state, message = "failed", one_line(e)
            with self.lock:
                gone = self._end(job, state, message, result)
            _remove(gone)

    def _end(self, job: Job, state: str, message: str, result: dict | None = None) -> list[Path]:
        """Record how ``job`` ended and forget what is beyond the limits; under the lock.
        Returns the folders to remove (outside the lock: a large one takes a while)."""
        job.result, job.message, job.finished = result or {}, message, time.time()
        job.state = state
        gone = [job.upload] if job.upload is not None else []
        if state != "done":
            gone.append(job.folder)
        results = sorted((j for j in self.jobs.values() if j.state == "done"), key=lambda j: j.finished)
        for old in results[:-KEEP_RESULTS]:
            gone.append(old.folder)
            del self.jobs[old.id]
        ended = sorted((j for j in self.jobs.values() if j.state in ("failed", "cancelled")), key=lambda j: j.finished)
        for old in ended[:-KEEP_ENDED]:
            del self.jobs[old.id]
        return gone


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ------------------------------------------------------------------ what a job computes
