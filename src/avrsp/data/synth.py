"""A procedural audio-visual attention dataset where audio provably matters (``avrsp synth``).

Each video shows several discs of one size and shape on a textured background, moving
and bouncing; only their colours differ, and each colour has its own sound (a tone at a
fixed pitch per colour, the same in every video). The kinds of video (docs/data.md says
what each one tests):

* ``relevant``: one disc sounds at a time and the sounding disc changes every second or
  two. Simulated viewers look mostly at the sounding disc. Nothing in the pixels says
  which disc sounds, so only a model that ties pitch to colour can predict the gaze.
* ``music``: the soundtrack is music unrelated to the discs (chords and a beat); viewers
  follow visual cues only (faster discs draw more gaze) with a centre bias. By default
  the music is written in the tones' own register and may pass through their pitches
  (``music_register="tones"``), so that no frequency band tells it from a tone;
  ``"low"`` keeps it below every tone.
* ``offscreen`` (``offscreen_fraction``): palette tones sound, one at a time as in a
  relevant video, but none of them belongs to a disc on screen; viewers follow the
  visual cues, as in a music video. The sound alone is that of a relevant video: only
  the pictures say that it is not relevant.
* ``mixed`` (``mixed_fraction``): a relevant video with music under its tone
  (``mixed_music_gain`` × the music of a music video); viewers follow the tone.
* ``silent`` (only with ``silent_fraction`` > 0): a music video written without its
  soundtrack. Its viewers ignored the music, so its maps stay right without it: training
  videos where no sound means no sounding disc.

Per frame, each simulated viewer fixates a target (sticky over frames) with Gaussian
jitter; the binary fixation map is blurred into the continuous map as the real datasets
do. Every random choice derives from the seed. The dataset is written in the STAViS
layout (``stavis/``), the ViNet-style DHF1K layout (``dhf1k/``), and as ``.mp4`` files
with sound (``videos/``); ``synth.json`` records each video's kind, colours, which disc
sounds when, and every disc's position per frame.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from scipy.io import savemat, wavfile
from scipy.ndimage import gaussian_filter, zoom

from ..media import SOUNDNET_RATE
from ..media import write_mp4 as media_write_mp4

DB_NAME = "SynthAV"

#: Disc colours (RGB) and the pitch (Hz) each one sounds at. Pitches are not in octave or
#: harmonic relation to each other, and all lie above the music's register.
PALETTE = (
    ((230, 40, 40), 450.0),    # red
    ((40, 200, 60), 610.0),    # green
    ((50, 90, 240), 780.0),    # blue
    ((240, 210, 30), 1010.0),  # yellow
    ((210, 50, 220), 1290.0),  # magenta
    ((30, 210, 220), 1650.0),  # cyan
)
#: The music's notes in the ``low`` register (G2–G3 and their second harmonics stay below 400 Hz).
MUSIC_NOTES = (98.0, 110.0, 123.5, 130.8, 146.8, 164.8, 174.6, 196.0)
#: The music's notes in the tones' register: every semitone (A4 = 440 Hz) from A4 to A6,
#: across the palette's 450–1650 Hz; some lie within a few cents of a palette pitch.
MUSIC_NOTES_TONES = tuple(round(440.0 * 2 ** (n / 12), 1) for n in range(25))
#: Kinds whose sound is a palette tone, and kinds whose viewers follow that tone's disc.
TONE_KINDS = ("relevant", "mixed", "offscreen")
ATTENDED_KINDS = ("relevant", "mixed")
KINDS = ("relevant", "mixed", "offscreen", "music", "silent")


@dataclass(frozen=True)
class SynthConfig:
    videos: int = 12
    frames: int = 64
    height: int = 144
    width: int = 256
    fps: float = 15.0
    objects: int = 3
    viewers: int = 16
    relevant_fraction: float = 0.5
    offscreen_fraction: float = 0.0   # tones whose disc is not on screen
    mixed_fraction: float = 0.0       # relevant tones with music under them
    silent_fraction: float = 0.0   # of the music videos: written with no sound at all
    music_register: Literal["tones", "low"] = "tones"
    mixed_music_gain: float = 1.0     # the music under a mixed video's tone, × a music video's
    sample_rate: int = SOUNDNET_RATE
    seed: int = 0
    dhf1k: bool = True   # also write the DHF1K layout (PNG frames and maps)
    mp4: bool = True     # also write each video as .mp4 with its sound
    gaze_csv: bool = False  # also write the viewers' raw gaze as CSV (gaze/), for `avrsp data from-gaze`

    def validate(self) -> None:
        if self.videos < 3 or self.frames < 1:
            raise ValueError("need at least 3 videos (one test video per fold) of at least one frame")
        if not 2 <= self.objects <= len(PALETTE):
            raise ValueError(f"objects must be 2–{len(PALETTE)}")
        if self.height < 32 or self.width < 32:
            raise ValueError("height and width must be at least 32 pixels")
        if self.fps <= 0 or self.viewers < 1:
            raise ValueError("fps and viewers must be positive")
        fractions = (self.relevant_fraction, self.offscreen_fraction, self.mixed_fraction)
        if min(fractions) < 0 or sum(fractions) > 1 + 1e-9:
            raise ValueError("relevant_fraction, offscreen_fraction and mixed_fraction must be ≥ 0 and sum to ≤ 1")
        if not 0 <= self.silent_fraction <= 1:
            raise ValueError("silent_fraction must be in [0, 1]")
        if self.offscreen_fraction and self.objects > len(PALETTE) - 1:
            raise ValueError(f"offscreen videos need a colour off screen: objects must be ≤ {len(PALETTE) - 1}")
        if self.music_register not in ("tones", "low"):
            raise ValueError(f"music_register must be 'tones' or 'low', got {self.music_register!r}")
        if self.mixed_music_gain < 0:
            raise ValueError("mixed_music_gain must be ≥ 0")
        if self.gaze_csv and not self.mp4:
            raise ValueError("gaze_csv needs mp4: the raw gaze is recorded on the .mp4 videos")


@dataclass
class SynthVideo:
    """One generated video, in memory."""

    name: str
    kind: str                       # one of KINDS
    colours: list[int]              # palette index of each disc
    positions: np.ndarray           # F×K×2 (x, y) disc centres in pixels
    radius: float
    sounding: list[int | None]      # per frame: the disc on screen whose tone sounds, or None
    tones: list[int | None]         # per frame: the palette colour whose tone sounds, or None
    frames: np.ndarray              # F×H×W×3 uint8
    fixations: np.ndarray           # F×H×W bool
    maps: np.ndarray                # F×H×W uint8 continuous saliency
    audio: np.ndarray | None        # float32 mono in [-1, 1]; None: no sound track ("silent")
    gaze: np.ndarray | None = None  # F×V×2 (row, col): each viewer's fixation pixel per frame

    def peak_on_sounding_disc(self, k: int, saliency: np.ndarray, scale=(1.0, 1.0)) -> bool:
        """Frame k's map peaks on the sounding disc (within 1.5 radii) and on no nearer
        disc: the built-in model's acceptance rule. ``scale`` (x, y) maps the video's
        pixels to the map's."""
        return peak_on_sounding_disc(self.positions[k], self.sounding[k], self.radius, saliency, scale)


