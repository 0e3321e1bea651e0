"""Eye-tracking recordings → per-frame fixations and density maps (``avrsp data from-gaze``).

Three steps, each documented in docs/datasets.md ("Your own eye-tracking data"):

1. **Reading** (:mod:`avrsp.data.recordings`): one viewer's gaze samples per video.
2. **Mapping.** Samples go to the frame on screen when they were taken (the decoded
   frames' own timestamps), from screen pixels to the video's pixels through the
   rectangle the video was shown in, and are dropped, and counted per viewer, when they
   fall outside the video's duration, are invalid (blinks, lost tracking), off the
   screen, or off the video. Per frame each viewer contributes the median of its samples
   (or every sample, or the samples in detected fixations and pursuits).
3. **Maps.** The binary fixation map of a frame, blurred by a Gaussian (in video pixels,
   in degrees of visual angle, or DHF1K's), scaled to a maximum of 255.

Every failure is a one-line :class:`~avrsp.data.datasets.DataError` naming the file.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .datasets import DataError
from .recordings import Recording, error_cause, optional_import

#: DHF1K's density maps: its fixations blurred by a Gaussian of 30 px full width at half
#: maximum on its 640×360 frames.
DHF1K_FWHM_PX = 30.0
DHF1K_WIDTH = 640
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

PER_FRAME = ("median", "samples", "fixations")
TIME_ORIGINS = ("first-frame", "media")


# ------------------------------------------------------------------ the screen

@dataclass(frozen=True)
class Screen:
    """Where the gaze coordinates live and where each video was shown.

    ``width``/``height``: the screen's resolution, the pixel grid of the gaze coordinates
    (origin at the top-left corner, x to the right, y down; pixel column i covers
    [i, i+1)). ``size_cm`` and ``distance_cm`` (optional) give degrees of visual angle.
    ``video_rect``: ``fit`` (scaled to fit the screen, aspect kept, centred: letterbox or
    pillarbox bars), ``native`` (at its own pixel size, centred), ``stretch`` (the whole
    screen) or ``(left, top, width, height)`` in screen pixels; ``videos`` overrides it per
    video name.
    """

    width: int
    height: int
    size_cm: tuple[float, float] | None = None
    distance_cm: float | None = None
    video_rect: str | tuple[float, float, float, float] = "fit"
    videos: dict[str, str | tuple[float, float, float, float]] = field(default_factory=dict)

    def rect(self, name: str, video_w: int, video_h: int) -> tuple[float, float, float, float]:
        """(left, top, width, height) in screen pixels of video ``name`` (video_w×video_h)."""
        spec = self.videos.get(name, self.video_rect)
        if not isinstance(spec, str):
            return tuple(float(v) for v in spec)
        if spec == "stretch":
            return 0.0, 0.0, float(self.width), float(self.height)
        if spec == "native":
            # Players place a video shown at its own size on whole pixels.
            left, top = (self.width - video_w) // 2, (self.height - video_h) // 2
            return float(left), float(top), float(video_w), float(video_h)
        scale = min(self.width / video_w, self.height / video_h)
        w, h = video_w * scale, video_h * scale
        return (self.width - w) / 2, (self.height - h) / 2, w, h

    def pixels_per_degree(self) -> float | None:
        """Screen pixels per degree of visual angle at the screen's centre (horizontally),
        or None without the physical size and viewing distance."""
        if self.size_cm is None or self.distance_cm is None:
            return None
        cm_per_degree = 2.0 * self.distance_cm * math.tan(math.radians(0.5))
        return self.width / self.size_cm[0] * cm_per_degree

    def describe(self) -> dict:
        d = asdict(self)
        d["pixels_per_degree"] = self.pixels_per_degree()
        return d


_SCREEN_KEYS = ("resolution", "size_cm", "distance_cm", "video_rect", "videos")


def _pair(value, what: str, where: str, positive=True) -> tuple[float, float]:
    if isinstance(value, str):
        value = re.split(r"[x×,\s]+", value.strip())
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} must be two numbers (width, height), got {value!r}") from None
    if positive and (a <= 0 or b <= 0):
        raise DataError(f"{where}: {what} must be positive, got {a:g}×{b:g}")
    return a, b


def _rect_spec(value, where: str):
    if isinstance(value, str) and value.strip() in ("fit", "native", "stretch"):
        return value.strip()
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value.strip()) if v]
    try:
        left, top, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: a video rectangle is fit, native, stretch or [left, top, width, height] in "
                        f"screen pixels, got {value!r}") from None
    if w <= 0 or h <= 0:
        raise DataError(f"{where}: the video rectangle's width and height must be positive, got {w:g}×{h:g}")
    return left, top, w, h


def load_screen(path: str | Path | None = None, **overrides) -> Screen:
    """The screen description of ``path`` (YAML or JSON; keys ``resolution``, ``size_cm``,
    ``distance_cm``, ``video_rect``, ``videos``), with ``overrides`` (the same keys, from
    the command line) taking precedence. Errors name the file and the key."""
    from ..config import ConfigError, read_yaml

    data: dict = {}
    where = str(path) if path is not None else "command line"
    if path is not None:
        try:
            data = read_yaml(path)
        except ConfigError as e:
            raise DataError(str(e)) from None
        unknown = sorted(set(data) - set(_SCREEN_KEYS))
        if unknown:
            raise DataError(f"{path}: unknown key '{unknown[0]}' (known keys: {', '.join(_SCREEN_KEYS)})")
    given = {k: v for k, v in overrides.items() if v is not None}
    data = {**data, **given}
    if "resolution" not in data:
        raise DataError(f"{where}: the screen's resolution is missing (resolution: [width, height] in the screen "
                        f"file, or --resolution WxH)")
    w, h = _pair(data["resolution"], "resolution", where)
    if w != int(w) or h != int(h):
        raise DataError(f"{where}: resolution must be whole pixels, got {w:g}×{h:g}")
    size = _pair(data["size_cm"], "size_cm", where) if data.get("size_cm") is not None else None
    distance = data.get("distance_cm")
    if distance is not None:
        try:
            distance = float(distance)
        except (TypeError, ValueError):
            raise DataError(f"{where}: distance_cm must be a number, got {distance!r}") from None
        if distance <= 0:
            raise DataError(f"{where}: distance_cm must be positive, got {distance:g}")
    videos = data.get("videos") or {}
    if not isinstance(videos, dict):
        raise DataError(f"{where}: videos must map video names to rectangles")
    return Screen(int(w), int(h), size, distance, _rect_spec(data.get("video_rect", "fit"), where),
                  {str(k): _rect_spec(v, f"{where}: videos.{k}") for k, v in videos.items()})


# ------------------------------------------------------------------ samples → frames

@dataclass
class Dropped:
    """What became of one viewer's samples for one video. Each sample is counted once, by
    the first reason that applies, in this order."""

    samples: int = 0
    outside: int = 0       # before the first frame appeared or after the last one ended
    invalid: int = 0       # blinks, lost tracking, flagged invalid
    off_screen: int = 0    # outside the screen's resolution
    off_video: int = 0     # on the screen but outside the video's rectangle (letterbox bars, borders)
    not_fixation: int = 0  # per_frame="fixations" only: in a saccade, post-saccadic oscillation or unclassified
    kept: int = 0
    frames_without_gaze: int = 0  # frames this viewer contributes nothing to

    def add(self, other: "Dropped") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


def frame_of(t: np.ndarray, starts: np.ndarray, end: float) -> np.ndarray:
    """0-based frame shown at each time ``t`` (frame k from ``starts[k]`` until the next
    frame's start, the last one until ``end``); -1 outside [starts[0], end)."""
    k = np.searchsorted(starts, t, side="right") - 1
    k[(t < starts[0]) | (t >= end)] = -1
    return k


def _grouped_median(k: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct ``k``: the median of ``values`` (vectorised: sort within groups and
    take the middle one or two)."""
    order = np.lexsort((values, k))
    ks, vs = k[order], values[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    counts = np.diff(np.r_[starts, len(ks)])
    lo, hi = starts + (counts - 1) // 2, starts + counts // 2
    return ks[starts], (vs[lo] + vs[hi]) / 2


def fixation_mask(rec: Recording, screen: Screen) -> np.ndarray:
    """Which samples lie in a fixation or smooth pursuit, as REMoDNaV (``remodnav``,
    built for dynamic scenes) classifies the recording. Pursuits count: following a
    moving object is how viewers look at it in video."""
    remodnav = optional_import("remodnav", "--per-frame fixations")
    ppd = screen.pixels_per_degree()
    if ppd is None:
        raise DataError("--per-frame fixations needs the screen's size_cm and distance_cm (its velocity thresholds "
                        "are in degrees per second)")
    t = rec.t
    if len(t) < 10:
        return np.zeros(len(t), bool)
    rate = 1.0 / float(np.median(np.diff(t)))
    idx = np.round((t - t[0]) * rate).astype(np.int64)
    grid = np.full(int(idx[-1]) + 1, np.nan, dtype=[("x", "f8"), ("y", "f8")])
    grid["x"][idx] = np.where(rec.valid, rec.x, np.nan)
    grid["y"][idx] = np.where(rec.valid, rec.y, np.nan)
    # REMoDNaV's Savitzky-Golay window must be an odd number of samples: the one nearest
    # its 19 ms default.
    n = max(3, int(round(0.019 * rate)) | 1)
    # Its filter fits polynomials to the first and last windows, which fails on a lost
    # sample there: classify from the first to the last run of n valid samples.
    ok = np.isfinite(grid["x"])
    runs = np.flatnonzero(np.convolve(ok, np.ones(n, int), "valid") == n)
    if not len(runs):
        return np.zeros(len(t), bool)
    lo, hi = int(runs[0]), int(runs[-1]) + n
    log = logging.getLogger("remodnav")
    level = log.level
    log.setLevel(logging.ERROR)  # it logs a line per clipped velocity peak; the summary counts what it drops
    try:
        clf = remodnav.EyegazeClassifier(px2deg=1.0 / ppd, sampling_rate=rate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            events = clf(clf.preproc(grid[lo:hi].copy(), savgol_length=(n + 0.5) / rate), classify_isp=True)
    except Exception as e:  # REMoDNaV fails in several ways on too little or too noisy data
        raise DataError(f"{rec.source}: viewer {rec.viewer}, video {rec.video}: fixation detection failed "
                        f"({error_cause(e)})") from None
    finally:
        log.setLevel(level)
    keep = np.zeros(len(grid), bool)
    for e in events:
        if e["label"] in ("FIXA", "PURS"):
            keep[lo + int(round(e["start_time"] * rate)):lo + int(round(e["end_time"] * rate))] = True
    return keep[idx]


def viewer_points(rec: Recording, starts: np.ndarray, end: float, screen: Screen,
                  rect: tuple[float, float, float, float], size: tuple[int, int], per_frame: str = "median",
                  in_fixation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Dropped]:
    """One viewer's fixation pixels: (frame, row, col) arrays and what was dropped.

    ``starts``/``end``: the frames' display times in the recording's clock; ``rect``: the
    video's rectangle on the screen; ``size``: the video's (height, width)."""
    h, w = size
    k = frame_of(rec.t, starts, end)
    left, top, rw, rh = rect
    u = (rec.x - left) * (w / rw)
    v = (rec.y - top) * (h / rh)
    with np.errstate(invalid="ignore"):
        on_screen = (rec.x >= 0) & (rec.x < screen.width) & (rec.y >= 0) & (rec.y < screen.height)
        on_video = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    d = Dropped(samples=len(rec.t))
    inside = k >= 0
    d.outside = int((~inside).sum())
    d.invalid = int((inside & ~rec.valid).sum())
    ok = inside & rec.valid
    d.off_screen = int((ok & ~on_screen).sum())
    ok &= on_screen
    d.off_video = int((ok & ~on_video).sum())
    ok &= on_video
    if per_frame == "fixations":
        d.not_fixation = int((ok & ~in_fixation).sum())
        ok &= in_fixation
    d.kept = int(ok.sum())
    k, u, v = k[ok], u[ok], v[ok]
    if per_frame == "samples":
        frames, cols, rows = k, u, v
    else:
        frames, cols = _grouped_median(k, u)
        _, rows = _grouped_median(k, v)
    d.frames_without_gaze = len(starts) - len(np.unique(frames))
    rows = np.clip(np.floor(rows), 0, h - 1).astype(np.int64)
    cols = np.clip(np.floor(cols), 0, w - 1).astype(np.int64)
    return frames.astype(np.int64), rows, cols, d


# ------------------------------------------------------------------ density maps

@dataclass(frozen=True)
class Blur:
    """The Gaussian that turns fixations into a density map: ``spec`` as given
    (``dhf1k``, ``<σ>px``, ``<σ>deg``)."""

    spec: str
    kind: str      # "dhf1k" | "px" | "deg"
    value: float   # σ in video pixels (px), in degrees (deg); unused for dhf1k

    def sigma_px(self, video_width: int, rect_width: float, screen: Screen) -> float:
        """σ in the video's pixels."""
        if self.kind == "px":
            return self.value
        if self.kind == "dhf1k":
            # DHF1K's blur relative to the frame: 30 px FWHM per 640 px of width.
            return DHF1K_FWHM_PX / FWHM_PER_SIGMA * video_width / DHF1K_WIDTH
        ppd = screen.pixels_per_degree()
        if ppd is None:
            raise DataError(f"--blur {self.spec}: a blur in degrees needs the screen's size_cm and distance_cm")
        return self.value * ppd * video_width / rect_width

    def describe(self) -> str:
        if self.kind == "dhf1k":
            return (f"DHF1K's: a Gaussian of {DHF1K_FWHM_PX:g} px full width at half maximum per {DHF1K_WIDTH} px of "
                    f"video width (sigma {DHF1K_FWHM_PX / FWHM_PER_SIGMA:.2f} px at 640x360)")
        if self.kind == "px":
            return f"a Gaussian of sigma {self.value:g} video pixels"
        return (f"a Gaussian of sigma {self.value:g} degrees of visual angle (from the screen's size, resolution "
                f"and viewing distance, at its centre)")


def parse_blur(text: str) -> Blur:
    s = text.strip().lower()
    if s == "dhf1k":
        return Blur(text, "dhf1k", 0.0)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(px|deg)", s)
    if not m or float(m.group(1)) <= 0:
        raise DataError(f"--blur {text!r}: expected dhf1k, <sigma>px (video pixels) or <sigma>deg (degrees of visual "
                        f"angle), e.g. 12.7px or 1deg")
    return Blur(text, m.group(2), float(m.group(1)))


class DensityMaps:
    """Binary fixations → 8-bit density maps, as ``scipy.ndimage.gaussian_filter`` (its
    default mirror border, truncated at 4σ) followed by scaling to a maximum of 255 would
    make them, the way the published maps are normalised. The blur is separable, and a
    frame holds a few fixations, so each map is computed as a product of two small
    matrices of 1-D impulse responses rather than by filtering the whole frame."""

    def __init__(self, size: tuple[int, int], sigma: float):
        from scipy.ndimage import gaussian_filter1d

        self.size, self.sigma = size, sigma
        self._ky = gaussian_filter1d(np.eye(size[0], dtype=np.float32), sigma, axis=1)
        self._kx = gaussian_filter1d(np.eye(size[1], dtype=np.float32), sigma, axis=1)

    def __call__(self, fixations: np.ndarray) -> np.ndarray:
        """The map of one frame's H×W boolean fixation map."""
        return self.points(*np.nonzero(fixations))

    def points(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The map of fixations at distinct pixels (``rows``, ``cols``)."""
        if not len(rows):
            return np.zeros(self.size, np.uint8)
        # einsum's own loop, not a BLAS product: multi-threaded BLAS, woken for this small
        # product while FFmpeg's decoding threads hold the cores, made it ten times slower.
        m = np.einsum("ki,kj->ij", self._ky[rows], self._kx[cols])
        return np.round(255 * m / max(float(m.max()), 1e-12)).astype(np.uint8)


__all__ = ["Blur", "DensityMaps", "Dropped", "Screen", "fixation_mask", "frame_of", "load_screen", "parse_blur",
           "viewer_points"]
