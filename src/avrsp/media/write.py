"""Writing media: saliency maps as PNG and .npz, heatmap overlays, and H.264 videos that
carry a source's sound. Every writer writes a hidden temporary file and moves it into
place when complete, so no half-written file looks finished."""

from __future__ import annotations

import functools
import warnings
import zipfile
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from .read import MediaWarning


def write_map_png(path: str | Path, saliency: np.ndarray) -> None:
    """Write a map as an 8-bit greyscale PNG scaled to its own maximum:
    round(map / max(map) × 255), negative values as 0, an all-zero map as zeros.

    The field's published predictions (ViNet, TASED-Net, UNISAL) are stored so. A map
    written at the model's own scale (× 255) keeps only as many grey levels as its peak
    reaches, a handful on a faint frame, and re-scoring such files moves the scores; every
    metric ignores the map's scale, so scaling costs nothing (the model's own values are
    in ``predict --npz``).

    zlib's run-length strategy at level 1: on the built-in model's maps (smooth, after
    PNG's row filters mostly runs) it writes files about the size of zlib's default in
    a fraction of its time, and smaller than plain level 1's; ``predict`` writes one a
    frame on the cores the model uses.
    """
    m = np.array(saliency, np.float32)  # one copy, scaled in place: maps at a video's size are large
    np.maximum(m, 0, out=m)
    peak = float(m.max()) if m.size else 0.0
    if peak > 0:
        m *= np.float32(255 / peak)
        np.minimum(np.round(m, out=m), 255, out=m)
    Image.fromarray(m.astype(np.uint8)).save(path, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)



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
    own coordination (docs/performance.md);
    0 (x264's choice) beside a GPU."""
    import torch

    return 1 if torch.device(device).type == "cpu" else 0


def thumbnail_size(width: int, height: int, most: int = 640) -> tuple[int, int]:
    scale = min(1.0, most / max(width, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def save_thumbnail(frame: np.ndarray, size: tuple[int, int], path: Path) -> None:
    """The frame the page shows: ``size`` from :func:`thumbnail_size`, as a JPEG."""
    Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR).save(path, quality=85)


def write_mp4(path: Path, frames, fps: float, audio: np.ndarray | None = None, sample_rate: int = 22050) -> None:
    """RGB ``frames`` as an H.264 (CRF 18) MP4 at ``path``, with ``audio`` (mono float
    samples) as AAC at ``sample_rate`` when given. Written beside ``path`` and moved into
    place."""
    tmp = path.with_suffix(".tmp.mp4")
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast"}
        if audio is not None:  # streams are all added before the first packet
            a_s = out.add_stream("aac", rate=sample_rate)
            a_s.layout = "mono"
        for img in (first, *frames):
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if audio is not None:
            frame = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            for p in [*a_s.encode(frame), *a_s.encode(None)]:
                out.mux(p)
    tmp.replace(path)
