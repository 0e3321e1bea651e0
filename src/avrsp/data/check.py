"""``avrsp data check ROOT``: what a dataset folder holds, split by split, and every file
that is missing, unreadable or all zero, named.

The exit status is for scripts: 0 when nothing is wrong, 1 when anything is (a bad,
missing or all-zero file, a listed video or frame that is not there, a split without a
usable video, no dataset at all). Notes that need no action, such as a fold list whose
frame count differs from the frames on disk, do not change it.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..media import MediaError
from .datasets import (AnnotatedVideo, DataError, DataNote, DataWarning, ImageFrames, VideoFileFrames,
                       dhf1k_layout, dhf1k_videos, every_warning, probe_rate, read_fixations, read_fold_list, read_map,
                       stavis_databases, stavis_fold_list, stavis_videos)

#: How many files of one kind are named per video; the rest are counted.
EXAMPLES = 3

#: Problem kinds, in the order they are reported.
KINDS = ("unreadable frame", "unreadable map", "unreadable fixations", "unreadable audio", "all-zero map",
         "missing map", "missing fixations")


@dataclass
class VideoStats:
    frames: int = 0
    missing_maps: int = 0
    missing_fixations: int = 0
    zero_maps: int = 0
    unreadable: int = 0
    audio_rate: int | None = None
    #: kind → [(file, cause)]; a missing file is named by the frame it belongs to.
    problems: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, kind: str, what: str, cause: str = "") -> None:
        self.problems.setdefault(kind, []).append((what, cause))


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


def _cause(e: Exception) -> str:
    return str(e).split(": ", 1)[-1]


def _frame_fault(path: Path) -> str | None:
    """Why a frame image cannot be used, or None. The whole image is decoded, since a
    truncated JPEG has a valid header (the slowest part of a check on DHF1K)."""
    try:
        with Image.open(path) as im:
            im.load()
        return None
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        return f"cannot read image ({e.__class__.__name__}: {str(e).splitlines()[0]})"


def _video_stats(v: AnnotatedVideo, annotated: bool) -> VideoStats:
    """Counts and named problems of one video. ``annotated`` is False for DHF1K's test
    videos, whose annotations are withheld by the benchmark: no map is missing there."""
    s = VideoStats()
    try:
        s.frames = len(v)
    except (DataError, MediaError) as e:
        s.unreadable += 1
        s.add("unreadable frame", str(getattr(v.frames, "path", v.name)), _cause(e))
        return s
    if isinstance(v.frames, ImageFrames):
        for p in v.frames.paths:
            cause = _frame_fault(p)
            if cause:
                s.unreadable += 1
                s.add("unreadable frame", str(p), cause)
    for k in range(s.frames):
        path = v.maps[k] if k < len(v.maps) else None
        if path is None:
            if annotated:
                s.missing_maps += 1
                s.add("missing map", f"frame {k + 1}")
        else:
            try:
                if not read_map(path).any():
                    s.zero_maps += 1
                    s.add("all-zero map", str(path))
            except DataError as e:
                s.unreadable += 1
                s.add("unreadable map", str(path), _cause(e))
        path = v.fixation_files[k] if k < len(v.fixation_files) else None
        if path is None:
            if annotated:
                s.missing_fixations += 1
                s.add("missing fixations", f"frame {k + 1}")
        else:
            try:
                read_fixations(path)
            except DataError as e:
                s.unreadable += 1
                s.add("unreadable fixations", str(path), _cause(e))
    if v.audio_path is not None:
        s.audio_rate = probe_rate(v.audio_path)
        if s.audio_rate is None:
            s.unreadable += 1
            s.add("unreadable audio", str(v.audio_path), "no audio stream PyAV can open")
    return s


def _report(dataset: str, split: str, part: str, listed: int, videos: list[AnnotatedVideo],
            cache: dict[tuple[str, str], tuple[AnnotatedVideo, VideoStats]], annotated: bool = True) -> SplitReport:
    r = SplitReport(dataset, split, part, listed, found=len(videos))
    for v in videos:
        key = (v.dataset, v.name)
        if key not in cache:
            cache[key] = (v, _video_stats(v, annotated))
        s = cache[key][1]
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
            reports.append(_report("DHF1K", "-", part, len(videos), videos, cache, annotated=part != "test"))
    return reports


@dataclass
class CheckResult:
    """What ``check`` found: per folder its layout and split reports, every video's
    named problems, the warnings raised while reading (``problems`` count against the
    data, ``notes`` do not)."""

    found: list[tuple[Path, str, list[SplitReport]]]
    videos: list[tuple[AnnotatedVideo, VideoStats]]
    warnings: list[str]
    notes: list[str]

    @property
    def unusable(self) -> list[tuple[Path, SplitReport]]:
        return [(f, r) for f, _, reports in self.found for r in reports if not r.usable]

    @property
    def problem_count(self) -> int:
        files = sum(len(items) for _, s in self.videos for items in s.problems.values())
        return files + len(self.warnings) + len(self.unusable)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


def check(root: str | Path) -> CheckResult:
    """Check every dataset layout at ``root`` and in its immediate sub-folders.

    Raises DataError when no layout is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    found = []
    cache: dict = {}
    with warnings.catch_warnings(record=True) as caught, every_warning():
        warnings.simplefilter("always", DataWarning)
        for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
            if (folder / "fold_lists").is_dir():
                found.append((folder, "STAViS", check_stavis(folder, cache)))
            if dhf1k_layout(folder) is not None:
                found.append((folder, f"DHF1K ({dhf1k_layout(folder)})", check_dhf1k(folder, cache)))
    if not found:
        raise DataError(f"{root}: no dataset layout found (STAViS: fold_lists/, video_frames/, annotations/; "
                        f"DHF1K: video/ + annotation/ or <split>/<vid>/images)")
    raised = [w for w in caught if issubclass(w.category, DataWarning)]
    notes = list(dict.fromkeys(str(w.message) for w in raised if issubclass(w.category, DataNote)))
    problems = list(dict.fromkeys(str(w.message) for w in raised if not issubclass(w.category, DataNote)))
    return CheckResult(found, list(cache.values()), problems, notes)


