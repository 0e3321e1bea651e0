"""``avrsp data from-gaze``: videos and their viewers' gaze recordings in, a dataset out.

The dataset is written in the two layouts the readers of :mod:`avrsp.data.datasets`
take, as the published datasets are (docs/datasets.md, "Your own eye-tracking data"):

* ``stavis/``: the STAViS release layout, database ``db``: ``img_%05d.jpg`` frames, one
  ``.wav`` per video, ``eyeMap_%05d.jpg`` density maps, ``fixMap_%05d.mat`` binary
  fixations (variable ``eyeMap``), and fold lists 1–3;
* ``dhf1k/``: the ViNet-style DHF1K layout: ``<split>/<id>/images/%04d.jpg``,
  ``maps/%04d.png``, ``fixation/%04d.png``; ``val/`` holds fold 1's test videos;
* ``gaze.json``: how the maps were made (blur, per-frame rule, time origin, screen) and,
  per video and viewer, what was dropped.

The dataset is written to a temporary folder beside the target and moved into place
when complete, so a failure leaves nothing where a dataset is expected.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..media import SOUNDNET_RATE, iter_frames, probe, read_audio
from .datasets import DataError
from .gaze import (PER_FRAME, TIME_ORIGINS, Blur, DensityMaps, Dropped, Screen, fixation_mask, parse_blur,
                   viewer_points)
from .recordings import Recording

META_NAME = "gaze.json"
FORMAT = "avrsp-from-gaze/1"
LAYOUTS = ("stavis", "dhf1k")
FOLDS = 3
#: JPEG qualities of frames and maps, as ``avrsp synth`` writes them.
FRAME_QUALITY, MAP_QUALITY = 92, 95


@dataclass(frozen=True)
class FromGazeConfig:
    db: str = "Gaze"                     # the STAViS database name (fold lists <db>_list_*)
    blur: str = "dhf1k"                  # dhf1k | <sigma>px | <sigma>deg
    per_frame: str = "median"            # median | samples | fixations
    time_origin: str = "first-frame"     # first-frame | media
    layouts: tuple[str, ...] = LAYOUTS
    jobs: int = 1

    def validate(self) -> Blur:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*", self.db) or "_list_" in self.db + "_":
            raise DataError(f"--db {self.db!r}: a database name is letters, digits, '.', '-' and single '_' "
                            f"(it names the fold lists, <db>_list_train_1_fps.txt)")
        if self.per_frame not in PER_FRAME:
            raise DataError(f"--per-frame {self.per_frame!r}: one of {', '.join(PER_FRAME)}")
        if self.time_origin not in TIME_ORIGINS:
            raise DataError(f"--time-origin {self.time_origin!r}: one of {', '.join(TIME_ORIGINS)}")
        if not self.layouts or any(lay not in LAYOUTS for lay in self.layouts):
            raise DataError(f"layouts {self.layouts!r}: one or both of {', '.join(LAYOUTS)}")
        if self.jobs < 1:
            raise DataError(f"--jobs {self.jobs}: must be 1 or more")
        return parse_blur(self.blur)


def video_names(videos: Sequence[Path]) -> list[str]:
    """Each video's name (its file name without the suffix); names must be unique and
    hold no whitespace (fold lists are whitespace-separated)."""
    names = [Path(v).stem for v in videos]
    seen: dict[str, Path] = {}
    for v, n in zip(videos, names):
        if re.search(r"\s", n):
            raise DataError(f"{v}: a video's name cannot hold whitespace (fold lists are '<video> <frames> <fps>' "
                            f"lines); rename the file")
        if n in seen:
            raise DataError(f"{v}: two videos are named '{n}' (also {seen[n]}); rename one")
        seen[n] = v
    return names


def match_recordings(videos: Sequence[Path], recordings: Sequence[Recording]) -> dict[str, list[Recording]]:
    """Recordings per video name. A recording of an unknown video, a video without
    recordings, and two recordings of one viewer for one video are errors."""
    names = video_names(videos)
    by_video: dict[str, list[Recording]] = {n: [] for n in names}
    seen: dict[tuple[str, str], Recording] = {}
    for r in recordings:
        if r.video not in by_video:
            shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
            raise DataError(f"{r.source}: viewer '{r.viewer}' watched video '{r.video}', which is not among the "
                            f"videos ({shown})")
        key = (r.video, r.viewer)
        if key in seen:
            raise DataError(f"{r.source}: viewer '{r.viewer}' has a second recording of video '{r.video}' (the first "
                            f"in {seen[key].source}); give each viewer one recording per video")
        seen[key] = r
        by_video[r.video].append(r)
    for v, n in zip(videos, names):
        if not by_video[n]:
            raise DataError(f"{v}: no gaze recording names this video")
    return by_video


def check_timing(videos: Sequence[Path], by_video: dict[str, list[Recording]], time_unit: str) -> None:
    """A CSV file most of whose valid samples fall outside its videos' durations (give or
    take a second) has its times in other units or from another origin: refuse it,
    naming it. Tracker files are cut at their onset messages, in the tracker's own units,
    and may hold long stretches after a video (ratings, a fixation cross): not checked."""
    durations = {}
    for v in videos:
        info = probe(v)
        durations[Path(v).stem] = info.duration
    per_file: dict[str, list[tuple[Recording, float]]] = defaultdict(list)
    for name, recs in by_video.items():
        for r in recs:
            per_file[r.source].append((r, durations[name]))
    for source, items in per_file.items():
        if Path(source).suffix.lower() != ".csv" or any(d <= 0 for _, d in items):
            continue  # a container without a duration: nothing to compare with
        valid = sum(int(r.valid.sum()) for r, _ in items)
        within = sum(int((r.valid & (r.t >= -1.0) & (r.t <= d + 1.0)).sum()) for r, d in items)
        if valid and within < valid / 2:
            ts = np.concatenate([r.t[r.valid] for r, _ in items])
            longest = max(d for _, d in items)
            raise DataError(f"{source}: {within} of {valid} valid samples fall within their video's duration (up to "
                            f"{longest:.1f} s); the times run {ts.min():g}–{ts.max():g} s with --time-unit "
                            f"{time_unit} (other units, or not measured from the video's onset?)")


def _first_frame_time(path: Path) -> float:
    """The first decoded frame's presentation time, in seconds on the video's own clock."""
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            return float(frame.time or 0.0)
    return 0.0


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass
class _Job:
    index: int
    path: Path
    name: str
    recordings: list[Recording]
    screen: Screen
    blur: Blur
    cfg: FromGazeConfig
    root: Path            # the temporary dataset folder
    dhf1k: str | None     # "<split>/<id>" when the DHF1K layout is written


def _gaze_points(job: _Job, starts: np.ndarray, end: float, rect, size: tuple[int, int]
                 ) -> tuple[np.ndarray, dict[str, dict]]:
    """Every viewer's (frame, row, column) points in frame order, and what was dropped of
    each viewer's samples."""
    viewers = {}
    points = []
    for rec in sorted(job.recordings, key=lambda r: r.viewer):
        in_fix = fixation_mask(rec, job.screen) if job.cfg.per_frame == "fixations" else None
        f, r, c, dropped = viewer_points(rec, starts, end, job.screen, rect, size, job.cfg.per_frame, in_fix)
        viewers[rec.viewer] = asdict(dropped)
        points.append(np.stack([f, r, c], 1))
    pts = np.concatenate(points) if points else np.zeros((0, 3), np.int64)
    return pts[np.argsort(pts[:, 0], kind="stable")], viewers


