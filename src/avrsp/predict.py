"""Saliency for any video: ``avrsp predict`` and the Python API :class:`Predictor`.

For every frame, a map at the video's resolution: 8-bit PNGs, and .npz on request. There
is also a heatmap-overlay MP4 with the original sound muxed back. Frames are decoded,
predicted and written as a stream, so memory does not grow with the video's length.
Without ``checkpoint`` the model shipped in the package is used (docs/default_model.md).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator

import av
import numpy as np
import torch

from .checkpoint import load_model
from .inference import check_every, interpolate_between, maps_of_videos, model_inputs, raising
from .runtime import Background, Runtime, prefetch
from .media import (SOUNDNET_RATE, MediaError, MediaWarning, NpzWriter, OverlayWriter, clip_audio, encoder_threads,
                    iter_frames, no_audio_track, overlay, probe, read_audio, resize_map, resize_rgb, save_thumbnail,
                    thumbnail_size, write_map_png)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


def default_checkpoint() -> Path:
    """The model file shipped in the package (avrsp_tiny trained on synthetic data)."""
    return Path(str(resources.files("avrsp") / "assets" / "avrsp_tiny_synth.safetensors"))


def built_in_notice() -> str:
    """The line every command prints when it falls back to the built-in model."""
    from .checkpoint import read_metadata

    name = read_metadata(default_checkpoint())["config"]["name"]
    return (f"model: the built-in {name} ({default_checkpoint().name}), trained on synthetic data only; "
            f"pass --checkpoint for a model trained on eye-tracking data")


def demo_video() -> Path:
    """A short clip made by ``avrsp synth``, shipped for the README's first command."""
    return Path(str(resources.files("avrsp") / "assets" / "demo.mp4"))