def peak_on_sounding_disc(positions: np.ndarray, sounding: int, radius: float, saliency: np.ndarray,
                          scale=(1.0, 1.0)) -> bool:
    """The rule of :meth:`SynthVideo.peak_on_sounding_disc` for one frame, from its discs'
    ``positions`` (x, y per disc, video pixels) and the ``sounding`` disc's index, as
    ``synth.json`` records them. The same rule holds for any disc (:func:`fastest_disc`'s,
    say): the map's peak lies within 1.5 radii of that disc's centre and no other disc's
    centre is nearer."""
    y, x = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    pos = np.asarray(positions, np.float64) * np.asarray(scale)
    d = np.hypot(pos[:, 0] - x, pos[:, 1] - y)
    return bool(d[sounding] < 1.5 * radius * scale[1] and d[sounding] == d.min())


def fastest_disc(positions: np.ndarray, k: int) -> int:
    """The disc that moved most into frame ``k`` (``positions``: F×K×2): the visual cue,
    the disc viewers who follow only what they see look at most (:func:`disc_speeds`)."""
    return int(disc_speeds(np.asarray(positions, np.float64))[k].argmax())


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    coarse = rng.uniform(0.25, 0.6, size=(6, 10, 3))
    smooth = zoom(coarse, (h / 6, w / 10, 1), order=3)[:h, :w]
    fine = rng.normal(0, 0.03, size=(h, w, 1))
    return np.clip(smooth + fine, 0, 1)


