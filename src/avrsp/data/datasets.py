"""Readers for the dataset layouts of docs/datasets.md.

A dataset on disk becomes a list of :class:`AnnotatedVideo`. Each one gives
full-resolution access for evaluation (``frame``, ``saliency_map``, ``fixations``,
``audio``). :class:`avrsp.data.clips.ClipDataset` turns such lists into training samples
(T consecutive frames, the clip's audio, the last frame's map and fixations at the
training size).

What exists on disk decides. The number of frames is the number of frame images (or
decoded frames) found. A fold list that disagrees gets one warning. A missing or
unreadable map or fixation file is reported once with its path and that frame is never
a training target. All-zero maps are never training targets either.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..media import SOUNDNET_RATE, MediaError, iter_frames, read_audio, resize_rgb

STAVIS_DATABASES = ("AVAD", "Coutrot_db1", "Coutrot_db2", "DIEM", "ETMD_av", "SumMe")
DHF1K_SPLITS = {"train": range(1, 601), "val": range(601, 701), "test": range(701, 1001)}


class DataError(Exception):
    """A dataset that cannot be used; the message names the path and the cause."""


class DataWarning(UserWarning):
    """Something skipped or resolved in the data, reported once with its path."""


class DataNote(DataWarning):
    """A documented quirk that needs no action (``avrsp data check`` does not fail on it)."""


_reported: set[str] = set()


def _warn_once(message: str, category: type[DataWarning] = DataWarning) -> None:
    if message not in _reported:
        _reported.add(message)
        warnings.warn(message, category, stacklevel=3)


@contextlib.contextmanager
def every_warning():
    """Within this block, warnings already reported once in this process are raised again
    (``avrsp data check`` must list every problem, whatever was read before it)."""
    global _reported
    saved, _reported = _reported, set()
    try:
        yield
    finally:
        _reported = saved | _reported


# ------------------------------------------------------------------ files

def read_image(path: Path) -> np.ndarray:
    """RGB uint8 H×W×3."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read image ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None


def read_map(path: Path) -> np.ndarray:
    """A continuous saliency map as float32 in [0, 1] (8-bit grey levels / 255)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read map ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None


def read_fixations(path: Path) -> np.ndarray:
    """A binary fixation map (bool H×W) from a .png (non-zero = fixation) or a MATLAB .mat
    file holding variable ``I`` (DHF1K) or ``eyeMap`` (STAViS)."""
    if path.suffix.lower() != ".mat":
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L")) > 0
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            raise DataError(f"{path}: cannot read fixations ({e.__class__.__name__})") from None
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except NotImplementedError:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save with -v7") from None
    except Exception as e:  # scipy raises several types for damaged files
        raise DataError(f"{path}: cannot read .mat file ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    for key in ("eyeMap", "I"):
        if key in data:
            arr = np.asarray(data[key])
            if arr.ndim != 2 or arr.size == 0:
                raise DataError(f"{path}: variable '{key}' is not a 2-D map (shape {arr.shape})")
            return arr > 0
    raise DataError(f"{path}: no variable 'eyeMap' or 'I' in the .mat file")


# ------------------------------------------------------------------ videos

class FrameSource:
    """A video's frames, 0-based: random access (``read``) and in order (``stream``)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        raise NotImplementedError

    def stream(self, size: tuple[int, int]):
        """Every frame in order, resized to (height, width)."""
        raise NotImplementedError


