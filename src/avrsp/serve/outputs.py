"""What a job writes (a video's or a test video's maps, frames, overlay, relevance and
scores) and which of its files the page may fetch."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .jobs import Job

#: File names a job folder may serve (everything else is refused, whatever the path says).
_SERVED = {"video.mp4", "overlay.mp4", "maps.npz", "maps.zip"}
_SERVED_DIRS = {"frames": ".jpg", "heat": ".png", "gt": ".png", "ret_a": ".png", "ret_v": ".png"}


def _scale(values: list[np.ndarray]) -> tuple[float, float]:
    """One grey scale for a whole video's Ret maps, so brightness compares across frames."""
    if not values:
        return 0.0, 1.0
    lo, hi = float(min(v.min() for v in values)), float(max(v.max() for v in values))
    return lo, hi if hi > lo else lo + 1.0


def stored_size(shape: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) at which maps.npz keeps a map of ``shape``: the video's aspect,
    scaled down until it just covers the model's input ``grid`` (never up). The model sees
    its frames at that grid, so a larger float map holds no more of what it predicted and
    only makes the file grow with the video's resolution."""
    h, w = shape
    scale = min(1.0, max(grid[0] / h, grid[1] / w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def video_job(predictor, video: Path, name: str) -> Callable[[Job], dict]:
    """Predict ``video`` (an upload or the demo clip, ``name`` as its user named it) into
    the job's folder, with :func:`avrsp.predict.predict_to_folder` and the outputs the page
    shows besides (:func:`page_outputs`)."""
    from ..media import probe
    from ..predict import predict_to_folder

    def run(job: Job) -> dict:
        info = probe(video)
        # Matroska and some other containers store no frame count; their duration tells it.
        job.total = info.frames or round(info.duration * info.fps)
        out = job.folder / "out"
        grid = (predictor.config.height, predictor.config.width)

        def rows():
            for k, row in enumerate(predictor.predict_video_with_relevance(video)):
                yield row
                job.tick(k)

        predict_to_folder(predictor, video, out, overlay_video=False, progress=False, rows=rows(),
                          extra=lambda folder, info: page_outputs(folder, video, info, grid, predictor.device))
        job.check_budget()
        n = len(list((out / "maps").glob("*.png")))
        return {"frames": n, "fps": info.fps or 25.0, "width": info.width, "height": info.height,
                "relevance": (out / "relevance.npz").is_file(), "ground_truth": False,
                "audio": info.audio_rate is not None, "name": name}

    return run


def page_outputs(folder: Path, source: Path | None, info, grid: tuple[int, int], device: str) -> list:
    """What the page shows of a video besides its map PNGs: the overlay and the video as
    decoded (both with ``source``'s sound), the frames' thumbnails, the maps at
    :func:`stored_size` in ``maps.npz`` and the Ret maps."""
    from ..media import encoder_threads
    from ..predict import FrameVideo, MapArchive, RelevanceRecord, Thumbnails

    threads = encoder_threads(device)
    return [FrameVideo(folder / "overlay.mp4", source, info, threads=threads),
            FrameVideo(folder / "video.mp4", source, info, heat=False, threads=threads),
            Thumbnails(folder / "frames", info),
            MapArchive(folder / "maps.npz", lambda shape: stored_size(shape, grid)),
            RelevanceRecord(folder / "relevance.npz")]


def dataset_job(predictor, item, postprocess: bool) -> Callable[[Job], dict]:
    """Predict one test video of ``--data`` with the test protocol and score every frame
    exactly as ``avrsp evaluate`` does. The model's maps are kept for scoring, as
    ``evaluate`` keeps them; the video-sized maps are written one frame at a time."""
    from ..evaluate import score_video
    from ..inference import predict_frames_with_relevance

    def run(job: Job) -> dict:
        video = item.video
        n = len(video)
        job.total = n
        model = predictor.model
        preds, rets = [], []
        for k, m, ret_a, ret_v in predict_frames_with_relevance(
                model, video.frames, n, video.fps, video.audio if model.config.audio else None, batch=predictor.batch,
                streams=predictor.streams):
            preds.append(m)
            rets.append((ret_a, ret_v))
            job.tick(k)
        job.message = "scoring"
        record = score_video(video, lambda k: preds[k].astype(np.float64), postprocess=postprocess)
        job.message = "writing"
        wav = video.audio_path if video.audio is not None else None  # a broken track: no sound, as for the model
        h, w = _write_test_video(job, video, preds, rets, wav, (model.config.height, model.config.width))
        job.check_budget()
        per_frame = record["per_frame"]
        return {"frames": n, "fps": video.fps, "width": w, "height": h, "relevance": rets[0][0] is not None,
                "ground_truth": True, "audio": wav is not None, "name": f"{item.dataset}/{video.name}",
                "scores": {m: per_frame[m] for m in ("cc", "nss", "sim", "auc_j", "kld")},
                "means": record["mean"], "postprocess": postprocess}

    return run


def _write_test_video(job: Job, video, preds: list[np.ndarray], rets: list[tuple], wav: Path | None,
                      grid: tuple[int, int]) -> tuple[int, int]:
    """A test video's page outputs (the frames as a video with its sound, thumbnails, maps
    and ground truth as PNGs, ``maps.npz``, the Ret maps) in ``job.folder/out``; its size."""
    from types import SimpleNamespace

    from ..media import NpzWriter, resize_map, write_map_png
    from ..predict import FrameVideo, MapPngs, RelevanceRecord, Thumbnails

    out = job.folder / "out"
    (out / "gt").mkdir(parents=True, exist_ok=True)
    h, w = video.frame(0).shape[:2]
    info = SimpleNamespace(width=w, height=h, fps=video.fps)
    stored = stored_size((h, w), grid)
    made = [FrameVideo(out / "video.mp4", wav, info, heat=False), Thumbnails(out / "frames", info),
            MapPngs(out / "maps"), RelevanceRecord(out / "relevance.npz")]
    archive = NpzWriter(out / "maps.npz")
    try:
        for k in range(len(video)):
            job.check()
            m, frame = np.clip(resize_map(preds[k], (h, w)), 0, 1), video.frame(k)
            for o in made:
                o.add(k, m, frame, rets[k])
            archive.add(k, np.clip(resize_map(preds[k], stored), 0, 1))
            gt = video.saliency_map(k)
            if gt is not None:
                write_map_png(out / "gt" / f"{k + 1:05d}.png", gt)
        for o in made:
            o.close()
        archive.close()
    except BaseException:
        for o in made:
            o.abort()
        archive.abort()
        raise
    return h, w


# ------------------------------------------------------------------ files a job serves

def served_file(job: Job, name: str) -> tuple[bytes | Path | Iterator[bytes], str]:
    """The content (bytes, a file, or chunks) and media type of ``name`` in ``job``'s outputs."""
    from PIL import Image

    from ..media import colormap

    out = job.folder / "out"
    if name in ("video.mp4", "overlay.mp4"):
        return out / name, "video/mp4"
    if name == "maps.npz":
        return out / "maps.npz", "application/octet-stream"
    if name == "maps.zip":
        return _zip_stream([(p, f"maps/{p.name}") for p in sorted((out / "maps").glob("*.png"))]), "application/zip"
    folder, _, file = name.partition("/")
    k = int(file.split(".")[0])
    if folder == "frames":
        return out / "frames" / f"{k:05d}.jpg", "image/jpeg"
    if folder in ("heat", "gt"):
        src = out / ("maps" if folder == "heat" else "gt") / f"{k:05d}.png"
        if not src.is_file():
            raise FileNotFoundError(name)
        m = np.asarray(Image.open(src), np.float32) / 255
        scaled = m / max(float(m.max()), 1e-8)
        rgba = np.dstack([colormap(scaled), np.round(scaled * 255).astype(np.uint8)])  # see-through where cool
        return _png(rgba), "image/png"
    if folder in ("ret_a", "ret_v"):
        with np.load(out / "relevance.npz") as z:
            maps = z[folder]
            lo, hi = _scale([maps])
            m = (maps[k - 1] - lo) / (hi - lo)
        return _png(np.round(np.clip(m, 0, 1) * 255).astype(np.uint8)), "image/png"
    raise FileNotFoundError(name)


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are taken as they arrive."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _zip_stream(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    """A zip of ``files`` (path, name inside) sent as it is written: a long video's maps
    never sit in memory whole."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as z:  # PNGs are compressed already
        for path, arcname in files:
            z.write(path, arcname)
            yield sink.take()
    yield sink.take()


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def frame_number(name: str) -> int | None:
    """The frame a per-frame file names (``heat/00040.png``: 40), None for other files;
    raises FileNotFoundError for names no job serves."""
    if name in _SERVED:
        return None
    folder, sep, file = name.partition("/")
    suffix = _SERVED_DIRS.get(folder)
    if not sep or suffix is None or not re.fullmatch(r"[0-9]{1,9}" + re.escape(suffix), file):
        raise FileNotFoundError(name)
    return int(file[: -len(suffix)])


# ------------------------------------------------------------------ names
