"""Saliency for any video: ``avrsp predict`` and the Python API :class:`Predictor`.

For every frame, a map at the video's resolution: 8-bit PNGs, and .npz on request. There
is also a heatmap-overlay MP4 with the original sound muxed back. Frames are decoded,
predicted and written as a stream, so memory does not grow with the video's length.
Without ``checkpoint`` the model shipped in the package is used (docs/default_model.md).
"""

from __future__ import annotations

import functools
import itertools
import warnings
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator

import av
import numpy as np
import torch
from PIL import Image

from .checkpoint import load_model
from .inference import interpolate_between, maps_of_videos, model_inputs, raising
from .runtime import Background, Runtime, prefetch
from .media import (SOUNDNET_RATE, MediaError, MediaWarning, clip_audio, iter_frames, no_audio_track, probe,
                    read_audio, resize_map, resize_rgb, write_map_png)

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
    ``graphs`` (CUDA graphs, :class:`avrsp.inference.GraphedForward`; default off).
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
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
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

@functools.cache
def _jet() -> np.ndarray:
    """matplotlib's 'jet' as 256 RGB0 colours, each read as one uint32: numpy's
    one-dimensional ``take`` of those moves one word a pixel, where indexing rows of a
    256×3 uint8 table copies three bytes through a slower fancy-indexing path."""
    from matplotlib import colormaps

    rgb0 = np.zeros((256, 4), np.uint8)
    rgb0[:, :3] = colormaps["jet"](np.arange(256))[:, :3] * 255
    return rgb0.view(np.uint32).ravel()


def colormap(m: np.ndarray) -> np.ndarray:
    """A map in [0, 1] → RGB uint8 with matplotlib's 'jet', the field's usual heatmap.
    matplotlib's colormap is a 256-entry table indexed by ⌊256·m⌋ (1.0 → 255); indexing
    that table ourselves gives the same colours without its float RGBA intermediate."""
    index = np.minimum((np.clip(m, 0, 1) * 256).astype(np.int32), 255)
    return _jet().take(index).view(np.uint8).reshape(*index.shape, 4)[..., :3]