def _write_maps(job: _Job, pts: np.ndarray, n: int, size: tuple[int, int], sigma: float, d_ann: Path | None,
                d_dhf: Path | None) -> int:
    """Each frame's fixation map and density map in each layout asked for (STAViS's
    ``d_ann``, DHF1K's ``d_dhf``); the number of frames nobody looked at."""
    from scipy.io import savemat

    h, w = size
    bounds = np.searchsorted(pts[:, 0], np.arange(n + 1))
    density = DensityMaps((h, w), sigma)
    fix = np.zeros((h, w), bool)
    empty = 0
    for k in range(n):
        p = pts[bounds[k]:bounds[k + 1]]
        fix[:] = False
        fix[p[:, 1], p[:, 2]] = True
        empty += not len(p)
        cells = np.unique(p[:, 1] * w + p[:, 2])  # two viewers on one pixel make one fixation
        m = density.points(cells // w, cells % w)
        if d_ann is not None:
            (d_ann / "maps" / f"eyeMap_{k + 1:05d}.jpg").write_bytes(_jpeg(m, MAP_QUALITY))
            savemat(d_ann / f"fixMap_{k + 1:05d}.mat", {"eyeMap": fix.astype(np.uint8)}, do_compression=True)
        if d_dhf is not None:
            (d_dhf / "maps" / f"{k + 1:04d}.png").write_bytes(_png(m))
            (d_dhf / "fixation" / f"{k + 1:04d}.png").write_bytes(_png(fix.astype(np.uint8) * 255))
    return empty


def convert_video(job: _Job) -> dict:
    """Write one video's frames, sound, fixations and maps; return its metadata."""
    from scipy.io import wavfile

    cfg, name = job.cfg, job.name
    stavis = job.root / "stavis"
    d_frames = stavis / "video_frames" / cfg.db / name
    d_ann = stavis / "annotations" / cfg.db / name
    d_dhf = job.root / "dhf1k" / job.dhf1k if job.dhf1k else None
    frame_dirs = []
    if "stavis" in cfg.layouts:
        for d in (d_frames, d_ann / "maps"):
            d.mkdir(parents=True, exist_ok=True)
        frame_dirs.append((d_frames, "img_{:05d}.jpg"))
    if d_dhf is not None:
        for d in ("images", "maps", "fixation"):
            (d_dhf / d).mkdir(parents=True, exist_ok=True)
        frame_dirs.append((d_dhf / "images", "{:04d}.jpg"))
    times = []
    size = None
    for k, (rgb, t) in enumerate(iter_frames(job.path)):
        data = _jpeg(rgb, FRAME_QUALITY)  # encoded once, written to each layout
        for folder, pattern in frame_dirs:
            (folder / pattern.format(k + 1)).write_bytes(data)
        times.append(t)
        size = rgb.shape[:2]
    n = len(times)
    rel = np.asarray(times, np.float64)
    origin = _first_frame_time(job.path) if cfg.time_origin == "media" else 0.0
    starts = rel + origin
    steps = np.diff(rel)
    last = float(np.median(steps)) if n > 1 else 1.0 / (probe(job.path).fps or 25.0)
    end = float(starts[-1] + last)
    fps = n / (end - starts[0])
    h, w = size
    rect = job.screen.rect(name, w, h)
    sigma = job.blur.sigma_px(w, rect[2], job.screen)

    pts, viewers = _gaze_points(job, starts, end, rect, (h, w))
    empty = _write_maps(job, pts, n, (h, w), sigma, d_ann if "stavis" in cfg.layouts else None, d_dhf)

    audio = read_audio(job.path, SOUNDNET_RATE, warn=False)
    if audio is not None and "stavis" in cfg.layouts:
        d_wav = stavis / "video_audio" / cfg.db / name
        d_wav.mkdir(parents=True, exist_ok=True)
        wavfile.write(d_wav / f"{name}.wav", SOUNDNET_RATE, np.round(audio * 32767).astype(np.int16))
    regular = n < 3 or float(steps.max() - steps.min()) <= 0.01 * float(np.median(steps))
    return {
        "name": name, "source": str(job.path), "frames": n, "fps": fps, "width": w, "height": h,
        "variable_frame_rate": not regular, "first_frame_at": origin, "duration": end - starts[0],
        "rect": list(rect), "sigma_px": sigma, "audio": audio is not None,
        "frames_without_gaze": empty, "dhf1k": job.dhf1k, "viewers": viewers,
    }


def build(videos: Sequence[str | Path], recordings: Sequence[Recording], screen: Screen, out: str | Path,
          cfg: FromGazeConfig = FromGazeConfig(), *, time_unit: str = "s", overwrite: bool = False,
          progress: Callable[[int, int], None] | None = None) -> dict:
    """Convert ``videos`` and their ``recordings`` into a dataset at ``out``; returns the
    metadata also written to ``out/gaze.json``. ``out`` must not exist, be empty, or (with
    ``overwrite``) hold a dataset this function wrote, which is replaced whole."""
    blur = cfg.validate()
    videos = [Path(v) for v in videos]
    if len(videos) < FOLDS:
        raise DataError(f"{len(videos)} video(s): the fold lists need at least {FOLDS} (one test video per fold)")
    by_video = match_recordings(videos, recordings)
    check_timing(videos, by_video, time_unit)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / META_NAME).is_file():
            raise DataError(f"{out}: exists and is not a dataset written by 'avrsp data from-gaze'; choose an empty "
                            f"folder")
        if not overwrite:
            raise DataError(f"{out}: already holds a from-gaze dataset (use --overwrite to replace it)")
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        meta = _write(tmp, videos, by_video, screen, blur, cfg, time_unit, progress)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _write(root: Path, videos: list[Path], by_video: dict[str, list[Recording]], screen: Screen, blur: Blur,
           cfg: FromGazeConfig, time_unit: str, progress) -> dict:
    names = video_names(videos)
    order = sorted(range(len(videos)), key=lambda i: names[i])
    test_fold = {names[i]: j % FOLDS + 1 for j, i in enumerate(order)}
    dhf_ids = {names[i]: f"{'val' if test_fold[names[i]] == 1 else 'train'}/{j + 1:04d}" for j, i in enumerate(order)}
    jobs = [_Job(i, videos[i], names[i], by_video[names[i]], screen, blur, cfg, root,
                 dhf_ids[names[i]] if "dhf1k" in cfg.layouts else None) for i in order]
    results: list[dict] = []
    if cfg.jobs == 1:
        for job in jobs:
            results.append(convert_video(job))
            if progress is not None:
                progress(len(results), len(jobs))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Spawned, not forked: a forked child inherits FFmpeg's threads in whatever state they were.
        with ProcessPoolExecutor(cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(convert_video, jobs):
                results.append(result)
                if progress is not None:
                    progress(len(results), len(jobs))
    for r in results:
        r["test_fold"] = test_fold[r["name"]]
    if "stavis" in cfg.layouts:
        lists = root / "stavis" / "fold_lists"
        lists.mkdir(parents=True, exist_ok=True)
        for fold in range(1, FOLDS + 1):
            for part in ("train", "test"):
                text = "".join(f"{r['name']} {r['frames']} {r['fps']:.6g}\n" for r in results
                               if (r["test_fold"] == fold) == (part == "test"))
                (lists / f"{cfg.db}_list_{part}_{fold}_fps.txt").write_text(text)
    meta = {
        "format": FORMAT,
        "db": cfg.db,
        "layouts": list(cfg.layouts),
        "blur": {"spec": blur.spec, "description": blur.describe()},
        "per_frame": cfg.per_frame,
        "time_unit": time_unit,
        "time_origin": cfg.time_origin,
        "normalisation": "8-bit, each frame's maximum 255; a frame without gaze is all zero",
        "fixations": "binary: a pixel is a fixation when any viewer's point falls in it",
        "screen": screen.describe(),
        "videos": results,
    }
    (root / META_NAME).write_text(json.dumps(meta, indent=1))
    return meta


def viewer_summary(meta: dict) -> list[tuple[str, Dropped]]:
    """Per viewer, over all videos: what became of its samples."""
    total: dict[str, Dropped] = {}
    for v in meta["videos"]:
        for viewer, d in v["viewers"].items():
            total.setdefault(viewer, Dropped()).add(Dropped(**d))
    return sorted(total.items())


__all__ = ["FromGazeConfig", "build", "check_timing", "convert_video", "match_recordings", "video_names",
           "viewer_summary"]
