"""A pretrained SoundNet for synthetic data: the pitch probe.

The paper starts SoundNet from its published weights, trained on millions of unlabelled
videos. Those weights cannot be downloaded here, and they know nothing of the synthetic
data's six pitches anyway. Its stand-in: SoundNet (at the config's width) plus one
linear layer, trained alone to name the sounding colour of ``avrsp synth``'s
relevant-audio videos from the very windows the model will hear, then the linear layer
dropped. The result tells the sounds apart before the saliency network ever sees them,
as a pretrained SoundNet does with real sounds. ``avrsp ablate`` and ``make
default-model`` start stage 2 from it (docs/default_model.md, docs/results.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import ConfigError
from .data.synth import PALETTE, SynthConfig, generate_video
from .media import SOUNDNET_RATE
from .models import get_config
from .models.soundnet import SoundNet8
from .windows import window

#: The videos the probe learns from: a seed no study or test draws its videos from.
PROBE_DATA_SEED = 1000


def labelled_windows(cfg: SynthConfig, videos: int, frames: int, *, one_disc: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """SoundNet inputs (N×1×L) of every ``frames``-frame window of the first ``videos``
    relevant videos of ``cfg``, cut by the test protocol's own code, and the sounding
    colour of each window's last frame; ``one_disc``: only windows in which one disc
    sounds throughout."""
    sounds, labels = [], []
    for i in range(videos):
        v = generate_video(cfg, i, "relevant")
        for k in range(frames - 1, cfg.frames):
            if one_disc and len(set(v.sounding[k - frames + 1:k + 1])) != 1:
                continue
            sounds.append(window(k, frames, lambda j: j < cfg.frames).audio(v.audio, cfg.fps, frames, SOUNDNET_RATE))
            labels.append(v.colours[v.sounding[k]])
    return torch.from_numpy(np.stack(sounds))[:, None], torch.tensor(labels)


def pitch_probe(model: str = "avrsp_tiny", *, videos: int = 100, steps: int = 300, lr: float = 1e-3,
                seed: int = 0, video_frames: int = 32, log=print) -> tuple[dict[str, torch.Tensor], float]:
    """SoundNet's state dict in the registered ``model``'s width, and its held-out accuracy
    at naming the sounding colour (chance: 1/6). Windows are cut by the test protocol's
    own code, for ``model``'s clip length."""
    cfg_model = get_config(model)
    if not cfg_model.audio:
        raise ConfigError(f"pitch probe: model '{model}' has no audio branch")
    torch.manual_seed(seed)
    cfg = SynthConfig(videos=max(videos, 3), frames=video_frames, height=36, width=64,
                      relevant_fraction=1.0, seed=PROBE_DATA_SEED + seed)
    x, y = labelled_windows(cfg, videos, cfg_model.frames)
    n_train = int(0.8 * len(x))  # windows are in video order: held out are the last videos' (one may be split)
    net = SoundNet8(cfg_model.soundnet_width)
    head = nn.Linear(net.out_channels, len(PALETTE))
    optimizer = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, n_train, 16))
        loss = nn.functional.cross_entropy(head(net(x[idx]).mean(-1)), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((head(net(x[n_train:]).mean(-1)).argmax(1) == y[n_train:]).float().mean())
    log(f"pitch probe: SoundNet names the sounding colour in {accuracy:.0%} of held-out windows after {steps} steps")
    return {k: v.detach().contiguous() for k, v in net.state_dict().items()}, accuracy


def save_probe(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """safetensors in SoundNet8's layout: what a training config's ``init.soundnet`` loads."""
    from safetensors.torch import save_file

    from .checkpoint import atomic_write

    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp)))


def main(argv: list[str] | None = None) -> int:
    """``python -m avrsp.pretrain OUT.safetensors``: train and save the pitch probe."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m avrsp.pretrain", description=main.__doc__)
    ap.add_argument("out", metavar="OUT.safetensors")
    ap.add_argument("--model", default="avrsp_tiny", help="the registered model whose SoundNet width to use")
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    state, _ = pitch_probe(args.model, videos=args.videos, steps=args.steps, seed=args.seed)
    save_probe(args.out, state)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