def overlay(frame: np.ndarray, m: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The frame under the heatmap, the heatmap's opacity growing with saliency.

    The map is scaled to its own maximum, so each frame shows where its most salient
    places are.
    """
    scaled = (m / max(float(m.max()), 1e-8)).astype(np.float32)
    a = (np.float32(alpha) * scaled)[..., None]
    return (frame * (1 - a) + colormap(scaled) * a).astype(np.uint8)


class NpzWriter:
    """Writes ``frame_00001``, ``frame_00002``, … into an .npz one array at a time, as a
    hidden file moved into place by :meth:`close` (:meth:`abort` removes it)."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_DEFLATED)

    def add(self, k: int, m: np.ndarray) -> None:
        with self.zip.open(f"frame_{k + 1:05d}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, m.astype(np.float32))

    def close(self) -> None:
        self.zip.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        self.zip.close()
        self.tmp.unlink(missing_ok=True)


#: Audio codecs an MP4 file can hold as they are: copied packet for packet, bit-exact.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}

#: Sample rates FFmpeg's AAC encoder accepts.
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def _aac_rate(rate: int) -> int:
    """The source's rate when AAC takes it, else the nearest higher one (96 kHz at most)."""
    return next((r for r in AAC_RATES if r >= rate), AAC_RATES[-1])


def _aac_opens(rate: int, layout: str) -> str | None:
    """Why the AAC encoder refuses (rate, layout), or None. Tried on a throwaway codec so
    that a refusal cannot break the video stream already being written."""
    try:
        cc = av.CodecContext.create("aac", "w")
        cc.sample_rate, cc.layout, cc.format = rate, layout, "fltp"
        cc.open()
        return None
    except (av.FFmpegError, ValueError) as e:
        return str(e).splitlines()[0]


class _SoundTrack:
    """The source's first audio track as the overlay video will carry it.

    ``copy``: its packets as they are (MP4 holds the codec), shifted so that they keep
    their time relative to the source's first video frame. Otherwise every decoded frame
    is converted (any sample format, rate and channel layout, including layouts FFmpeg
    only knows by their channel count) to float planar mono or stereo at a rate AAC
    accepts, and encoded as AAC, starting at the source's video start: leading audio is
    trimmed, late audio is preceded by silence, so the sound stays where it was.
    """

    def __init__(self, container: av.container.InputContainer, source: Path):
        a = container.streams.audio[0]
        self.stream = a
        self.codec = a.codec_context.codec.canonical_name  # 'mp3', not the decoder's 'mp3float'
        self.copy = self.codec in MP4_AUDIO
        v = container.streams.video[0] if container.streams.video else None
        self.video_start = float(v.start_time * v.time_base) if v is not None and v.start_time is not None else 0.0
        self.rate = _aac_rate(a.rate or 44100)
        self.layout = "mono" if a.channels == 1 else "stereo"
        self.refused = None if self.copy else _aac_opens(self.rate, self.layout)
        self.written = 0  # samples encoded so far

    def add_to(self, out: av.container.OutputContainer):
        if self.copy:
            return out.add_stream_from_template(self.stream)
        stream = out.add_stream("aac", rate=self.rate)
        stream.layout = self.layout
        return stream

    def write(self, container: av.container.InputContainer, out: av.container.OutputContainer, stream) -> None:
        if self.copy:
            shift = int(round(self.video_start / self.stream.time_base)) if self.stream.time_base else 0
            for packet in container.demux(self.stream):
                if packet.dts is None:  # the demuxer's final flush packet
                    continue
                packet.pts = None if packet.pts is None else packet.pts - shift
                packet.dts -= shift
                packet.stream = stream
                out.mux(packet)
            return
        resampler = None
        pending = None  # samples still to drop (> 0) or silence to insert (< 0) at the start
        for frame in container.decode(self.stream):
            if resampler is None:
                # swresample downmixes layouts it knows; "6 channels" (order unknown) is mixed below.
                known = not frame.layout.name.endswith("channels")
                layout = self.layout if known else frame.layout.name
                resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
                start = float(frame.time) if frame.time is not None else self.video_start
                pending = int(round((self.video_start - start) * self.rate))
            for f in resampler.resample(frame):
                pending = self._encode(f.to_ndarray(), pending, out, stream)
        if resampler is not None:
            for f in resampler.resample(None):
                pending = self._encode(f.to_ndarray(), pending, out, stream)
        for p in stream.encode(None):
            out.mux(p)

    def _encode(self, samples: np.ndarray, pending: int, out, stream) -> int:
        if samples.shape[0] != (1 if self.layout == "mono" else 2):
            mono = samples.mean(axis=0, keepdims=True)
            samples = mono if self.layout == "mono" else np.repeat(mono, 2, axis=0)
        if pending < 0:  # the sound starts after the picture
            samples = np.concatenate([np.zeros((samples.shape[0], -pending), np.float32), samples], 1)
            pending = 0
        elif pending > 0:  # the sound starts before the picture
            drop = min(pending, samples.shape[1])
            samples, pending = samples[:, drop:], pending - drop
        if samples.shape[1]:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp",
                                               layout=self.layout)
            frame.sample_rate = self.rate
            # Timestamps from 0 let the encoder mark its priming samples (pts < 0), and the
            # muxer then writes the edit list that makes players skip them: without it the
            # sound would lag by 1024 samples (128 ms at 8 kHz).
            frame.pts, frame.time_base = self.written, Fraction(1, self.rate)
            self.written += samples.shape[1]
            for p in stream.encode(frame):
                out.mux(p)
        return pending


class OverlayWriter:
    """H.264 video of the overlays with the source's sound (see :class:`_SoundTrack`).

    Written to a hidden temporary file and renamed on :meth:`close`; :meth:`abort`
    removes it. When the sound cannot be written, the video is written without it and
    one ``MediaWarning`` says why.

    ``threads``: x264's threads, 0 to let it choose (about 1.5 per core); see
    :func:`encoder_threads`.
    """

    def __init__(self, path: Path, source: Path | None, fps: float, width: int, height: int, *, threads: int = 0):
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp.mp4")
        self.source = source
        self.src = av.open(str(source)) if source is not None else None  # None: no sound
        self.sound = None
        if self.src is not None and self.src.streams.audio:
            sound = _SoundTrack(self.src, source)
            if sound.refused:
                self._no_sound(f"the AAC encoder refuses {sound.rate} Hz {sound.layout} ({sound.refused})")
            else:
                self.sound = sound
        self.out = av.open(str(self.tmp), "w")
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.video = self.out.add_stream("libx264", rate=rate)
        self.video.width, self.video.height = width + width % 2, height + height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": "20", "preset": "veryfast"}
        self.video.codec_context.thread_count = threads
        self.audio = self.sound.add_to(self.out) if self.sound is not None else None

    def _no_sound(self, cause: str) -> None:
        warnings.warn(f"{self.source}: the overlay video is written without sound: {cause}", MediaWarning,
                      stacklevel=4)

    def add(self, rgb: np.ndarray) -> None:
        h, w = self.video.height, self.video.width
        if rgb.shape[:2] != (h, w):  # yuv420p needs even sizes
            rgb = np.pad(rgb, ((0, h - rgb.shape[0]), (0, w - rgb.shape[1]), (0, 0)), mode="edge")
        for p in self.video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self.out.mux(p)

    def close(self) -> None:
        for p in self.video.encode(None):
            self.out.mux(p)
        failed = None
        if self.sound is not None:
            try:
                self.sound.write(self.src, self.out, self.audio)
            except (av.FFmpegError, ValueError, OSError) as e:
                failed = str(e).splitlines()[0] or type(e).__name__
        self.out.close()
        if self.src is not None:
            self.src.close()
        if failed:
            self._no_sound(f"{self.sound.codec} sound could not be converted ({failed})")
            self._drop_audio()
        self.tmp.replace(self.path)

    def _drop_audio(self) -> None:
        """Rewrite the temporary file with its video packets only."""
        video_only = self.tmp.with_name(self.tmp.name + ".video.mp4")
        with av.open(str(self.tmp)) as src, av.open(str(video_only), "w") as out:
            stream = out.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is None:
                    continue
                packet.stream = stream
                out.mux(packet)
        video_only.replace(self.tmp)

    def abort(self) -> None:
        for c in (self.out, self.src):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001 - already failing; the file is removed anyway
                pass
        self.tmp.unlink(missing_ok=True)


def encoder_threads(device: str) -> int:
    """x264's threads for outputs written while a model runs on ``device``: 1 on the CPU,
    whose cores the model keeps busy already, so more encoder threads add only their
    own coordination (0.64 against 0.30 CPU ms a frame at 144×256, docs/performance.md);
    0 (x264's choice) beside a GPU."""
    return 1 if torch.device(device).type == "cpu" else 0


@dataclass
class PredictResult:
    video: Path
    out: Path
    frames: int
    seconds: float


def predict_to_folder(predictor: Predictor, video: Path, out: Path, *, npz: bool = False, side_by_side: bool = False,
                      overlay_video: bool = True, progress: bool = True, frames: bool = False, relevance: bool = False,
                      display_video: bool = False, on_frame: Callable[[int], None] | None = None,
                      rows: Iterable[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] | None = None
                      ) -> PredictResult:
    """Write ``out/maps/%05d.png`` (8-bit), ``out/<stem>_saliency.mp4`` and optionally
    ``out/maps.npz`` for one video. Each PNG is its map scaled to its own maximum
    (:func:`avrsp.media.write_map_png`); ``maps.npz`` holds the model's own values.
    ``rows``: the video's ``(map, ret_a, ret_v)`` from a pipeline of several videos
    (:func:`predict_to_folders`); by default the video is predicted on its own.

    For ``avrsp serve``: ``frames`` also writes ``frames/%05d.jpg`` (at most 640 pixels
    wide), ``relevance`` ``relevance.npz`` (``ret_a``, ``ret_v``: n × X⁰'s grid, for RAVF
    models), ``display_video`` ``video.mp4`` (the frames as decoded, with the sound, for
    a browser); ``on_frame(k)`` is called after each frame and may raise to stop.

    Everything is written into ``<out>.partial/`` first, and that folder becomes ``out``
    only once every output is complete, replacing an earlier ``out``. A video that fails
    part-way raises MediaError and leaves ``<out>.partial/`` with a file ``INCOMPLETE``
    saying why, so no partial output can be mistaken for a finished one.
    """
    import shutil
    import time

    from tqdm import tqdm

    info = probe(video)
    work = out.with_name(f"{out.name}.partial")
    if work.exists():
        shutil.rmtree(work)
    maps_dir = work / "maps"
    maps_dir.mkdir(parents=True)
    if frames:
        (work / "frames").mkdir()
    writers: list[OverlayWriter] = []
    writer = shown = archive = bar = None
    rets: list[tuple[np.ndarray | None, np.ndarray | None]] = []
    t0 = time.time()
    n = 0
    try:
        width = info.width * (2 if side_by_side else 1)
        threads = encoder_threads(predictor.device)
        if overlay_video:
            writer = OverlayWriter(work / f"{video.stem}_saliency.mp4", video, info.fps, width, info.height,
                                   threads=threads)
            writers.append(writer)
        if display_video:
            shown = OverlayWriter(work / "video.mp4", video, info.fps, info.width, info.height, threads=threads)
            writers.append(shown)
        archive = NpzWriter(work / "maps.npz") if npz else None
        originals = prefetch((rgb for rgb, _ in iter_frames(video)), 4) if (writers or frames) else None
        thumb = thumbnail_size(info.width, info.height)
        bar = tqdm(total=info.frames or None, unit="frame", desc=video.name, disable=not progress,
                   dynamic_ncols=True)

        def write(k: int, m: np.ndarray) -> None:
            write_map_png(maps_dir / f"{k + 1:05d}.png", m)  # the .partial folder makes it atomic
            if archive is not None:
                archive.add(k, m)
            if originals is None:
                return
            frame = next(originals)
            if writer is not None:
                heat = overlay(frame, m)
                writer.add(np.concatenate([frame, heat], 1) if side_by_side else heat)
            if shown is not None:
                shown.add(frame)
            if frames:
                save_thumbnail(frame, thumb, work / "frames" / f"{k + 1:05d}.jpg")

        outputs = Background()
        try:
            if rows is None:
                rows = predictor._predict(video, True, relevance)
            for k, (m, ret_a, ret_v) in enumerate(rows):
                outputs.submit(write, k, m)
                if relevance:
                    rets.append((ret_a, ret_v))
                n += 1
                bar.update(1)
                if on_frame is not None:
                    on_frame(k)
        finally:
            outputs.close()
        for w in writers:
            w.close()
        if archive is not None:
            archive.close()
        if relevance and rets and rets[0][0] is not None:
            np.savez(work / "relevance.npz", ret_a=np.stack([a for a, _ in rets]), ret_v=np.stack([v for _, v in rets]))
    except BaseException as e:
        for w in writers:
            w.abort()
        if archive is not None:
            archive.abort()
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
    if out.exists():
        old = out.with_name(f"{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.replace(old)
        work.replace(out)
        shutil.rmtree(old)
    else:
        work.replace(out)
    return PredictResult(video, out, n, time.time() - t0)


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


def thumbnail_size(width: int, height: int, most: int = 640) -> tuple[int, int]:
    scale = min(1.0, most / max(width, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def save_thumbnail(frame: np.ndarray, size: tuple[int, int], path: Path) -> None:
    """The frame the page shows: ``size`` from :func:`thumbnail_size`, as a JPEG."""
    Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR).save(path, quality=85)


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
