"""Scoring other models' maps (``avrsp score``): a folder of predicted
maps per video, read and numbered as the benchmark's tools number them, and scored
exactly as :mod:`avrsp.evaluate` scores its own (docs/evaluation.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.datasets import DataError
from .evaluate import EvalError, EvalWarning, Item, score_video

_NUM = re.compile(r"(\d+)(?!.*\d)")
PREDICTION_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def prediction_files(folder: Path) -> dict[int, list[Path]]:
    """The number in each image's name (its last digits) → the files carrying it."""
    out: dict[int, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in PREDICTION_SUFFIXES:
            m = _NUM.search(p.stem)
            if m:
                out.setdefault(int(m.group(1)), []).append(p)
    return out


def _check_duplicates(folder: Path, files: dict[int, list[Path]]) -> None:
    dupes = {num: ps for num, ps in files.items() if len(ps) > 1}
    if dupes:
        num, ps = min(dupes.items())
        raise EvalError(f"{folder}: {len(dupes)} frame number(s) have more than one file, e.g. "
                        f"{ps[0].name} and {ps[1].name} (both number {num}); keep one file per frame")


def _first_number(where: Path, found: dict[str, tuple[dict[int, list[Path]], int]]) -> int:
    """0 or 1, from what the files of every video say (see :func:`read_predictions`)."""
    zero = [key for key, (files, _) in found.items() if 0 in files]
    one = [key for key, (files, n) in found.items() if files and max(files) >= n]
    both = sorted(set(zero) & set(one))
    if both:
        n = found[both[0]][1]
        raise EvalError(f"{where}: {both[0]} has files numbered 0 and {n}: more numbers than its {n} frames; "
                        f"pass --first-frame 0 or 1")
    if zero and one:
        raise EvalError(f"{where}: some videos are numbered from 0 (e.g. {zero[0]}), others from 1 "
                        f"(e.g. {one[0]}); number every video alike, or pass --first-frame")
    if not (zero or one):
        raise EvalError(f"{where}: cannot tell whether file numbers start at 0 or 1 (no file is numbered 0, "
                        f"none numbered like a video's last frame); expected <…N>.png with N = 1…n (as "
                        f"eyeMap_00001.png) or 0…n−1; pass --first-frame 0 or 1")
    return 0 if zero else 1


def folder_frames(folder: Path, n: int, first: int | None = None) -> dict[int, Path]:
    """Frame (0-based) → image of one video's folder of maps, numbered as
    :func:`read_predictions` reads them."""
    files = prediction_files(folder)
    _check_duplicates(folder, files)
    first = _first_number(folder, {folder.name: (files, n)}) if first is None else first
    return {num - first: ps[0] for num, ps in files.items() if 0 <= num - first < n}


@dataclass
class PredictionIndex:
    """What ``read_predictions`` found: per item key, frame (0-based) → file; the
    numbering it used; the frames without a prediction and the files it ignored."""

    files: dict[str, dict[int, Path]]
    first: int
    inferred: bool
    missing: list[tuple[str, int]]
    extra: list[Path]

    def summary(self) -> list[str]:
        n = sum(len(f) for f in self.files.values())
        how = "inferred" if self.inferred else "as given"
        lines = [f"read {n} prediction file(s) for {len(self.files)} video(s); file numbers start at "
                 f"{self.first} ({how}): frame 1 is number {self.first}"]
        if self.missing:
            key, k = self.missing[0]
            lines.append(f"missing predictions: {len(self.missing)} frame(s), e.g. {key} frame {k + 1} "
                         f"(number {k + self.first}); those frames are left out")
        if self.extra:
            lines.append(f"ignored: {len(self.extra)} file(s) numbered past their video's frames, e.g. "
                         f"{self.extra[0]}")
        return lines


def read_predictions(pred_dir: Path, items: list[Item], first: int | None = None) -> PredictionIndex:
    """Index the predicted maps ``PRED_DIR/[<dataset>/]<video>/<…N>.png`` of every item.

    N is the last number in a file's name. Whether N counts frames from 0 or from 1 is
    inferred from the files only when they say so: a video with a file numbered 0 is
    numbered from 0, one with a file numbered n (its frame count) from 1. If no video
    says, or videos disagree, it is an error asking for ``first``. Two files with one
    number are an error naming both.
    """
    found: dict[str, tuple[dict[int, list[Path]], int]] = {}
    for item in items:
        folder = next((d for d in (pred_dir / item.dataset / item.video.name, pred_dir / item.video.name)
                       if d.is_dir()), None)
        if folder is None:
            raise EvalError(f"{pred_dir}: no predictions for {item.dataset}/{item.video.name} "
                            f"(expected {pred_dir / item.video.name}/)")
        files = prediction_files(folder)
        _check_duplicates(folder, files)
        found[item.key] = (files, len(item.video))
    inferred = first is None
    if first is None:
        first = _first_number(pred_dir, found)
    index = PredictionIndex({}, first, inferred, [], [])
    for key, (files, n) in found.items():
        index.files[key] = {num - first: ps[0] for num, ps in files.items() if 0 <= num - first < n}
        index.extra += [ps[0] for num, ps in sorted(files.items()) if not 0 <= num - first < n]
        index.missing += [(key, k) for k in range(n) if k not in index.files[key]]
    return index


def score_folder(index: PredictionIndex, items: list[Item], *, postprocess: bool, seed: int = 0,
                 progress: bool = True) -> list[dict]:
    """Score the predicted maps ``read_predictions`` indexed, exactly as ``evaluate`` scores
    its own. An unreadable prediction is reported once and left out like a missing one."""
    from tqdm import tqdm

    from .data.datasets import read_map

    records = []
    for item in tqdm(items, unit="video", disable=not progress):
        files = index.files[item.key]

        def pred(k: int, files=files) -> np.ndarray | None:
            if k not in files:
                return None
            try:
                return read_map(files[k]).astype(np.float64)
            except DataError as e:
                import warnings

                warnings.warn(f"{e}; frame left out", EvalWarning, stacklevel=2)
                return None

        record = score_video(item.video, pred, postprocess=postprocess, seed=seed)
        records.append({**record, "dataset": item.dataset, "split": item.split})
    return records
