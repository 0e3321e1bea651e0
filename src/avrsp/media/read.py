"""Video and audio through PyAV: streaming RGB frames, mono 22 050 Hz audio, and the
per-clip audio excerpts SoundNet expects (docs/data.md).

Every failure is a :class:`MediaError` whose message is one line naming the file and the
cause; recoverable oddities (no audio track) are a :class:`MediaWarning`.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

SOUNDNET_RATE = 22050
SOUNDNET_SCALE = 256.0  # SoundNet's input range is [-256, 256] (docs/data.md)


class MediaError(Exception):
    """A file that cannot be used; ``str(e)`` is ``"<path>: <cause>"``."""


class MediaWarning(UserWarning):
    """A file that can be used with a documented fallback (e.g. silence for no audio)."""


def _cause(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0].rstrip(":; ")


def _open(path: str | Path) -> av.container.InputContainer:
    if not Path(path).is_file():
        raise MediaError(f"{path}: no such file")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot open as a media file ({_cause(e)})") from None


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares. ``frames`` is the container's count (0 if unknown) and
    ``fps`` its average rate; ``width``/``height`` are the displayed size (after rotation)."""

    path: str
    width: int
    height: int
    rotation: int
    fps: float
    frames: int
    duration: float
    audio_rate: int | None
    audio_channels: int


def probe(path: str | Path) -> VideoInfo:
    """Read a video's header; raises MediaError for files without a video stream."""
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(f"{path}: no video stream")
        v = c.streams.video[0]
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = float(rate) if rate else 0.0
        w, h = v.codec_context.width, v.codec_context.height
        rotation = 0
        duration = float(c.duration / av.time_base) if c.duration else 0.0
        if v.duration and v.time_base:
            duration = float(v.duration * v.time_base)
        a = c.streams.audio[0] if c.streams.audio else None
        # The display rotation lives on frames; decode one to learn it.
        try:
            first = next(c.decode(video=0), None)
        except av.FFmpegError as e:
            raise MediaError(f"{path}: cannot decode video ({_cause(e)})") from None
        if first is None:
            raise MediaError(f"{path}: the video stream has no frames")
        rotation = int(round(first.rotation or 0)) % 360
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(str(path), w, h, rotation, fps, int(v.frames or 0), duration,
                         int(a.rate) if a is not None else None, int(a.channels) if a is not None else 0)


_swscale = threading.local()


def _reformatter() -> VideoReformatter:
    """This thread's swscale converter. ``VideoFrame.reformat`` sets up a new swscale
    context (its filters included) for every frame; one kept per thread is reused while
    sizes and formats stay the same, which at 144×256 makes the area resize to the
    model's size 3× cheaper (docs/performance.md). Not shared between threads: a swscale
    context is not thread-safe."""
    if not hasattr(_swscale, "reformatter"):
        _swscale.reformatter = VideoReformatter()
    return _swscale.reformatter


def _rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """``frame`` as RGB uint8, resized to ``size`` = (height, width) with swscale's area
    filter when given."""
    if size is None:
        return _reformatter().reformat(frame, format="rgb24").to_ndarray()
    return _reformatter().reformat(frame, width=size[1], height=size[0], format="rgb24",
                                   interpolation="AREA").to_ndarray()


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 frame to (height, width) with swscale's area filter, the same
    resampling ``iter_frames`` applies to decoded video, so frames from images and from
    video files reach the model alike."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    return _rgb(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"), size)


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (height, width), float32; PIL widens the filter
    when shrinking, so it antialiases."""
    if m.shape == tuple(size):
        return m.astype(np.float32, copy=False)
    im = Image.fromarray(m.astype(np.float32, copy=False), mode="F")
    return np.array(im.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def _display(img: np.ndarray, rotation: int) -> np.ndarray:
    # FFmpeg's display matrix angle is counter-clockwise; np.rot90 also turns counter-clockwise.
    return np.ascontiguousarray(np.rot90(img, rotation // 90)) if rotation else img


def iter_frames(path: str | Path, size: tuple[int, int] | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Decode a video lazily: ``(rgb, time)`` per frame, rgb H×W×3 uint8 as displayed
    (rotation applied), resized to ``size`` = (height, width) when given, time in seconds
    from the stream's start. Memory does not grow with the video's length. Frames come
    in decode order, one per coded frame, so variable-frame-rate video keeps its timing
    in ``time``."""
    c = _open(path)
    try:
        if not c.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        start = None
        n = 0
        try:
            for frame in c.decode(stream):
                rotation = int(round(frame.rotation or 0)) % 360
                rgb = _rgb(frame, size if size is None or rotation in (0, 180) else size[::-1])
                t = float(frame.time) if frame.time is not None else n / float(stream.average_rate or 25)
                start = t if start is None else start
                n += 1
                yield _display(rgb, rotation), t - start
        except av.FFmpegError as e:
            raise MediaError(f"{path}: video decoding failed after {n} frames ({_cause(e)})") from None
        if n == 0:
            raise MediaError(f"{path}: the video stream has no decodable frames")
    finally:
        c.close()


