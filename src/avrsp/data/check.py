"""``avrsp data check ROOT``: what a dataset folder holds, split by split."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import (AnnotatedVideo, DataError, DataWarning, dhf1k_layout, dhf1k_videos, probe_rate,
                       read_fixations, read_fold_list, read_map, stavis_databases, stavis_fold_list,
                       stavis_videos)


@dataclass
class VideoStats:
    frames: int = 0
    missing_maps: int = 0
    missing_fixations: int = 0
    zero_maps: int = 0
    unreadable: int = 0
    audio_rate: int | None = None


@dataclass
class SplitReport:
    dataset: str
    split: str
    part: str
    listed: int
    found: int = 0
    stats: VideoStats = field(default_factory=VideoStats)
    audio_rates: Counter = field(default_factory=Counter)

    @property
    def usable(self) -> bool:
        return self.found > 0 and self.stats.frames > 0


def _video_stats(v: AnnotatedVideo) -> VideoStats:
    s = VideoStats(frames=len(v))
    for k in range(len(v)):
        if v.maps[k] is None:
            s.missing_maps += 1
        else:
            try:
                if not read_map(v.maps[k]).any():
                    s.zero_maps += 1
            except DataError:
                s.unreadable += 1
        if v.fixation_files[k] is None:
            s.missing_fixations += 1
        else:
            try:
                read_fixations(v.fixation_files[k])
            except DataError:
                s.unreadable += 1
    if v.audio_path is not None:
        s.audio_rate = probe_rate(v.audio_path)
    return s


def _report(dataset: str, split: str, part: str, listed: int, videos: list[AnnotatedVideo],
            cache: dict[tuple[str, str], VideoStats]) -> SplitReport:
    r = SplitReport(dataset, split, part, listed, found=len(videos))
    for v in videos:
        key = (v.dataset, v.name)
        if key not in cache:
            cache[key] = _video_stats(v)
        s = cache[key]
        for name in ("frames", "missing_maps", "missing_fixations", "zero_maps", "unreadable"):
            setattr(r.stats, name, getattr(r.stats, name) + getattr(s, name))
        r.audio_rates[s.audio_rate if s.audio_rate is not None else "none"] += 1
    return r


def check_stavis(root: Path, cache: dict) -> list[SplitReport]:
    reports = []
    for db in stavis_databases(root):
        fixed = stavis_fold_list(root, db, "train", None).is_file()
        splits = [None] if db == "DIEM" or fixed else [s for s in (1, 2, 3)
                                                        if stavis_fold_list(root, db, "train", s).is_file()]
        for split in splits:
            for part in ("train", "test"):
                lst = stavis_fold_list(root, db, part, split)
                if not lst.is_file():
                    continue
                listed = len(read_fold_list(lst))
                videos = stavis_videos(root, db, part, split)
                reports.append(_report(db, "fixed" if split is None else str(split), part, listed, videos, cache))
    return reports


def check_dhf1k(root: Path, cache: dict) -> list[SplitReport]:
    reports = []
    for part in ("train", "val", "test"):
        videos = dhf1k_videos(root, part)
        if videos or part != "test":
            reports.append(_report("DHF1K", "-", part, len(videos), videos, cache))
    return reports


def check(root: str | Path) -> tuple[list[tuple[Path, str, list[SplitReport]]], list[str]]:
    """Check every dataset layout at ``root`` and in its immediate sub-folders.

    Returns ``[(folder, layout, reports)]`` and the warnings raised while reading.
    Raises DataError when no usable layout is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    found = []
    cache: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
            if (folder / "fold_lists").is_dir():
                found.append((folder, "STAViS", check_stavis(folder, cache)))
            if dhf1k_layout(folder) is not None:
                found.append((folder, f"DHF1K ({dhf1k_layout(folder)})", check_dhf1k(folder, cache)))
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    if not found:
        raise DataError(f"{root}: no dataset layout found (STAViS: fold_lists/, video_frames/, annotations/; "
                        f"DHF1K: video/ + annotation/ or <split>/<vid>/images)")
    return found, messages


def format_report(found: list[tuple[Path, str, list[SplitReport]]]) -> str:
    lines = []
    head = (f"{'dataset':<12} {'split':<6} {'part':<5} {'videos':>9} {'frames':>7} {'no map':>7} "
            f"{'no fix':>7} {'zero map':>8} {'bad file':>8}  audio rates")
    for folder, layout, reports in found:
        lines += [f"{folder}  [{layout}]", head]
        for r in reports:
            s = r.stats
            rates = ", ".join(f"{k} Hz×{n}" if k != "none" else f"none×{n}" for k, n in sorted(
                r.audio_rates.items(), key=lambda kv: str(kv[0])))
            flag = "" if r.usable else "  UNUSABLE"
            lines.append(f"{r.dataset:<12} {r.split:<6} {r.part:<5} {f'{r.found}/{r.listed}':>9} {s.frames:>7} "
                         f"{s.missing_maps:>7} {s.missing_fixations:>7} {s.zero_maps:>8} {s.unreadable:>8}  "
                         f"{rates}{flag}")
        lines.append("")
    return "\n".join(lines)
