"""Eye-tracking recordings, read (step 1 of :mod:`avrsp.data.gaze`). A recording is one
viewer's gaze samples for one video: times in seconds from the video's onset, screen
coordinates in pixels, and a validity flag. They come from the documented plain CSV,
from EyeLink EDF files (``eyelinkio``) or EyeLink ASC files (``pymovements``); tracker
files hold whole sessions, cut into videos by the messages that mark each video's onset.

Every failure is a one-line :class:`~avrsp.data.datasets.DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .datasets import DataError

#: What the optional readers need, as one line.
EXTRA = "pip install 'avrsp[gaze]'"

#: Tracker formats by file suffix (``.csv``: the documented plain CSV).
FORMATS = {".csv": "csv", ".edf": "EyeLink EDF", ".asc": "EyeLink ASC"}

EYES = ("mean", "left", "right")


def optional_import(module: str, what: str):
    """``module``, imported; if it is missing, a DataError saying that ``what`` needs it
    and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{what} needs the '{module}' package: {EXTRA}") from None


def error_cause(e: BaseException) -> str:
    """An exception as one line: its class and its message's first line."""
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0]}" if text else e.__class__.__name__


@dataclass
class Recording:
    """One viewer's samples for one video: ``t`` in seconds from the video's onset (sorted),
    ``x``/``y`` in screen pixels (NaN where the tracker lost the eye), ``valid``."""

    viewer: str
    video: str
    source: str
    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray

    def __post_init__(self):
        order = np.argsort(self.t, kind="stable")
        self.t, self.x, self.y, self.valid = (np.asarray(a)[order] for a in (self.t, self.x, self.y, self.valid))
        self.valid = self.valid & np.isfinite(self.x) & np.isfinite(self.y)


_TRUE = {"1", "true", "yes", "y", "t", "valid"}
_FALSE = {"0", "false", "no", "n", "f", "invalid"}
CSV_COLUMNS = ("viewer", "time", "x", "y")


def _floats(values: Sequence[str], path: Path, column: str, first_line: int, empty_ok: bool) -> np.ndarray:
    try:
        return np.array([v if v.strip() else "nan" for v in values] if empty_ok else values, dtype=np.float64)
    except ValueError:
        for i, v in enumerate(values):
            try:
                if v.strip() or not empty_ok:
                    float(v)
            except ValueError:
                raise DataError(f"{path}:{first_line + i}: {column} {v!r} is not a number") from None
        raise


def read_csv(path: str | Path, time_unit: str = "s") -> list[Recording]:
    """Recordings of a plain CSV (docs/datasets.md): a header row naming the columns
    ``viewer``, ``time``, ``x``, ``y`` and optionally ``valid`` (1/0, true/false) and
    ``video`` (without it, the file's name is the video's). Times in ``time_unit`` (s or
    ms) from the video's onset; x, y in screen pixels, empty for a lost sample."""
    path = Path(path)
    scale = {"s": 1.0, "ms": 1e-3}[time_unit]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or error_cause(e)})") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected a header row: viewer,time,x,y[,valid][,video])")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: no column '{missing[0]}' in the header (need viewer,time,x,y; optional valid, "
                        f"video); got {','.join(rows[0])}")
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: no samples after the header")
    width = len(header)
    for i, r in enumerate(body):
        if len(r) != width:
            raise DataError(f"{path}:{i + 2}: {len(r)} fields, the header has {width}")
    cols = {name: [r[j] for r in body] for j, name in enumerate(header)}
    t = _floats(cols["time"], path, "time", 2, empty_ok=False) * scale
    bad = np.flatnonzero(~np.isfinite(t))
    if len(bad):
        raise DataError(f"{path}:{bad[0] + 2}: time {cols['time'][bad[0]]!r} is not a finite number")
    x = _floats(cols["x"], path, "x", 2, empty_ok=True)
    y = _floats(cols["y"], path, "y", 2, empty_ok=True)
    valid = np.ones(len(body), bool)
    if "valid" in cols:
        for i, v in enumerate(cols["valid"]):
            s = v.strip().lower()
            if s in _FALSE:
                valid[i] = False
            elif s not in _TRUE:
                raise DataError(f"{path}:{i + 2}: valid {v!r} is not 1/0 or true/false")
    viewers = np.array([v.strip() for v in cols["viewer"]])
    if (viewers == "").any():
        raise DataError(f"{path}:{int(np.argmax(viewers == '')) + 2}: empty viewer")
    videos = np.array([v.strip() for v in cols["video"]]) if "video" in cols else np.full(len(body), path.stem)
    keys = np.char.add(np.char.add(videos.astype(str), "\x1f"), viewers.astype(str))  # numpy drops a trailing \0
    inverse = np.unique(keys, return_inverse=True)[1]
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
    return [Recording(str(viewers[rows[0]]), str(videos[rows[0]]), str(path), t[rows], x[rows], y[rows], valid[rows])
            for rows in sorted(groups, key=lambda rows: rows[0])]