def _trajectories(rng: np.random.Generator, cfg: SynthConfig, radius: float) -> np.ndarray:
    k, f = cfg.objects, cfg.frames
    pos = np.empty((f, k, 2))
    p = np.stack([rng.uniform(radius, cfg.width - radius, k), rng.uniform(radius, cfg.height - radius, k)], 1)
    speed = rng.uniform(0.4, 2.2, k) * min(cfg.height, cfg.width) / 100
    angle = rng.uniform(0, 2 * math.pi, k)
    v = np.stack([np.cos(angle), np.sin(angle)], 1) * speed[:, None]
    lo, hi = np.array([radius, radius]), np.array([cfg.width - radius, cfg.height - radius])
    for t in range(f):
        pos[t] = p
        v = v + rng.normal(0, 0.05, v.shape) * speed[:, None]
        p = p + v
        bounce = (p < lo) | (p > hi)
        v[bounce] *= -1
        p = np.clip(p, lo, hi)
    return pos


def _schedule(rng: np.random.Generator, cfg: SynthConfig, choices: int) -> list[int]:
    """Which of ``choices`` sources sounds in each frame: one at a time, each for 1–2 s,
    never the same twice in a row."""
    out: list[int] = []
    current = int(rng.integers(choices))
    while len(out) < cfg.frames:
        length = int(round(rng.uniform(1.0, 2.0) * cfg.fps))
        out.extend([current] * max(length, 1))
        current = int((current + rng.integers(1, choices)) % choices)
    return out[:cfg.frames]


def tone(freq: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples at ``sr`` Hz of a disc's sound at ``freq`` Hz: a slight vibrato (5 Hz,
    ±0.4 %, random phase) and a second harmonic at 0.35, peak about 1.35."""
    t = np.arange(n) / sr
    vibrato = 1 + 0.004 * np.sin(2 * math.pi * 5 * t + rng.uniform(0, 6.3))
    phase = 2 * math.pi * freq * np.cumsum(vibrato) / sr
    return np.sin(phase) + 0.35 * np.sin(2 * phase)


def _render_audio(rng: np.random.Generator, cfg: SynthConfig, kind: str, tones: list[int | None]) -> np.ndarray:
    """The soundtrack: the palette tones of ``tones`` (a palette colour per frame) for the
    tone kinds, music for ``music``, both for ``mixed``; a faint noise floor under all."""
    sr = cfg.sample_rate
    n = int(round(cfg.frames / cfg.fps * sr))
    audio = np.zeros(n)
    if kind in TONE_KINDS:
        # One segment per run of the same tone, with soft 20 ms edges.
        start = 0
        for t in range(1, cfg.frames + 1):
            if t == cfg.frames or tones[t] != tones[start]:
                a, b = int(start / cfg.fps * sr), min(n, int(t / cfg.fps * sr))
                seg = tone(PALETTE[tones[start]][1], b - a, sr, rng)
                ramp = min(int(0.02 * sr), (b - a) // 2)
                if ramp > 0:
                    env = np.ones(b - a)
                    env[:ramp] = np.linspace(0, 1, ramp)
                    env[-ramp:] = np.linspace(1, 0, ramp)
                    seg *= env
                audio[a:b] += 0.35 * seg
                start = t
    if kind in ("music", "mixed"):
        audio += (cfg.mixed_music_gain if kind == "mixed" else 1.0) * _music(rng, cfg, n)
    audio += rng.normal(0, 0.005, n)
    return np.clip(audio, -1, 1).astype(np.float32)


def _music(rng: np.random.Generator, cfg: SynthConfig, n: int) -> np.ndarray:
    """Chords of three notes on a beat of 90–140 per minute, each with a decaying
    envelope and a noise kick, in ``cfg.music_register``."""
    sr = cfg.sample_rate
    notes = MUSIC_NOTES_TONES if cfg.music_register == "tones" else MUSIC_NOTES
    audio = np.zeros(n)
    beat = int(sr * 60 / rng.uniform(90, 140))
    for a in range(0, n, beat):
        b = min(n, a + beat)
        t = np.arange(b - a) / sr
        env = np.exp(-t * 4)
        chord = rng.choice(notes, 3, replace=False)
        audio[a:b] += 0.12 * env * sum(np.sin(2 * math.pi * f * t) + 0.3 * np.sin(4 * math.pi * f * t)
                                       for f in chord)
        kick = min(b - a, int(0.05 * sr))
        audio[a:a + kick] += 0.3 * rng.normal(0, 1, kick) * np.exp(-np.arange(kick) / (0.01 * sr))
    return audio


def disc_speeds(positions: np.ndarray) -> np.ndarray:
    """F×K: how far each disc moved since the previous frame (plus 1e-3, so that every
    disc keeps a chance), the speeds the simulated viewers' visual rule weighs discs by."""
    return np.linalg.norm(np.diff(positions, axis=0, prepend=positions[:1]), axis=2) + 1e-3