class Predictor:
    """Run a model file on clips and videos.

    ``checkpoint``: an avrsp model file (default: the shipped model). ``runtime``: where
    and how it runs (:class:`avrsp.runtime.Runtime`); or, as a shorthand, its fields
    ``device`` (cpu, cuda, cuda:1 or auto: CUDA when present), ``precision`` (fp32, bf16
    or auto: bf16 where the hardware computes it natively,
    :func:`avrsp.runtime.native_bf16`), ``batch`` (windows per forward pass; default 8
    on CUDA, 4 on the CPU), ``streams`` (forward passes at once; default
    :func:`avrsp.runtime.default_streams`, 2 on a CPU with two threads or more) and
    ``graphs`` (CUDA graphs, :class:`avrsp.graph.GraphedForward`; default off).
    ``every``: K > 1 runs the model on every K-th frame only and interpolates the maps
    between, a preview (up to K× faster; docs/predict.md measures how close); 1 is the
    exact protocol.
    """

    def __init__(self, checkpoint: str | Path | None = None, device: str = "auto", precision: str = "auto",
                 batch: int | None = None, every: int = 1, streams: int | None = None, graphs: bool | None = None,
                 *, runtime: Runtime | None = None):
        shorthand = Runtime(device, precision, batch, streams, graphs)
        if runtime is not None and shorthand != Runtime():
            raise ValueError("give runtime or its fields (device, precision, batch, streams, graphs), not both")
        self.runtime = (runtime or shorthand).resolve()
        self.checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
        check_every(every)
        self.every = every  # preview mode: the model on every K-th frame, maps between interpolated
        self.model = self.runtime.prepare(load_model(self.checkpoint))
        self.streams = self.runtime.streams_for(self.model)
        self.config = self.model.config

    @property
    def device(self) -> str:
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def batch(self) -> int:
        return self.runtime.batch

    @property
    def uses_audio(self) -> bool:
        return self.config.audio

    @torch.no_grad()
    def predict_clip(self, frames: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray:
        """The map of a clip's last frame, at the frames' resolution.

        ``frames``: T×H×W×3 uint8 RGB, any size (resized to the model's); T should be
        the model's window (``config.frames``). ``audio``: the clip's mono waveform in
        [-1, 1] at 22 050 Hz covering exactly those frames. It is windowed and scaled as
        docs/data.md says. ``None`` means silence; visual-only models ignore it.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be T×H×W×3 RGB, got shape {frames.shape}")
        cfg = self.config
        unique = np.stack([resize_rgb(f, (cfg.height, cfg.width)) for f in frames])
        sound = None
        if cfg.audio:
            n = 0 if audio is None else len(audio)
            sound = clip_audio(audio, SOUNDNET_RATE, 0.0, n / SOUNDNET_RATE, SOUNDNET_RATE * cfg.frames // 10)[None]
        index = np.arange(len(frames))[None]
        out = self.model(*model_inputs(self.model, unique, index, sound))[0].float().cpu().numpy()
        return resize_map(out, frames.shape[1:3])

    def predict_video(self, path: str | Path, *, audio: bool = True) -> Iterator[np.ndarray]:
        """Each frame's map (float32 in (0, 1)) at the video's displayed resolution, in
        order, lazily. A video without audio is predicted with silence after one warning."""
        for m, _, _ in self._predict(path, audio, relevance=False):
            yield m

    def predict_video_with_relevance(self, path: str | Path, *, audio: bool = True
                                     ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """``(map, ret_a, ret_v)`` per frame: the map as :meth:`predict_video` gives it, and
        RAVF's Ret_A / Ret_V for its window on X⁰'s grid (None without RAVF; Fig. 6)."""
        yield from self._predict(path, audio, relevance=True)

    def predict_videos(self, paths: Iterable[str | Path], *, audio: bool = True
                       ) -> Iterator[tuple[Path, Iterator[np.ndarray]]]:
        """``(path, its maps)`` per video in order, each video's maps as :meth:`predict_video`
        gives them, with the videos run through one pipeline: the next video is opened
        and decoded while this one's last windows run, which a list of short videos
        gains most from (docs/performance.md). Read each video's maps before asking for
        the next video (the maps of one left unread are dropped). A video that cannot be
        read raises MediaError from its own maps, after those it had; the next follows."""
        for path, rows in self._predict_many(paths, audio, relevance=False):
            yield path, (m for m, _, _ in rows)

    def _predict(self, path: str | Path, audio: bool, relevance: bool):
        for _, rows in self._predict_many([path], audio, relevance):
            yield from rows

    def _predict_many(self, paths: Iterable[str | Path], audio: bool, relevance: bool
                      ) -> Iterator[tuple[Path, Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]]]:
        paths = [Path(p) for p in paths]
        notes: dict[int, str] = {}   # video → why it is predicted with silence, said as it starts
        size = (self.config.height, self.config.width)

        def opened():  # on the pipeline's thread: the next video opens while this one runs
            for v, path in enumerate(paths):
                try:
                    info = probe(path)
                    sound = None
                    if self.uses_audio and audio:
                        try:
                            sound = read_audio(path, warn=False)
                            if sound is None:
                                notes[v] = no_audio_track(path)
                        except MediaError as e:  # as for a file without sound: the pictures still say a lot
                            notes[v] = f"{e}; using silence"
                    # (frame, timestamp): the sound follows each frame's time
                    frames = iter_frames(path, size=size)
                    yield frames, None, info.fps or 25.0, sound, (info.height, info.width)
                except MediaError as e:
                    yield e

        every = 1 if relevance else self.every
        rows = maps_of_videos(self.model, opened(), self.batch, every, self.streams, relevance)
        for v, group in itertools.groupby(rows, key=lambda row: row[0]):
            yield paths[v], _video_rows(group, every, notes.pop(v, None))


def _video_rows(group: Iterable[tuple[int, tuple | Exception]], every: int, note: str | None
                ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """One video's ``(map, ret_a, ret_v)`` per frame from :func:`maps_of_videos`' rows,
    the frames between computed ones interpolated (preview); its error raised at the end."""
    if note is not None:
        warnings.warn(note, MediaWarning, stacklevel=3)
    if every > 1:
        for _, m in interpolate_between((k, m) for k, m, _, _ in raising(group)):
            yield m, None, None
    else:
        for _, m, ret_a, ret_v in raising(group):
            yield m, ret_a, ret_v


# ------------------------------------------------------------------ outputs

@dataclass
class PredictResult:
    video: Path
    out: Path
    frames: int
    seconds: float


Row = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]  # (map, ret_a, ret_v) of one frame


class FrameOutput:
    """One output of a predicted video, fed frame by frame on the writer thread: ``add``
    gets the frame's number, its map at the video's size, the decoded frame (when
    ``needs_frame``, else None) and its Ret maps (None unless predicted with relevance);
    then ``close`` once every frame is in, or ``abort`` when the video fails."""

    needs_frame = False

    def add(self, k: int, m: np.ndarray, frame: np.ndarray | None, ret: tuple) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class MapPngs(FrameOutput):
    """``folder/%05d.png``: each map as :func:`avrsp.media.write_map_png` writes it."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, k, m, frame, ret):
        write_map_png(self.folder / f"{k + 1:05d}.png", m)


class MapArchive(FrameOutput):
    """The maps' own values in one .npz (:class:`avrsp.media.NpzWriter`), each resized by
    ``size(shape)`` → (height, width) when given."""

    def __init__(self, path: Path, size: Callable[[tuple[int, int]], tuple[int, int]] | None = None):
        self.archive, self.size = NpzWriter(path), size

    def add(self, k, m, frame, ret):
        self.archive.add(k, m if self.size is None else resize_map(m, self.size(m.shape)))

    def close(self):
        self.archive.close()

    def abort(self):
        self.archive.abort()


class FrameVideo(FrameOutput):
    """An H.264 video with ``source``'s sound (:class:`avrsp.media.OverlayWriter`): the
    heatmap over each frame (``heat``), beside the frame too (``side_by_side``), or the
    frames alone, as decoded (neither)."""

    needs_frame = True

    def __init__(self, path: Path, source: Path | None, info, *, heat: bool = True, side_by_side: bool = False,
                 threads: int = 0):
        self.heat, self.side_by_side = heat, side_by_side
        width = info.width * (2 if side_by_side else 1)
        self.writer = OverlayWriter(path, source, info.fps, width, info.height, threads=threads)

    def add(self, k, m, frame, ret):
        if not self.heat:
            self.writer.add(frame)
            return
        shown = overlay(frame, m)
        self.writer.add(np.concatenate([frame, shown], 1) if self.side_by_side else shown)

    def close(self):
        self.writer.close()

    def abort(self):
        self.writer.abort()


class Thumbnails(FrameOutput):
    """``folder/%05d.jpg``: each frame at most 640 pixels wide (:func:`avrsp.media.save_thumbnail`)."""

    needs_frame = True

    def __init__(self, folder: Path, info):
        self.folder, self.size = folder, thumbnail_size(info.width, info.height)
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, k, m, frame, ret):
        save_thumbnail(frame, self.size, self.folder / f"{k + 1:05d}.jpg")