def no_audio_track(path: str | Path) -> str:
    """What a warning says of a file without sound."""
    return f"{path}: no audio track; using silence"


def read_audio(path: str | Path, sample_rate: int = SOUNDNET_RATE, *, warn: bool = True) -> np.ndarray | None:
    """The first audio track as mono float32 in [-1, 1] at ``sample_rate`` Hz (channels
    averaged, resampled by libswresample), aligned so that sample 0 is the video's start.
    Returns ``None`` (with one MediaWarning) when the file has no audio track."""
    c = _open(path)
    try:
        if not c.streams.audio:
            if warn:
                warnings.warn(no_audio_track(path), MediaWarning, stacklevel=2)
            return None
        stream = c.streams.audio[0]
        video_start = 0.0
        if c.streams.video and c.streams.video[0].start_time is not None:
            v = c.streams.video[0]
            video_start = float(v.start_time * v.time_base)
        resampler = None
        chunks: list[np.ndarray] = []
        first_time = None
        try:
            for frame in c.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                if resampler is None:
                    # Keep the source layout; we average channels ourselves so a mono or
                    # dual-mono file keeps its level (swresample's downmix does not).
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sample_rate)
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            if resampler is not None:
                chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        except (av.FFmpegError, ValueError) as e:
            raise MediaError(f"{path}: audio decoding failed ({_cause(e)})") from None
        if not chunks:
            raise MediaError(f"{path}: the audio track has no decodable samples")
        audio = np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32)
        offset = int(round(((first_time or 0.0) - video_start) * sample_rate))
        if offset > 0:
            audio = np.concatenate([np.zeros(offset, np.float32), audio])
        elif offset < 0:
            audio = audio[-offset:]
        return np.clip(audio, -1.0, 1.0)
    finally:
        c.close()


def frame_span(first: int, last: int, fps: float) -> tuple[float, float]:
    """Start and end time (s) of frames ``first..last`` (0-based): frame k is centred at
    k/fps and owns 1/fps seconds around its centre (docs/data.md)."""
    return (first - 0.5) / fps, (last + 0.5) / fps


def clip_audio(audio: np.ndarray | None, sample_rate: int, start: float, end: float, length: int,
               *, reverse: bool = False) -> np.ndarray:
    """SoundNet input for one clip, cut as STAViS and AViNet cut it (docs/data.md).

    The excerpt ``[start, end)`` seconds of ``audio`` is clamped to the track (a start
    before 0 s becomes 0, an end past the track's end becomes its end, so near the ends
    the excerpt is shorter rather than padded with silence), multiplied by one Hanning
    window over its whole length, centred in a zero buffer of ``length`` samples
    (22050/10·T for T frames) and scaled to [-256, 256]. ``reverse`` time-reverses the
    excerpt, for the test protocol's reversed windows. An excerpt longer than the buffer
    (clips below 10 fps) keeps its centre part, windowed over that part. ``audio=None``
    (no track) gives silence.
    """
    out = np.zeros(length, np.float32)
    if audio is None:
        return out
    a = max(int(round(start * sample_rate)), 0)
    b = min(int(round(end * sample_rate)), len(audio))
    n = b - a
    if n <= 0:
        return out
    excerpt = np.asarray(audio[a:b], np.float32)
    if n > length:
        cut = (n - length) // 2
        excerpt = excerpt[cut:cut + length]
        n = length
    if reverse:
        excerpt = excerpt[::-1]
    offset = (length - n) // 2
    out[offset:offset + n] = excerpt * np.hanning(n).astype(np.float32) * SOUNDNET_SCALE
    return out