def _fixations(rng: np.random.Generator, cfg: SynthConfig, kind: str, positions: np.ndarray, radius: float,
               sounding: list[int | None], points: np.ndarray | None = None) -> np.ndarray:
    f, k = positions.shape[:2]
    h, w = cfg.height, cfg.width
    speed = disc_speeds(positions)
    targets = np.full(cfg.viewers, -2)  # -1: centre-biased free viewing, ≥0: a disc
    fix = np.zeros((f, h, w), bool)

    def draw(t: int) -> int:
        u = rng.uniform()
        s = sounding[t]
        if s is not None and u < 0.75:
            return s
        if u < (0.85 if s is not None else 0.75):
            p = speed[t] / speed[t].sum()
            return int(rng.choice(k, p=p))
        return -1

    for t in range(f):
        changed = t > 0 and sounding[t] != sounding[t - 1]
        for i in range(cfg.viewers):
            if targets[i] == -2 or rng.uniform() < (0.8 if changed else 0.1):
                targets[i] = draw(t)
            if targets[i] >= 0:
                x, y = positions[t, targets[i]] + rng.normal(0, 0.35 * radius, 2)
            else:
                x, y = rng.normal(w / 2, w / 6), rng.normal(h / 2, h / 6)
            fix[t, int(np.clip(round(y), 0, h - 1)), int(np.clip(round(x), 0, w - 1))] = True
            if points is not None:  # each viewer's own pixel, which the boolean map merges
                points[t, i] = int(np.clip(round(y), 0, h - 1)), int(np.clip(round(x), 0, w - 1))
    return fix


def _continuous(fix: np.ndarray, sigma: float) -> np.ndarray:
    out = np.empty(fix.shape, np.uint8)
    for t in range(len(fix)):
        m = gaussian_filter(fix[t].astype(np.float32), sigma)
        out[t] = np.round(255 * m / max(m.max(), 1e-12)).astype(np.uint8)
    return out