def resize_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frames are resized as decoded video is (swscale's area filter), so training on
    extracted images and predicting on video files see the same pixels."""
    return resize_rgb(rgb, size)


class ImageFrames(FrameSource):
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def stream(self, size: tuple[int, int]):
        for p in self.paths:
            yield resize_frame(read_image(p), size)

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        # Clips of short videos repeat frame 0: read each file once.
        images = {i: read_image(self.paths[i]) for i in set(indices)}
        return [images[i] for i in indices]


class VideoFileFrames(FrameSource):
    """Frames decoded from a video file (e.g. DHF1K's .AVI release).

    ``read`` decodes from the start up to the last frame asked for, keeping only the frames
    asked for, so memory is bounded by the request, not the video. Frame counts come
    from decoding once (container headers are unreliable for AVI).
    """

    def __init__(self, path: Path):
        self.path = path

    @cached_property
    def _count(self) -> int:
        return sum(1 for _ in iter_frames(self.path))

    def __len__(self) -> int:
        return self._count

    def stream(self, size: tuple[int, int]):
        for rgb, _ in iter_frames(self.path, size=size):
            yield rgb

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        wanted = set(indices)
        last = max(wanted)
        got: dict[int, np.ndarray] = {}
        for k, (rgb, _) in enumerate(iter_frames(self.path)):
            if k in wanted:
                got[k] = rgb
            if k >= last:
                break
        missing = wanted - got.keys()
        if missing:
            raise DataError(f"{self.path}: frame {min(missing) + 1} is past the video's end ({len(got)} decoded)")
        return [got[i] for i in indices]


@dataclass
class AnnotatedVideo:
    """One video of a dataset with its annotations; every index is 0-based.

    ``maps[k]`` / ``fixations[k]`` are the files of frame k (``None`` if absent on disk).
    """

    dataset: str
    name: str
    fps: float
    frames: FrameSource
    maps: list[Path | None]
    fixation_files: list[Path | None]
    audio_path: Path | None = None
    _invalid: set[int] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, k: int) -> np.ndarray:
        return self.frames.read([k])[0]

    def saliency_map(self, k: int) -> np.ndarray | None:
        """The continuous ground truth of frame k at full resolution, or None if missing/unreadable."""
        return self._annotation(self.maps, k, read_map)

    def fixations(self, k: int) -> np.ndarray | None:
        """The binary fixations of frame k at full resolution, or None if missing/unreadable."""
        return self._annotation(self.fixation_files, k, read_fixations)

    @staticmethod
    def _annotation(files: list[Path | None], k: int, reader) -> np.ndarray | None:
        path = files[k] if k < len(files) else None
        if path is None:
            return None
        try:
            return reader(path)
        except DataError as e:
            _warn_once(str(e))
            return None

    @cached_property
    def audio(self) -> np.ndarray | None:
        """The soundtrack, mono float32 at 22 050 Hz, or None (silence) when there is none."""
        if self.audio_path is None:
            return None
        try:
            audio = read_audio(self.audio_path, SOUNDNET_RATE, warn=False)
        except MediaError as e:
            _warn_once(f"{e}; using silence")
            return None
        if audio is None:
            _warn_once(f"{self.audio_path}: no audio track; using silence")
        return audio

    def is_target(self, k: int) -> bool:
        """Whether frame k can be a training target: its map exists, reads, and is not all zero."""
        if k in self._invalid:
            return False
        m = self.saliency_map(k)
        if m is None or not m.any():
            self._invalid.add(k)
            return False
        return True


# ------------------------------------------------------------------ STAViS layout

_FOLD_LINE = re.compile(r"^(\S+)\s+(\d+)\s+([0-9.]+)\s*$")


def read_fold_list(path: Path) -> list[tuple[str, int, float]]:
    """``<video> <n_frames> <fps>`` lines of a STAViS fold list."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read fold list ({e.strerror})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _FOLD_LINE.match(line.strip())
        if not m:
            raise DataError(f"{path}:{i}: expected '<video> <n_frames> <fps>', got {line.strip()!r}")
        out.append((m.group(1), int(m.group(2)), float(m.group(3))))
    return out


def stavis_fold_list(root: Path, db: str, part: str, split: int | None) -> Path:
    """The fold list path; DIEM (and ``split=None``) use the fixed split's list."""
    suffix = f"{part}_fps" if split is None else f"{part}_{split}_fps"
    return Path(root) / "fold_lists" / f"{db}_list_{suffix}.txt"


def stavis_databases(root: Path) -> list[str]:
    """Database names that have fold lists under ``root/fold_lists``."""
    names = set()
    for p in (Path(root) / "fold_lists").glob("*_list_*_fps.txt"):
        names.add(p.name.split("_list_")[0])
    return sorted(names)


def _numbered(folder: Path, pattern: str) -> dict[int, Path]:
    rx = re.compile(pattern)
    out = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = rx.fullmatch(p.name)
            if m:
                out[int(m.group(1))] = p
    return out


def _per_frame(files: dict[int, Path], n: int, first: int = 1) -> list[Path | None]:
    return [files.get(k + first) for k in range(n)]


def _frames_until_hole(folder: Path, frames: dict[int, Path]) -> list[Path]:
    """Frame files numbered 1, 2, … (every layout numbers from 1), ending before the first
    missing number, with one warning. Maps are matched by number, so reading on past a
    hole by counting files would pair every later frame with the wrong map."""
    n = max(frames, default=0)
    holes = [k for k in range(1, n + 1) if k not in frames]
    if holes:
        _warn_once(f"{folder}: {len(holes)} frame file(s) missing (first: frame {holes[0]}); "
                   f"using frames 1–{holes[0] - 1}")
        n = holes[0] - 1
    return [frames[k] for k in range(1, n + 1)]


def stavis_video(root: Path, db: str, name: str, listed_frames: int, fps: float) -> AnnotatedVideo:
    root = Path(root)
    frame_dir = root / "video_frames" / db / name
    frames = _numbered(frame_dir, r"img_(\d+)\.jpg")
    if not frames:
        raise DataError(f"{frame_dir}: no frames (img_%05d.jpg)")
    paths = _frames_until_hole(frame_dir, frames)
    n = len(paths)
    if n == 0:
        raise DataError(f"{frame_dir}: no img_00001.jpg (frames are numbered from 1)")
    if n != listed_frames:
        _warn_once(f"{frame_dir}: fold list says {listed_frames} frames, {n} on disk; using {n}", DataNote)
    ann = root / "annotations" / db / name
    maps = _per_frame(_numbered(ann / "maps", r"eyeMap_(\d+)\.jpg"), n)
    fix = _per_frame(_numbered(ann, r"fixMap_(\d+)\.mat"), n)
    wav = root / "video_audio" / db / name / f"{name}.wav"
    return AnnotatedVideo(db, name, fps, ImageFrames(paths), maps, fix, wav if wav.is_file() else None)


def stavis_videos(root: str | Path, db: str, part: str, split: int | None = 1) -> list[AnnotatedVideo]:
    """Videos of one database's fold list (``part`` = train/test, ``split`` 1–3; DIEM
    has one fixed split and ignores ``split``). Videos whose folder is missing are
    reported once and skipped."""
    root = Path(root)
    if db == "DIEM":
        split = None
    lst = stavis_fold_list(root, db, part, split)
    if not lst.is_file():
        raise DataError(f"{lst}: fold list not found")
    out = []
    for name, n, fps in read_fold_list(lst):
        try:
            out.append(stavis_video(root, db, name, n, fps))
        except DataError as e:
            _warn_once(f"{e}; skipping video {name}")
    return out


# ------------------------------------------------------------------ DHF1K layouts

def dhf1k_layout(root: str | Path) -> str | None:
    """'vinet' (<split>/<vid>/images), 'tased' (video/0001/0001.png), 'release'
    (video/001.AVI) or None."""
    root = Path(root)
    if any((root / s).is_dir() and any((root / s).glob("*/images")) for s in ("train", "val", "test")):
        return "vinet"
    video = root / "video"
    if video.is_dir():
        if any(p.is_dir() for p in video.iterdir()):
            return "tased"
        if any(p.suffix.lower() == ".avi" for p in video.iterdir()):
            return "release"
    return None


def _dhf1k_annotations(folder: Path, n: int) -> tuple[list[Path | None], list[Path | None]]:
    maps = _per_frame(_numbered(folder / "maps", r"(\d+)\.png"), n)
    fix_png = _numbered(folder / "fixation", r"(\d+)\.png")
    fix_mat = _numbered(folder / "fixation" / "maps", r"(\d+)\.mat")
    fixations = _per_frame({**fix_mat, **fix_png}, n)
    return maps, fixations


def dhf1k_videos(root: str | Path, split: str, fps: float = 30.0) -> list[AnnotatedVideo]:
    """DHF1K videos of ``split`` (train/val/test) in any of the three layouts. In the
    TASED and release layouts the split is by video number (1–600, 601–700, 701–1000);
    the ViNet layout has split folders. DHF1K is ~30 fps and silent."""
    root = Path(root)
    layout = dhf1k_layout(root)
    if layout is None:
        raise DataError(f"{root}: not a DHF1K layout (expected <split>/<vid>/images, video/<vid>/*.png or video/*.AVI)")
    if split not in DHF1K_SPLITS:
        raise DataError(f"unknown DHF1K split '{split}' (train, val, test)")
    out = []
    if layout == "vinet":
        for d in sorted((root / split).glob("*/images")):
            paths = _frames_until_hole(d, _numbered(d, r"(\d+)\.(?:png|jpg)"))
            if not paths:
                _warn_once(f"{d}: no frames numbered from 1; skipping")
                continue
            maps, fix = _dhf1k_annotations(d.parent, len(paths))
            out.append(AnnotatedVideo("DHF1K", d.parent.name, fps, ImageFrames(paths), maps, fix))
        return out
    ids = DHF1K_SPLITS[split]
    annotations = {int(p.name): p for p in (root / "annotation").glob("*") if p.name.isdigit()}
    if layout == "tased":
        for d in sorted((root / "video").iterdir()):
            if not (d.is_dir() and d.name.isdigit() and int(d.name) in ids):
                continue
            paths = _frames_until_hole(d, _numbered(d, r"(\d+)\.(?:png|jpg)"))
            if not paths:
                _warn_once(f"{d}: no frames numbered from 1; skipping")
                continue
            maps, fix = _dhf1k_annotations(annotations.get(int(d.name), d / "_none_"), len(paths))
            out.append(AnnotatedVideo("DHF1K", d.name, fps, ImageFrames(paths), maps, fix))
        return out
    for p in sorted((root / "video").iterdir()):
        if p.suffix.lower() != ".avi" or not p.stem.isdigit() or int(p.stem) not in ids:
            continue
        src = VideoFileFrames(p)
        folder = annotations.get(int(p.stem), p.parent / "_none_")
        n = len(_numbered(folder / "maps", r"(\d+)\.png")) or len(src)
        maps, fix = _dhf1k_annotations(folder, n)
        out.append(AnnotatedVideo("DHF1K", f"{int(p.stem):04d}", fps, src, maps, fix))
    return out


def load_split(root: str | Path, dataset: str, part: str, split: int | None = 1) -> list[AnnotatedVideo]:
    """Videos of a named dataset: 'DHF1K' (part = train/val/test) or a STAViS database
    (part = train/test, split 1–3)."""
    if dataset.upper() == "DHF1K":
        return dhf1k_videos(root, part)
    return stavis_videos(root, dataset, part, split)


def probe_rate(path: Path) -> int | None:
    """The sample rate a wav (or any media file) declares, without decoding it."""
    import av

    try:
        with av.open(str(path)) as c:
            return int(c.streams.audio[0].rate) if c.streams.audio else None
    except av.FFmpegError:
        return None


__all__ = ["AnnotatedVideo", "DataError", "DataNote", "DataWarning", "STAVIS_DATABASES", "dhf1k_layout", "dhf1k_videos",
           "load_split", "read_fixations", "read_fold_list", "read_image", "read_map", "stavis_databases",
           "stavis_videos"]