class RelevanceRecord(FrameOutput):
    """``path`` (.npz): ``ret_a`` and ``ret_v``, n × X⁰'s grid, for a model with Ret maps;
    nothing for one without."""

    def __init__(self, path: Path):
        self.path, self.rets = path, []

    def add(self, k, m, frame, ret):
        self.rets.append(ret)

    def close(self):
        if self.rets and self.rets[0][0] is not None:
            np.savez(self.path, ret_a=np.stack([a for a, _ in self.rets]), ret_v=np.stack([v for _, v in self.rets]))


def predict_to_folder(predictor: Predictor, video: Path, out: Path, *, npz: bool = False, side_by_side: bool = False,
                      overlay_video: bool = True, progress: bool = True, rows: Iterable[Row] | None = None,
                      extra: Callable[[Path, object], list[FrameOutput]] | None = None) -> PredictResult:
    """Write ``out/maps/%05d.png`` (8-bit), ``out/<stem>_saliency.mp4`` and optionally
    ``out/maps.npz`` for one video. Each PNG is its map scaled to its own maximum
    (:func:`avrsp.media.write_map_png`); ``maps.npz`` holds the model's own values.
    ``rows``: the video's ``(map, ret_a, ret_v)`` from a pipeline of several videos
    (:func:`predict_to_folders`); by default the video is predicted on its own.
    ``extra(folder, info)``: more :class:`FrameOutput` s to write into the folder (what
    ``avrsp serve`` adds: thumbnails, the video as decoded, the Ret maps).

    Everything is written into ``<out>.partial/`` first, and that folder becomes ``out``
    only once every output is complete, replacing an earlier ``out``. A video that fails
    part-way raises MediaError and leaves ``<out>.partial/`` with a file ``INCOMPLETE``
    saying why, so no partial output can be mistaken for a finished one.
    """
    def outputs(work: Path, info) -> list[FrameOutput]:
        made: list[FrameOutput] = [MapPngs(work / "maps")]
        if overlay_video:
            made.append(FrameVideo(work / f"{video.stem}_saliency.mp4", video, info, side_by_side=side_by_side,
                                   threads=encoder_threads(predictor.device)))
        if npz:
            made.append(MapArchive(work / "maps.npz"))
        return made + (extra(work, info) if extra is not None else [])

    return write_folder(video, out, predictor._predict(video, True, False) if rows is None else rows, outputs,
                        progress=progress)


