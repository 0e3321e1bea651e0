"""Saliency for any video: ``avrsp predict`` and the Python API :class:`Predictor`.

For every frame, a map at the video's resolution: 8-bit PNGs, and .npz on request. There
is also a heatmap-overlay MP4 with the original sound muxed back. Frames are decoded,
predicted and written as a stream, so memory does not grow with the video's length.
Without ``checkpoint`` the model shipped in the package is used (docs/default_model.md).
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch
from PIL import Image

from .checkpoint import atomic_write, load_model
from .inference import (Background, default_batch, predict_frames, prefetch, prepare, resolve_device,
                        resolve_precision)
from .media import SOUNDNET_RATE, MediaError, MediaWarning, clip_audio, iter_frames, probe, read_audio

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


def default_checkpoint() -> Path:
    """The model file shipped in the package (avrsp_tiny trained on synthetic data)."""
    return Path(str(resources.files("avrsp") / "assets" / "avrsp_tiny_synth.safetensors"))


def demo_video() -> Path:
    """A short clip made by ``avrsp synth``, shipped for the README's first command."""
    return Path(str(resources.files("avrsp") / "assets" / "demo.mp4"))


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (height, width)."""
    if m.shape == tuple(size):
        return m
    return np.asarray(Image.fromarray(m.astype(np.float32), "F").resize((size[1], size[0]), Image.Resampling.BILINEAR))


class Predictor:
    """Run a model file on clips and videos.

    ``checkpoint``: an avrsp model file (default: the shipped model). ``device``: cpu,
    cuda, cuda:1 or auto (CUDA when present). ``precision``: fp32, bf16 or auto (bf16
    where the hardware computes it natively, see :func:`avrsp.inference.native_bf16`).
    ``batch``: windows per forward pass (default: 8 on CUDA, 4 on the CPU).
    """

    def __init__(self, checkpoint: str | Path | None = None, device: str = "auto", precision: str = "auto",
                 batch: int | None = None):
        self.checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batch = batch or default_batch(self.device)
        self.model = prepare(load_model(self.checkpoint), self.device, self.precision)
        self.config = self.model.config

    @property
    def uses_audio(self) -> bool:
        return self.config.audio

    @torch.no_grad()
    def predict_clip(self, frames: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray:
        """The map of a clip's last frame, at the frames' resolution.

        ``frames``: T×H×W×3 uint8 RGB, any size (resized to the model's); T should be
        the model's window (``config.frames``). ``audio``: the clip's mono waveform in
        [-1, 1] at 22 050 Hz covering exactly those frames. It is windowed and scaled as
        REFERENCE §2 says. ``None`` means silence; visual-only models ignore it.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be T×H×W×3 RGB, got shape {frames.shape}")
        from .data.datasets import to_model_frames

        cfg = self.config
        param = next(self.model.parameters())
        clip = to_model_frames(list(frames), (cfg.height, cfg.width))[None].to(param.device, param.dtype)
        sound = None
        if cfg.audio:
            n = 0 if audio is None else len(audio)
            wave = clip_audio(audio, SOUNDNET_RATE, 0.0, n / SOUNDNET_RATE, SOUNDNET_RATE * cfg.frames // 10)
            sound = torch.from_numpy(wave)[None, None].to(param.device, param.dtype)
        out = self.model(clip, sound)[0].float().cpu().numpy()
        return resize_map(out, frames.shape[1:3])

    def predict_video(self, path: str | Path, *, audio: bool = True) -> Iterator[np.ndarray]:
        """Each frame's map (float32 in (0, 1)) at the video's displayed resolution, in
        order, lazily. A video without audio is predicted with silence after one warning."""
        info = probe(path)
        sound = None
        if self.uses_audio and audio:
            sound = read_audio(path)
        size = (self.config.height, self.config.width)
        frames = (rgb for rgb, _ in iter_frames(path, size=size))
        for _, m in predict_frames(self.model, frames, None, info.fps or 25.0, sound, batch=self.batch):
            yield resize_map(m, (info.height, info.width))


# ------------------------------------------------------------------ outputs

def colormap(m: np.ndarray) -> np.ndarray:
    """A map in [0, 1] → RGB uint8 with matplotlib's 'jet', the field's usual heatmap."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(m, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(frame: np.ndarray, m: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The frame under the heatmap, the heatmap's opacity growing with saliency.

    The map is scaled to its own maximum, so each frame shows where its most salient
    places are.
    """
    scaled = m / max(float(m.max()), 1e-8)
    a = (alpha * scaled)[..., None]
    return (frame * (1 - a) + colormap(scaled) * a).astype(np.uint8)


class _NpzStream:
    """Writes ``frame_00001``, ``frame_00002``, … into an .npz one array at a time."""

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


#: Audio codecs an MP4 file can hold as they are: copied packet for packet, bit-exact and in sync.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}


class _OverlayWriter:
    """H.264 video of the overlays with the source's sound: its packets copied when MP4
    can hold the codec, else re-encoded as AAC (with one warning: the encoder's priming
    delays the sound by a few tens of milliseconds)."""

    def __init__(self, path: Path, source: Path, fps: float, width: int, height: int):
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp.mp4")
        self.out = av.open(str(self.tmp), "w")
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.video = self.out.add_stream("libx264", rate=rate)
        self.video.width, self.video.height = width + width % 2, height + height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": "20", "preset": "veryfast"}
        self.source = source
        self.audio, self.copy = None, False
        self.src = av.open(str(source))
        if self.src.streams.audio:
            a = self.src.streams.audio[0]
            self.copy = a.codec_context.name in MP4_AUDIO
            if self.copy:
                self.audio = self.out.add_stream_from_template(a)
            else:
                warnings.warn(f"{source}: {a.codec_context.name} audio is re-encoded as AAC for the overlay "
                              f"video; it may lag the picture by the encoder's delay", MediaWarning, stacklevel=3)
                self.audio = self.out.add_stream("aac", rate=a.rate)
                self.audio.layout = a.layout.name if a.channels <= 2 else "stereo"

    def add(self, rgb: np.ndarray) -> None:
        h, w = self.video.height, self.video.width
        if rgb.shape[:2] != (h, w):  # yuv420p needs even sizes
            rgb = np.pad(rgb, ((0, h - rgb.shape[0]), (0, w - rgb.shape[1]), (0, 0)), mode="edge")
        for p in self.video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self.out.mux(p)

    def _copy_audio(self) -> None:
        for packet in self.src.demux(self.src.streams.audio[0]):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            packet.stream = self.audio
            self.out.mux(packet)

    def _encode_audio(self) -> None:
        resampler = av.AudioResampler(format="fltp", layout=self.audio.layout.name, rate=self.audio.rate)
        for frame in self.src.decode(audio=0):
            frame.pts = None
            for f in resampler.resample(frame):
                for p in self.audio.encode(f):
                    self.out.mux(p)
        for f in resampler.resample(None):
            for p in self.audio.encode(f):
                self.out.mux(p)
        for p in self.audio.encode(None):
            self.out.mux(p)

    def close(self) -> None:
        for p in self.video.encode(None):
            self.out.mux(p)
        if self.audio is not None:
            self._copy_audio() if self.copy else self._encode_audio()
        self.out.close()
        self.src.close()
        self.tmp.replace(self.path)


@dataclass
class PredictResult:
    video: Path
    out: Path
    frames: int
    seconds: float


def predict_to_folder(predictor: Predictor, video: Path, out: Path, *, npz: bool = False, side_by_side: bool = False,
                      overlay_video: bool = True, progress: bool = True) -> PredictResult:
    """Write ``out/maps/%05d.png`` (8-bit), ``out/<stem>_saliency.mp4`` and optionally
    ``out/maps.npz`` for one video. The PNGs hold the map × 255 (the model's own scale)."""
    import time

    from tqdm import tqdm

    info = probe(video)
    maps_dir = out / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    width = info.width * (2 if side_by_side else 1)
    writer = _OverlayWriter(out / f"{video.stem}_saliency.mp4", video, info.fps, width, info.height) \
        if overlay_video else None
    archive = _NpzStream(out / "maps.npz") if npz else None
    originals = prefetch((rgb for rgb, _ in iter_frames(video)), 4) if overlay_video else None
    bar = tqdm(total=info.frames or None, unit="frame", desc=video.name, disable=not progress, dynamic_ncols=True)

    def write(k: int, m: np.ndarray) -> None:
        atomic_write(maps_dir / f"{k + 1:05d}.png", lambda tmp: Image.fromarray(
            np.round(np.clip(m, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG"))
        if archive is not None:
            archive.add(k, m)
        if writer is not None:
            frame = next(originals)
            shown = overlay(frame, m)
            writer.add(np.concatenate([frame, shown], 1) if side_by_side else shown)

    t0 = time.time()
    n = 0
    outputs = Background()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("once", MediaWarning)
            for k, m in enumerate(predictor.predict_video(video)):
                outputs.submit(write, k, m)
                n += 1
                bar.update(1)
    finally:
        outputs.close()
    bar.close()
    if writer is not None:
        writer.close()
    if archive is not None:
        archive.close()
    return PredictResult(video, out, n, time.time() - t0)


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