def _one_eye(fields: list[str], samples: np.ndarray, eye: str, path) -> tuple[np.ndarray, np.ndarray]:
    """x, y of the eye asked for; ``mean`` averages both eyes where both are valid and
    takes the one valid eye elsewhere."""
    if "xpos" in fields:
        return samples[fields.index("xpos")], samples[fields.index("ypos")]
    eyes = {e: (samples[fields.index(f"xpos_{e}")], samples[fields.index(f"ypos_{e}")])
            for e in ("left", "right") if f"xpos_{e}" in fields}
    if not eyes:
        raise DataError(f"{path}: no gaze position fields in the samples (got {', '.join(fields)})")
    if eye in eyes:
        return eyes[eye]
    if eye != "mean":
        raise DataError(f"{path}: the {eye} eye was not recorded (only {', '.join(eyes)}); use --eye mean")
    (lx, ly), (rx, ry) = eyes.get("left", eyes.get("right")), eyes.get("right", eyes.get("left"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean([lx, rx], axis=0), np.nanmean([ly, ry], axis=0)


@contextlib.contextmanager
def _quiet_c_stdout():
    """EyeLink's EDF library prints progress to the process's stdout; keep the command's
    output to its own lines."""
    try:
        fd = os.dup(1)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def _tracker_file(path: str | Path, onset: str | None, module: str, what: str):
    """A tracker file's path, its onset pattern and the reader's module, checked in that
    order (a bad pattern or a missing reader is said before a missing file)."""
    path = Path(path)
    rx = onset_regex(path, onset)
    reader = optional_import(module, what)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return path, rx, reader


def read_edf(path: str | Path, onset: str | None, eye: str = "mean") -> list[Recording]:
    """Recordings of an EyeLink EDF file (read by ``eyelinkio``), one per onset message."""
    path, rx, eyelinkio = _tracker_file(path, onset, "eyelinkio", "reading EyeLink .edf files")
    try:
        with _quiet_c_stdout():
            edf = eyelinkio.read_edf(str(path))
    except Exception as e:  # the EDF library raises several types for damaged files
        raise DataError(f"{path}: cannot read as an EyeLink EDF file ({error_cause(e)})") from None
    fields = list(edf["info"]["sample_fields"])
    times = np.asarray(edf["times"], np.float64)
    samples = np.asarray(edf["samples"], np.float64)
    blinks = edf["discrete"].get("blinks")
    if blinks is not None and len(blinks):
        # EyeLink's eye codes: 0 left, 1 right. A blink hides that eye's samples.
        for b in blinks:
            inside = (times >= b["stime"]) & (times <= b["etime"])
            side = "left" if int(b["eye"]) == 0 else "right"
            if "xpos" in fields:
                samples[fields.index("xpos"), inside] = np.nan
            elif f"xpos_{side}" in fields:
                samples[fields.index(f"xpos_{side}"), inside] = np.nan
    x, y = _one_eye(fields, samples, eye, path)
    messages = [(float(m["stime"]), m["msg"].decode("utf-8", "replace").strip()) for m in edf["discrete"]["messages"]]
    return split_session(path, path.stem, times, x, y, np.ones(len(times), bool), messages, rx)


def read_asc(path: str | Path, onset: str | None, eye: str = "mean") -> list[Recording]:
    """Recordings of an EyeLink ASC file (``edf2asc``'s text, read by ``pymovements``),
    one per onset message."""
    path, rx, pm = _tracker_file(path, onset, "pymovements", "reading EyeLink .asc files")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing optional header lines are no concern here
            gaze = pm.gaze.from_asc(str(path), events=True, messages=True)
    except Exception as e:  # the parser raises several types for malformed files
        raise DataError(f"{path}: cannot read as an EyeLink ASC file ({error_cause(e)})") from None
    s = gaze.samples
    if s.height == 0:
        raise DataError(f"{path}: no samples (an ASC file from edf2asc with samples and events is expected)")
    times = s["time"].to_numpy().astype(np.float64) / 1000.0
    pixel = np.array(s["pixel"].to_list(), dtype=np.float64)
    if pixel.shape[1] == 2:
        fields, rows = ["xpos", "ypos"], [pixel[:, 0], pixel[:, 1]]
    else:
        fields, rows = ["xpos_left", "ypos_left", "xpos_right", "ypos_right"], [pixel[:, i] for i in range(4)]
    samples = np.array(rows)
    if gaze.events is not None and gaze.events.frame.height:
        ev = gaze.events.frame
        for name, side, a, b in zip(ev["name"], ev["eye"], ev["onset"], ev["offset"]):
            if not str(name).startswith("blink"):
                continue
            inside = (times >= a / 1000.0) & (times <= b / 1000.0)
            key = "xpos" if "xpos" in fields else f"xpos_{side}"
            if key in fields:
                samples[fields.index(key), inside] = np.nan
    x, y = _one_eye(fields, samples, eye, path)
    msgs = gaze.messages
    messages = [] if msgs is None else [(float(t) / 1000.0, str(c).strip())
                                        for t, c in zip(msgs["time"], msgs["content"])]
    return split_session(path, path.stem, times, x, y, np.ones(len(times), bool), messages, rx)


def onset_regex(path: Path, onset: str | None) -> re.Pattern:
    """``--onset`` compiled, or a one-line error naming the tracker file that needs it."""
    if not onset:
        raise DataError(f"{path}: a tracker recording needs --onset REGEX, the message that marks when each video's "
                        f"first frame appeared (e.g. --onset 'VIDEO_ONSET (\\S+)')")
    try:
        rx = re.compile(onset)
    except re.error as e:
        raise DataError(f"--onset {onset!r}: not a regular expression ({e})") from None
    if rx.groups == 0:
        raise DataError(f"--onset {onset!r}: needs a group that captures the video's name, e.g. 'VIDEO_ONSET (\\S+)'")
    return rx


def split_session(path: Path, viewer: str, times: np.ndarray, x: np.ndarray, y: np.ndarray, valid: np.ndarray,
                  messages: list[tuple[float, str]], rx: re.Pattern) -> list[Recording]:
    """Cut a session (one viewer, several videos) at its onset messages: a message
    matching ``rx`` (:func:`onset_regex`) marks the moment its video's first frame
    appeared; its group ``video`` (or first group) names the video. Each video's samples
    run to the next onset message (or the session's end); their times become seconds from
    the onset."""
    marks = []
    for t, text in messages:
        m = rx.search(text)
        if m:
            name = m.group("video") if "video" in rx.groupindex else m.group(1)
            marks.append((t, Path(name).stem if Path(name).suffix.lower() in _VIDEO_SUFFIXES else name))
    if not marks:
        raise DataError(f"{path}: no message matches --onset {rx.pattern!r} ({len(messages)} messages in the file)")
    marks.sort()
    out = []
    for i, (t0, name) in enumerate(marks):
        t1 = marks[i + 1][0] if i + 1 < len(marks) else np.inf
        sel = (times >= t0) & (times < t1)
        out.append(Recording(viewer, name, str(path), times[sel] - t0, x[sel], y[sel], valid[sel]))
    return out


_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


def gaze_files(paths: Iterable[str | Path]) -> list[Path]:
    """The recordings among ``paths``: files as given, and each folder's files with a
    supported suffix (``.csv``, ``.edf``, ``.asc``), in name order."""
    out = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in FORMATS)
            if not found:
                raise DataError(f"{p}: no gaze recordings ({', '.join(sorted(FORMATS))})")
            out += found
        elif p.is_file():
            if p.suffix.lower() not in FORMATS:
                raise DataError(f"{p}: unsupported recording format '{p.suffix}' (supported: "
                                + ", ".join(f"{s} {n}" for s, n in FORMATS.items()) + ")")
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return out


def read_recordings(paths: Iterable[str | Path], *, time_unit: str = "s", onset: str | None = None,
                    eye: str = "mean") -> list[Recording]:
    """Every recording of the files and folders in ``paths``."""
    out = []
    for p in gaze_files(paths):
        kind = p.suffix.lower()
        if kind == ".csv":
            out += read_csv(p, time_unit)
        elif kind == ".edf":
            out += read_edf(p, onset, eye)
        else:
            out += read_asc(p, onset, eye)
    return out


__all__ = ["CSV_COLUMNS", "EXTRA", "FORMATS", "Recording", "error_cause", "gaze_files", "optional_import", "read_asc",
           "read_csv", "read_edf", "read_recordings", "split_session"]
