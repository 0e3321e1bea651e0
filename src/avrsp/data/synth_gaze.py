"""The synthetic viewers' raw gaze (``avrsp synth --gaze-csv``): each viewer's fixation
of each frame as a tracker would record it, at a tracker's rate, with noise, blinks,
glitches and samples on the letterbox bars, in the plain CSV of docs/datasets.md, so that
``avrsp data from-gaze`` can be checked against the maps ``synth`` wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .synth import SynthConfig, SynthVideo

#: The simulated study's screen: 4:3, so that a 16:9 video fitted to it has letterbox bars
#: (docs/datasets.md, "Your own eye-tracking data").
GAZE_SCREEN = {"resolution": [1280, 960], "size_cm": [40.0, 30.0], "distance_cm": 60.0, "video_rect": "fit"}
GAZE_RATE = 250.0          # samples per second, a tracker's rate
GAZE_NOISE = 0.15          # σ of the samples around their frame's point, in video pixels
GAZE_BLINKS_PER_S = 0.3
GAZE_BLINK_S = (0.08, 0.2)
GAZE_GLITCH = 0.01         # share of samples thrown off the screen (reflections, lost pupil)
GAZE_IN_BARS = 0.005       # share of samples on the letterbox bars, on the screen but off the video
GAZE_MARGIN_S = 0.2        # the recording starts before the video's onset and ends after its end


def gaze_rect(cfg: SynthConfig) -> tuple[float, float, float, float]:
    """Where the video is shown on :data:`GAZE_SCREEN`: fitted, centred (left, top, width, height)."""
    sw, sh = GAZE_SCREEN["resolution"]
    scale = min(sw / cfg.width, sh / cfg.height)
    return (sw - cfg.width * scale) / 2, (sh - cfg.height * scale) / 2, cfg.width * scale, cfg.height * scale


def gaze_samples(video: SynthVideo, cfg: SynthConfig, index: int) -> list[dict[str, np.ndarray]]:
    """Each viewer's raw samples at :data:`GAZE_RATE`: times (s from the video's onset,
    rounded to 0.1 ms), screen x, y (NaN in blinks) and validity. A sample taken while
    frame k is shown lies at that viewer's fixation pixel of frame k (its centre, plus
    noise of σ = :data:`GAZE_NOISE` video pixels), as the tracker would see a viewer who
    holds still within a frame; blinks hide the eye for 80–200 ms; a few samples fly off
    the screen or land on the letterbox bars. The samples draw from a stream of their own
    (seed, index, 2), so the video's pictures, sound and maps do not change."""
    rng = np.random.default_rng([cfg.seed, index, 2])
    left, top, rw, rh = gaze_rect(cfg)
    sx, sy = rw / cfg.width, rh / cfg.height
    duration = cfg.frames / cfg.fps
    starts = np.arange(cfg.frames) / cfg.fps
    out = []
    for i in range(cfg.viewers):
        t = np.arange(-GAZE_MARGIN_S, duration + GAZE_MARGIN_S, 1 / GAZE_RATE) + rng.uniform(0, 1 / GAZE_RATE)
        t = np.round(t, 4)
        k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, cfg.frames - 1)
        row, col = video.gaze[k, i, 0], video.gaze[k, i, 1]
        x = left + (col + 0.5 + rng.normal(0, GAZE_NOISE, len(t))) * sx
        y = top + (row + 0.5 + rng.normal(0, GAZE_NOISE, len(t))) * sy
        valid = np.ones(len(t), bool)
        n_blinks = rng.poisson(GAZE_BLINKS_PER_S * (t[-1] - t[0]))
        for onset, length in zip(rng.uniform(t[0], t[-1], n_blinks), rng.uniform(*GAZE_BLINK_S, n_blinks)):
            valid[(t >= onset) & (t < onset + length)] = False
        glitch = rng.uniform(size=len(t)) < GAZE_GLITCH
        x[glitch] = np.where(rng.uniform(size=int(glitch.sum())) < 0.5, -40.0, GAZE_SCREEN["resolution"][0] + 40.0)
        bars = ~glitch & (rng.uniform(size=len(t)) < GAZE_IN_BARS)
        y[bars] = top / 2 if top > 0 else y[bars]
        x[~valid], y[~valid] = np.nan, np.nan
        out.append({"t": t, "x": x, "y": y, "valid": valid})
    return out


def write_gaze_csv(path: Path, video: SynthVideo, cfg: SynthConfig, index: int) -> None:
    """The viewers' raw gaze as the plain CSV of docs/datasets.md: viewer,time,x,y,valid
    (time in seconds from the video's onset; x, y in screen pixels, empty in blinks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["viewer,time,x,y,valid"]
    for i, s in enumerate(gaze_samples(video, cfg, index)):
        for t, x, y, ok in zip(s["t"], s["x"], s["y"], s["valid"]):
            lines.append(f"v{i:02d},{t:.4f},{x:.2f},{y:.2f},1" if ok else f"v{i:02d},{t:.4f},,,0")
    path.write_text("\n".join(lines) + "\n")