def generate_video(cfg: SynthConfig, index: int, kind: str) -> SynthVideo:
    """Generate video ``index`` (its own random stream, so videos do not depend on each other).
    A ``silent`` video is the ``music`` video of the same index without its sound."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    kind_drawn = "music" if kind == "silent" else kind
    rng = np.random.default_rng([cfg.seed, index])
    h, w = cfg.height, cfg.width
    radius = 0.09 * min(h, w)
    colours = [int(c) for c in rng.choice(len(PALETTE), cfg.objects, replace=False)]
    positions = _trajectories(rng, cfg, radius)
    sounding: list[int | None] = [None] * cfg.frames
    tones: list[int | None] = [None] * cfg.frames
    if kind_drawn in ATTENDED_KINDS:
        sounding = list(_schedule(rng, cfg, cfg.objects))
        tones = [colours[d] for d in sounding]
    elif kind_drawn == "offscreen":
        # From a stream of its own: the pictures and the gaze are the music video's.
        away = [c for c in range(len(PALETTE)) if c not in colours]
        tones = [away[j] for j in _schedule(np.random.default_rng([cfg.seed, index, 1]), cfg, len(away))]
    background = _background(rng, h, w)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    frames = np.empty((cfg.frames, h, w, 3), np.uint8)
    for t in range(cfg.frames):
        img = background.copy()
        for j, c in enumerate(colours):
            x, y = positions[t, j]
            alpha = np.clip(radius - np.hypot(xx - x, yy - y) + 0.5, 0, 1)[..., None]
            img = img * (1 - alpha) + alpha * (np.array(PALETTE[c][0]) / 255)
        frames[t] = np.round(img * 255).astype(np.uint8)
    points = np.zeros((cfg.frames, cfg.viewers, 2), np.int64)
    fix = _fixations(rng, cfg, kind_drawn, positions, radius, sounding, points)
    maps = _continuous(fix, sigma=0.035 * w)
    audio = None if kind == "silent" else _render_audio(rng, cfg, kind, tones)
    return SynthVideo(f"synth_{index:03d}_{kind}", kind, colours, positions, radius, sounding, tones, frames, fix,
                      maps, audio, gaze=points)


def video_kinds(cfg: SynthConfig) -> list[str]:
    """Kinds in a seeded order: round(videos·fraction) relevant, mixed and offscreen ones,
    the rest music; of the music ones, in order, every one that takes the running count of
    silent ones past ``silent_fraction`` of those seen is silent (0.5: the second, fourth,
    …). Which videos are of which kind does not depend on ``silent_fraction``, so two
    datasets that differ in it alone hold the same videos, some without their music; and a
    dataset without mixed or offscreen videos has the kinds it had before those existed."""
    counts = [int(round(cfg.videos * f)) for f in (cfg.relevant_fraction, cfg.mixed_fraction, cfg.offscreen_fraction)]
    counts[-1] = min(counts[-1], cfg.videos - sum(counts[:-1]))  # rounding must not overfill
    kinds = ["relevant"] * counts[0] + ["mixed"] * counts[1] + ["offscreen"] * counts[2]
    kinds += ["music"] * (cfg.videos - len(kinds))
    np.random.default_rng([cfg.seed, 10**6]).shuffle(kinds)
    others = [i for i, k in enumerate(kinds) if k == "music"]
    for j, i in enumerate(others):
        if math.floor((j + 1) * cfg.silent_fraction) > math.floor(j * cfg.silent_fraction):
            kinds[i] = "silent"
    return kinds


def folds(kinds: list[str]) -> list[int]:
    """Test fold (1–3) of each video: one cycle through the videos kind by kind (relevant,
    mixed, offscreen, then music and silent together), so every fold gets a test video and
    each kind is spread evenly over the folds."""
    group = {"relevant": 0, "mixed": 1, "offscreen": 2}
    order = sorted(range(len(kinds)), key=lambda i: (group.get(kinds[i], 3), i))
    out = [0] * len(kinds)
    for j, i in enumerate(order):
        out[i] = j % 3 + 1
    return out


def write_mp4(path: Path, video: SynthVideo, cfg: SynthConfig) -> None:
    """``video`` as the MP4 file ``avrsp synth`` writes (:func:`avrsp.media.write_mp4`), for
    tests and benchmarks that need one video."""
    media_write_mp4(path, video.frames, cfg.fps, video.audio, cfg.sample_rate)


def write_dataset(root: str | Path, cfg: SynthConfig, *, overwrite: bool = False, progress=None) -> dict:
    """Generate ``cfg.videos`` videos and write every layout under ``root``; returns the metadata.

    The dataset is written to a sibling temporary folder and moved into place when
    complete, so an interrupted run leaves no half-written dataset. ``root`` must not exist,
    or be empty, or (with ``overwrite``) hold a synthetic dataset, which is replaced whole.
    """
    cfg.validate()
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not (root / "synth.json").is_file():
            raise FileExistsError(f"{root}: exists and is not a synthetic dataset; choose an empty folder")
        if not overwrite:
            raise FileExistsError(f"{root}: already holds a synthetic dataset (use --overwrite to replace it)")
    tmp = root.parent / f".{root.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    meta = _write(tmp, cfg, progress)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return meta


def _write(root: Path, cfg: SynthConfig, progress) -> dict:
    stavis, dhf1k, mp4s = root / "stavis", root / "dhf1k", root / "videos"
    kinds = video_kinds(cfg)
    test_fold = folds(kinds)
    meta = {"config": asdict(cfg), "db": DB_NAME, "palette": [list(c) + [p] for c, p in PALETTE], "videos": []}
    for i, kind in enumerate(kinds):
        v = generate_video(cfg, i, kind)
        split = "val" if test_fold[i] == 1 else "train"  # DHF1K-style: fold 1 doubles as validation
        dhf_id = f"{i + 1:04d}"
        d_frames = stavis / "video_frames" / DB_NAME / v.name
        d_ann = stavis / "annotations" / DB_NAME / v.name
        d_dhf = dhf1k / split / dhf_id
        dirs = [d_frames, d_ann / "maps"] + [d_dhf / "images", d_dhf / "maps", d_dhf / "fixation"] * cfg.dhf1k
        for d in dirs + [mp4s] * cfg.mp4:
            d.mkdir(parents=True, exist_ok=True)
        for t in range(cfg.frames):
            Image.fromarray(v.frames[t]).save(d_frames / f"img_{t + 1:05d}.jpg", quality=92)
            Image.fromarray(v.maps[t]).save(d_ann / "maps" / f"eyeMap_{t + 1:05d}.jpg", quality=95)
            savemat(d_ann / f"fixMap_{t + 1:05d}.mat", {"eyeMap": v.fixations[t].astype(np.uint8)},
                    do_compression=True)
            if cfg.dhf1k:
                Image.fromarray(v.frames[t]).save(d_dhf / "images" / f"{t + 1:04d}.png")
                Image.fromarray(v.maps[t]).save(d_dhf / "maps" / f"{t + 1:04d}.png")
                Image.fromarray(v.fixations[t].astype(np.uint8) * 255).save(d_dhf / "fixation" / f"{t + 1:04d}.png")
        if v.audio is not None:  # a silent video has no .wav, as a real dataset's video without sound
            d_wav = stavis / "video_audio" / DB_NAME / v.name
            d_wav.mkdir(parents=True)
            wavfile.write(d_wav / f"{v.name}.wav", cfg.sample_rate, np.round(v.audio * 32767).astype(np.int16))
        if cfg.mp4:
            write_mp4(mp4s / f"{v.name}.mp4", v, cfg)
        if cfg.gaze_csv:
            from .synth_gaze import write_gaze_csv

            write_gaze_csv(root / "gaze" / f"{v.name}.csv", v, cfg, i)
        meta["videos"].append({
            "name": v.name, "kind": kind, "test_fold": test_fold[i], "dhf1k": f"{split}/{dhf_id}",
            "colours": v.colours, "pitches": [PALETTE[c][1] for c in v.colours], "radius": v.radius,
            "sounding": v.sounding, "tones": v.tones, "positions": np.round(v.positions, 2).tolist(),
        })
        if progress is not None:
            progress(i + 1, len(kinds))
    lists = stavis / "fold_lists"
    lists.mkdir(parents=True, exist_ok=True)
    for fold in (1, 2, 3):
        for part in ("train", "test"):
            names = [m["name"] for m in meta["videos"] if (m["test_fold"] == fold) == (part == "test")]
            text = "".join(f"{n} {cfg.frames} {cfg.fps:g}\n" for n in names)
            (lists / f"{DB_NAME}_list_{part}_{fold}_fps.txt").write_text(text)
    if cfg.gaze_csv:
        from .synth_gaze import GAZE_SCREEN

        (root / "gaze" / "screen.json").write_text(json.dumps(GAZE_SCREEN, indent=1))
    (root / "synth.json").write_text(json.dumps(meta))
    return meta