def _video_folder(v: AnnotatedVideo) -> str:
    if isinstance(v.frames, ImageFrames) and v.frames.paths:
        return str(v.frames.paths[0].parent)
    if isinstance(v.frames, VideoFileFrames):
        return str(v.frames.path)
    return f"{v.dataset}/{v.name}"


def _frames_list(items: list[tuple[str, str]]) -> str:
    """'frames 3, 5–9, 12' from 'frame N' entries."""
    numbers = sorted(int(re.sub(r"\D", "", what)) for what, _ in items)
    runs, start = [], numbers[0]
    for a, b in zip(numbers, numbers[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}–{a}")
            start = b
    shown = runs[:EXAMPLES * 2]
    return "frame" + ("s " if len(numbers) > 1 else " ") + ", ".join(shown) + (", …" if len(runs) > len(shown) else "")


def format_problems(result: CheckResult) -> list[str]:
    """One line per video and kind of problem: the count and the first few files."""
    lines = []
    for v, s in sorted(result.videos, key=lambda vs: _video_folder(vs[0])):
        for kind in KINDS:
            items = s.problems.get(kind, [])
            if not items:
                continue
            n = len(items)
            label = f"{n} {kind}" + ("" if kind.endswith("s") or n == 1 else "s")
            if kind.startswith("missing"):
                lines.append(f"{v.dataset}/{v.name}: {label}: {_frames_list(items)}")
                continue
            shown = [f"{what}" + (f" ({cause})" if cause else "") for what, cause in items[:EXAMPLES]]
            more = f", and {n - EXAMPLES} more" if n > EXAMPLES else ""
            lines.append(f"{v.dataset}/{v.name}: {label}: " + ", ".join(shown) + more)
    return lines


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

