"""The training run's data loading: which clips an epoch reads (:class:`EpochSampler`),
and one pool of loader workers for the whole run (:func:`training_loader`) that serves
training, precise BatchNorm and validation in turn (docs/training.md, "workers").

Every pass names the clips it reads as ``(set, epoch, index)`` keys: the epoch travels
with the key because workers that outlive an epoch keep their own copy of the datasets.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch

if TYPE_CHECKING:  # a type only: data stays above the running layer (docs/architecture.md)
    from ..distributed import Dist


class TrainingError(Exception):
    """A run that cannot go on (a stalled or dead loader worker); the message is one line
    that says how to continue."""


class EpochSampler(torch.utils.data.Sampler):
    """This rank's indices of one epoch: a permutation seeded by (seed, epoch), padded to
    a whole number of steps (``per_step`` clips per process, for every process), taken
    round-robin by rank, optionally from a step offset (resume). The order depends only on
    (seed, epoch), never on the process count or the number of workers."""

    def __init__(self, n: int, per_step: int, dist_: Dist, seed: int, steps: int = 0):
        self.n, self.per_step, self.dist, self.seed, self.steps = n, per_step, dist_, seed, steps
        self.epoch, self.skip_steps = 0, 0

    def set_epoch(self, epoch: int, skip_steps: int = 0) -> None:
        self.epoch, self.skip_steps = epoch, skip_steps

    def steps_per_epoch(self) -> int:
        return self.steps if self.steps else max(1, math.ceil(self.n / (self.per_step * self.dist.world)))

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        need = self.steps_per_epoch() * self.per_step * self.dist.world
        order: list[int] = []
        while len(order) < need:
            order += torch.randperm(self.n, generator=g).tolist()
        return order[:need]

    def __iter__(self):
        order = self._order()
        global_step = self.per_step * self.dist.world
        for s in range(self.skip_steps, self.steps_per_epoch()):
            chunk = order[s * global_step:(s + 1) * global_step]
            yield from chunk[self.dist.rank * self.per_step:(self.dist.rank + 1) * self.per_step]

    def __len__(self) -> int:
        return (self.steps_per_epoch() - self.skip_steps) * self.per_step


def collate(items: list[dict]) -> dict:
    """Tensors stacked along a new first axis; everything else (names, frame numbers) listed."""
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
    return out


def seed_worker(worker_id: int) -> None:
    # Items are seeded by (seed, epoch, index); only torch's own RNG needs a fixed start.
    torch.manual_seed(torch.initial_seed() % 2**31 + worker_id)


class Plan(torch.utils.data.Sampler):
    """The keys the loader's next pass reads, set before each pass."""

    def __init__(self):
        self.keys: list[tuple[str, int, int]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class ClipSets(torch.utils.data.Dataset):
    """``(name, epoch, index)`` → that item of the named ClipDataset at that epoch."""

    def __init__(self, **sets):
        self.sets = sets

    def __getitem__(self, key: tuple[str, int, int]) -> dict:
        name, epoch, index = key
        return self.sets[name].item(index, epoch)


def training_loader(sets: ClipSets, plan: Plan, *, batch_size: int, workers: int, timeout: float, seed: int,
                    pin_memory: bool) -> torch.utils.data.DataLoader:
    """The run's one DataLoader. Its workers are spawned, not forked, and live for the whole
    run: a forked child inherits the parent's threads' locks but not the threads, and the
    main process has by then run FFmpeg's threaded scaler (the validation image grid), so
    a forked worker could wait forever on a lock no thread will release. Spawned workers
    start from a fresh interpreter on every platform (spawn is also what macOS and
    Windows use), and starting them once per run keeps their start-up cost off every epoch.
    The loader draws its workers' seeds from its own generator, not from torch's global
    RNG, which dropout uses: a resumed run's dropout masks then match the uninterrupted
    run's."""
    kwargs: dict[str, Any] = {}
    if workers:
        kwargs = dict(multiprocessing_context="spawn", persistent_workers=True, worker_init_fn=seed_worker,
                      timeout=timeout)
    return torch.utils.data.DataLoader(sets, batch_size=batch_size, sampler=plan, num_workers=workers,
                                       collate_fn=collate, pin_memory=pin_memory,
                                       generator=torch.Generator().manual_seed(seed), **kwargs)


def read_batches(loader, plan: Plan, keys: Iterable[tuple[str, int, int]], stalled: Callable[[str], str]
                 ) -> Iterator[dict]:
    """The loader's batches of ``keys``. A worker that gives no batch within the loader's
    timeout, or dies, ends the run with one line (:class:`TrainingError`, ``stalled(cause)``);
    an error raised inside a worker (a bad file) reaches the caller as its own one-line error."""
    from ..media import MediaError
    from .datasets import DataError

    plan.keys = list(keys)
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (DataError, MediaError) as e:
            text = str(e).strip()
            if not text.startswith("Caught "):
                raise
            # Raised again in this process with the worker's traceback in the message.
            raise type(e)(text.splitlines()[-1].split(": ", 1)[-1]) from None
        except RuntimeError as e:
            text = str(e)
            if "DataLoader timed out" in text:
                raise TrainingError(stalled(f"no batch from the data loader's workers in {loader.timeout:g} s "
                                            "(worker_timeout)")) from None
            if "DataLoader worker" in text:
                raise TrainingError(stalled(text.splitlines()[0].rstrip(". "))) from None
            raise
        yield batch


__all__ = ["ClipSets", "EpochSampler", "Plan", "TrainingError", "collate", "read_batches", "seed_worker",
           "training_loader"]
