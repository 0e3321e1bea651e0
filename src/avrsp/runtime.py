"""Where and how avrsp runs: the device and precision ``auto`` resolve to, the default
batch and streams, the process's allocator setting, and the threads that overlap
decoding and writing with the model (:func:`prefetch`, :class:`Background`) and run
forward passes side by side (:func:`in_streams`). The sliding-window inference that
uses them is :mod:`avrsp.inference`.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import os
import platform
import queue
import threading
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from .config import ConfigError

#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
#: Environment variables through which glibc's allocator is configured at start; where one
#: is set, :func:`keep_freed_memory` leaves the allocator as the user set it.
_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX",
               "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Make glibc's allocator keep the memory a process frees for its next allocations:
    every block from the heap (none mapped on its own), the heap never trimmed, one
    arena for every thread. Returns whether it did (only under glibc, and not where the
    environment configures its allocator already).

    Why: glibc maps each block above 32 MiB (a paper-size activation: 33 MiB in bf16 at
    batch 1) on its own and unmaps it when freed, so every forward pass faulted its
    activations in afresh from zeroed pages, tens of thousands of faults a window. Kept,
    paper-size windows run faster, at the cost of a higher peak resident memory, and a
    model of many small operators in two streams, whose allocations now take one lock,
    runs slower (docs/performance.md has the measured trade). A
    setting of the whole process: the ``avrsp`` command makes it for its own, a program
    that imports avrsp decides for itself (docs/predict.md)."""
    # musl's mallopt does nothing, and other systems have none.
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in _MALLOC_ENV):
        return False
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # One arena: another thread's arena maps a block larger than its 64 MiB heaps on its
    # own whatever M_MMAP_MAX says, and the streams' activations are such blocks.
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))  # -1: never trim (mallopt(3))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is present, else ``cpu``; CUDA asked for but absent
    is a ConfigError, not a fallback."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{device}' asked for but CUDA is not available")
    return device


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 in hardware: CUDA GPUs that support it, and CPUs
    with AMX or AVX-512 BF16. Elsewhere bf16 is emulated and slower than fp32
    (docs/performance.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return False


#: Environment variable that decides what ``auto`` resolves to, whatever the hardware:
#: ``fp32`` or ``bf16``. The suite runs under both (README, Testing), so that a test
#: which depends on the precision fails on every machine, not only on some CPUs.
AUTO_PRECISION_ENV = "AVRSP_AUTO_PRECISION"


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``auto`` → ``bf16`` where :func:`native_bf16` holds, else ``fp32``; the environment
    variable ``AVRSP_AUTO_PRECISION=fp32|bf16`` overrides that choice (explicit
    ``fp32``/``bf16`` arguments are never overridden)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    forced = os.environ.get(AUTO_PRECISION_ENV, "").strip()
    if forced:
        if forced not in ("fp32", "bf16"):
            raise ConfigError(f"{AUTO_PRECISION_ENV}={forced!r}: expected fp32 or bf16")
        return forced
    return "bf16" if native_bf16(device) else "fp32"


def default_batch(device: str | torch.device) -> int:
    """Windows per forward pass when none is given: the fastest measured at paper size
    (docs/performance.md): 8 on CUDA, 4 on the CPU."""
    return 8 if torch.device(resolve_device(str(device))).type == "cuda" else 4


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how a model runs, given once (the command line's ``--device``,
    ``--precision``, ``--batch``, ``--streams``, ``--cuda-graphs``, or Python) and taken
    by :class:`avrsp.Predictor`, :func:`avrsp.evaluate.run_evaluation` and ``avrsp
    serve``. :meth:`resolve` turns ``auto`` and ``None`` into what they mean here, once.

    ``device``: auto (CUDA when present), cpu, cuda, cuda:N. ``precision``: auto, fp32,
    bf16 (:func:`resolve_precision`); in inference bf16 casts the weights
    (:func:`avrsp.graph.prepare`), where training's bf16 is autocast. ``batch``:
    windows per forward pass (None: :func:`default_batch`). ``streams``: forward passes
    at once (None: :func:`default_streams` of the prepared model). ``graphs``: replay the
    forward pass from CUDA graphs (None: off)."""

    device: str = "auto"
    precision: str = "auto"
    batch: int | None = None
    streams: int | None = None
    graphs: bool | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("batch", "streams"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {value}")

    def resolve(self) -> Runtime:
        """The device, precision and batch this machine gives ``auto`` and ``None``
        (a CUDA device asked for but absent is a ConfigError); streams stay ``None``
        until a model is prepared, as they depend on where it runs."""
        device = resolve_device(self.device)
        return dataclasses.replace(self, device=device, precision=resolve_precision(self.precision, device),
                                   batch=self.batch or default_batch(device))

    def prepare(self, model):
        """:func:`avrsp.graph.prepare` of ``model`` for this runtime (resolved first)."""
        from .graph import prepare

        rt = self.resolve()
        return prepare(model, rt.device, rt.precision, graphs=rt.graphs)

    def streams_for(self, model: torch.nn.Module) -> int:
        return self.streams or default_streams(model)


_T = TypeVar("_T")
_R = TypeVar("_R")
_DONE = object()


def prefetch(items: Iterable[_T], depth: int) -> Iterator[_T]:
    """``items``, produced by a background thread at most ``depth`` ahead of the consumer.

    Decoding (PyAV releases the GIL) then overlaps the network's forward pass. An
    exception in the producer is raised in the consumer; closing the consumer early
    stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_DONE, None))
        except BaseException as e:  # handed to the consumer, raised there
            q.put((_DONE, e))

    thread = threading.Thread(target=produce, name="avrsp-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


class Background:
    """Runs submitted calls in order on one background thread, at most ``depth`` waiting,
    so writing outputs (PNG compression, video encoding: both release the GIL) overlaps
    the next forward passes. The first exception is raised by the next ``submit`` or by
    ``close``, which waits for every call to finish."""

    def __init__(self, depth: int = 8):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None   # once set, later calls are skipped
        self._raised = False
        self._thread = threading.Thread(target=self._work, name="avrsp-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            call = self._q.get()
            if call is None:
                return
            if self._error is None:
                try:
                    call[0](*call[1])
                except BaseException as e:  # raised in the submitting thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def submit(self, fn, *args) -> None:
        self._raise()
        self._q.put((fn, args))

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._raise()


def default_streams(model: torch.nn.Module) -> int:
    """Forward passes run at once for ``model``: 2 on a CPU with 2 threads or more, else 1
    (CUDA, or a process given one thread, as each of ``torchrun``'s CPU processes is).
    Measured on 2 cores only (docs/performance.md)."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    return 2 if on_cpu and torch.get_num_threads() >= 2 else 1


def in_streams(fn: Callable[[_T], _R], items: Iterable[_T], streams: int) -> Iterator[_R]:
    """``fn(item)`` for each item, in order, computed by ``streams`` worker threads at once,
    torch's CPU threads shared out among them (OpenMP counts are per thread; the calling
    thread's count, and the one new threads start with, stay as they were).

    Why: one forward pass over every thread waits at the end of each operator for its
    slowest thread, so when the decoder or the writer takes a core, the other waits too.
    Streams do not wait for each other, so on a few cores two streams of one thread each
    keep both busy (docs/performance.md measures it). At most ``streams`` + 1 items are in
    flight; closing the iterator early waits for the running ones. The threads are the
    process's, kept between calls (:func:`_stream_pool`)."""
    if streams <= 1:
        yield from map(fn, items)
        return
    pool = _stream_pool(streams)
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > streams:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        futures.wait(pending)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_POOLS.clear)  # a forked child has none of the threads


def _stream_pool(streams: int) -> ThreadPoolExecutor:
    """``streams`` threads sharing out the calling thread's torch thread count, started on
    first use and kept for the process's life (one set per count; idle threads wait on
    a queue). Started per call, a new thread's first forward passes are slower (its
    allocator and kernels warm up), which every video would pay."""
    threads = torch.get_num_threads()
    with _POOLS_LOCK:
        pool = _POOLS.get((streams, threads))
        if pool is not None:
            return pool
        shares = iter([max(1, threads // streams + (i < threads % streams)) for i in range(streams)])

        def init() -> None:  # in each new thread, before its first task
            # A thread's first call into torch sets its count from the process's last
            # set_num_threads, so make that call before setting this thread's own.
            torch.get_num_threads()
            torch.set_num_threads(next(shares))

        pool = ThreadPoolExecutor(streams, thread_name_prefix="avrsp-stream", initializer=init)
        # Every thread starts now: each holds the barrier until all have, so no submit
        # finds an idle one to reuse.
        everyone = threading.Barrier(streams)
        futures.wait([pool.submit(everyone.wait) for _ in range(streams)])
        torch.set_num_threads(threads)  # the count new threads start with, as it was
        _POOLS[(streams, threads)] = pool
        return pool
