"""A pretrained SoundNet for synthetic data: naming pitches on a chromatic grid.

The paper starts SoundNet from its published weights, trained on millions of unlabelled
videos; those cannot be downloaded here. Their stand-in must not know the answer the
saliency network is scored on: which disc, which colour, or whether a sound is relevant.
So SoundNet (at the config's width) plus one linear layer learns a task of its own:
**which semitones sound** in a window, on a grid of 41 semitones from 220 Hz (A3) to
2.2 kHz (B6 rounded), with labels independent of the synthetic palette.

Each training window is cut exactly as the model's windows are (``media.clip_audio``:
the clip's excerpt, a Hanning window, centred in SoundNet's buffer), from a track made
of the synthesiser's own sounds at pitches drawn uniformly on a log scale over the grid,
not from the palette's six: one or two sustained tones (a change inside the window, as
when the sounding disc changes), music chords (``data.synth``'s music in the tones'
register), both, or only the noise floor. The label is every semitone that sounds for at
least a quarter of the excerpt, tones and chord notes alike: the task names what is
heard, never whether it matters. The linear layer is dropped; ``avrsp ablate`` and ``make
default-model`` start (and keep) stage 2's SoundNet at the result (docs/results.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import ConfigError
from .data.synth import MUSIC_NOTES_TONES, SynthConfig, generate_video, tone
from .media import SOUNDNET_RATE, clip_audio
from .models import get_config
from .models.soundnet import SoundNet8
from .windows import window

#: The grid: semitone n (0–40) is 220·2^(n/12) Hz.
GRID_LOW, GRID_BINS = 220.0, 41
#: Seeds of the windows the front-end learns from and is checked on; no study or test
#: draws videos from these (they make no videos at all).
TRAIN_SEED, HELD_OUT_SEED = 1000, 1001


def semitone(freq: float) -> int:
    """The grid bin nearest ``freq`` (may fall outside 0–40)."""
    return int(round(12 * math.log2(freq / GRID_LOW)))


def _music_notes(rng: np.random.Generator, n: int, sr: int, bins: np.ndarray) -> np.ndarray:
    """Chords of three notes of the tones' register on a 90–140 per minute beat, as
    ``synth`` writes music; marks in ``bins`` how many samples each note sounds."""
    out = np.zeros(n)
    beat = int(sr * 60 / rng.uniform(90, 140))
    for a in range(int(-rng.uniform(0, beat)), n, beat):
        lo, hi = max(a, 0), min(n, a + beat)
        t = np.arange(lo - a, hi - a) / sr
        env = np.exp(-t * 4)
        for f in rng.choice(MUSIC_NOTES_TONES, 3, replace=False):
            out[lo:hi] += 0.12 * env * (np.sin(2 * math.pi * f * t) + 0.3 * np.sin(4 * math.pi * f * t))
            # A note counts while its envelope is above a quarter of its onset (~0.35 s).
            bins[semitone(f)] += int(np.sum(env > 0.25))
    return out


def chromatic_window(rng: np.random.Generator, frames: int, fps: float, length: int) -> tuple[np.ndarray, np.ndarray]:
    """One training window: SoundNet's input (``length`` samples, as ``clip_audio`` cuts a
    ``frames``-frame clip at ``fps``) and its multi-hot label over the grid."""
    sr = SOUNDNET_RATE
    n = int(round(frames / fps * sr))
    track = np.zeros(n)
    heard = np.zeros(GRID_BINS + 24, np.int64)  # room for notes just off the grid
    content = rng.choice(["tone", "tone+music", "music", "noise"], p=[0.45, 0.25, 0.15, 0.15])
    if "tone" in content:
        cut = int(rng.uniform(0.2, 0.8) * n) if rng.uniform() < 0.3 else n
        for a, b in ((0, cut), (cut, n)):
            if b - a <= 0:
                continue
            f = GRID_LOW * 2 ** (rng.uniform(-0.4, GRID_BINS - 0.6) / 12)
            seg = tone(f, b - a, sr, rng)
            ramp = min(int(0.02 * sr), (b - a) // 2)
            env = np.ones(b - a)
            if ramp > 0:
                env[:ramp], env[-ramp:] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
            track[a:b] += 0.35 * seg * env
            heard[semitone(f)] += b - a
    if "music" in content:
        track += rng.uniform(0.5, 1.5) * _music_notes(rng, n, sr, heard)
    track += rng.normal(0, 0.005, n)
    audio = np.clip(track, -1, 1).astype(np.float32)
    x = clip_audio(audio, sr, 0.0, n / sr, length)
    label = (heard[:GRID_BINS] >= 0.25 * n).astype(np.float32)
    return x, label


def chromatic_pretrain(model: str = "avrsp_tiny", *, steps: int = 800, batch: int = 32, lr: float = 1e-3,
                       seed: int = 0, fps: float = 15.0, held_out: int = 1024, log=print
                       ) -> tuple[dict[str, torch.Tensor], dict]:
    """SoundNet's state dict in the registered ``model``'s width, trained to name the
    semitones of :func:`chromatic_window`'s windows for ``model``'s clip length, and what
    it measured on ``held_out`` other windows: ``accuracy`` (one-tone windows whose
    strongest output is the tone's semitone; chance 1/41), ``f1`` (all windows, outputs
    > 0.5)."""
    cfg = get_config(model)
    if not cfg.audio:
        raise ConfigError(f"pretraining: model '{model}' has no audio branch")
    torch.manual_seed(seed)
    net = SoundNet8(cfg.soundnet_width)
    head = nn.Linear(net.out_channels, GRID_BINS)
    optimizer = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=lr)
    rng = np.random.default_rng([TRAIN_SEED, seed])

    def draw(r: np.random.Generator, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(chromatic_window(r, cfg.frames, fps, cfg.audio_samples) for _ in range(k)))
        return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))

    for _ in range(steps):
        x, y = draw(rng, batch)
        loss = nn.functional.binary_cross_entropy_with_logits(head(net(x).mean(-1)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    x, y = draw(np.random.default_rng([HELD_OUT_SEED, seed]), held_out)
    with torch.no_grad():
        out = head(net(x).mean(-1))
    single = y.sum(1) == 1
    accuracy = float((out[single].argmax(1) == y[single].argmax(1)).float().mean())
    predicted = out > 0
    tp = float((predicted & (y > 0)).sum())
    f1 = 2 * tp / max(float(predicted.sum() + (y > 0).sum()), 1.0)
    log(f"audio front-end: names a lone tone's semitone in {accuracy:.0%} of held-out windows (chance 1/41), "
        f"F1 {f1:.2f} over all, after {steps} steps")
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    return state, {"accuracy": accuracy, "f1": f1, "steps": steps, "batch": batch, "seed": seed}


def labelled_windows(cfg: SynthConfig, videos: int, frames: int, *, one_disc: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """SoundNet inputs (N×1×L) of every ``frames``-frame window of the first ``videos``
    relevant videos of ``cfg``, cut by the test protocol's own code, and the sounding
    colour of each window's last frame; ``one_disc``: only windows in which one disc
    sounds throughout. For measuring what features know of the palette (a diagnostic);
    the front-end never trains on these labels."""
    sounds, labels = [], []
    for i in range(videos):
        v = generate_video(cfg, i, "relevant")
        for k in range(frames - 1, cfg.frames):
            if one_disc and len(set(v.sounding[k - frames + 1:k + 1])) != 1:
                continue
            sounds.append(window(k, frames, lambda j: j < cfg.frames).audio(v.audio, cfg.fps, frames, SOUNDNET_RATE))
            labels.append(v.colours[v.sounding[k]])
    return torch.from_numpy(np.stack(sounds))[:, None], torch.tensor(labels)


def save_front_end(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """safetensors in SoundNet8's layout: what a training config's ``init.soundnet`` loads."""
    from safetensors.torch import save_file

    from .checkpoint import atomic_write

    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp)))


def main(argv: list[str] | None = None) -> int:
    """``python -m avrsp.pretrain OUT.safetensors``: train and save the audio front-end."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m avrsp.pretrain", description=main.__doc__)
    ap.add_argument("out", metavar="OUT.safetensors")
    ap.add_argument("--model", default="avrsp_tiny", help="the registered model whose SoundNet width to use")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    state, _ = chromatic_pretrain(args.model, steps=args.steps, seed=args.seed)
    save_front_end(args.out, state)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