def write_folder(video: Path, out: Path, rows: Iterable[Row], outputs: Callable[[Path, object], list[FrameOutput]],
                 *, progress: bool = True) -> PredictResult:
    """Feed each row of ``rows`` (with ``video``'s decoded frame, when an output needs it)
    to ``outputs(folder, info)`` on a writer thread, in ``<out>.partial/``, and make that
    folder ``out`` once all are closed (:func:`predict_to_folder` says what a failure leaves)."""
    import shutil
    import time

    from tqdm import tqdm

    info = probe(video)
    work = out.with_name(f"{out.name}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    made: list[FrameOutput] = []
    bar = None
    t0 = time.time()
    n = 0
    try:
        made = outputs(work, info)
        frames = (prefetch((rgb for rgb, _ in iter_frames(video)), 4)
                  if any(o.needs_frame for o in made) else itertools.repeat(None))
        bar = tqdm(total=info.frames or None, unit="frame", desc=video.name, disable=not progress,
                   dynamic_ncols=True)

        def write(k: int, m: np.ndarray, ret: tuple) -> None:
            frame = next(frames)
            for o in made:
                o.add(k, m, frame, ret)

        writer = Background()
        try:
            for k, (m, ret_a, ret_v) in enumerate(rows):
                writer.submit(write, k, m, (ret_a, ret_v))
                n += 1
                bar.update(1)
        finally:
            writer.close()
        for o in made:
            o.close()
    except BaseException as e:
        for o in made:
            o.abort()
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        (work / "INCOMPLETE").write_text(f"avrsp predict stopped after {n} frame(s): {cause}\n")
        if isinstance(e, MediaError):
            raise MediaError(f"{e}; outputs of {n} frame(s) left in {work}/ (incomplete)") from None
        if isinstance(e, (av.FFmpegError, OSError)):
            raise MediaError(f"{video}: {cause}; outputs of {n} frame(s) left in {work}/ (incomplete)") from None
        raise
    finally:
        if bar is not None:
            bar.close()
    _replace(out, work)
    return PredictResult(video, out, n, time.time() - t0)


def _replace(out: Path, work: Path) -> None:
    """``work`` becomes ``out``; an earlier ``out`` is removed only once it is out of the way."""
    import shutil

    if out.exists():
        old = out.with_name(f"{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.replace(old)
        work.replace(out)
        shutil.rmtree(old)
    else:
        work.replace(out)


def predict_to_folders(predictor: Predictor, videos: list[Path], outs: list[Path], **options
                       ) -> Iterator[tuple[Path, PredictResult | MediaError]]:
    """:func:`predict_to_folder` for each video into its ``outs`` folder, the videos run
    through one pipeline (:meth:`Predictor.predict_videos`): ``(video, result)``, or
    ``(video, error)`` for a video that failed, whose ``.partial`` folder says why; the
    next video still runs."""
    for (video, rows), out in zip(predictor._predict_many(videos, True, False), outs, strict=True):
        try:
            yield video, predict_to_folder(predictor, video, out, rows=rows, **options)
        except MediaError as e:
            yield video, e


def collect_videos(inputs: list[str]) -> list[Path]:
    """Files as given, and the video files of any folder given, in name order."""
    videos = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise MediaError(f"{p}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
            videos += found
        elif p.is_file():
            videos.append(p)
        else:
            raise MediaError(f"{p}: no such file or folder")
    return videos
