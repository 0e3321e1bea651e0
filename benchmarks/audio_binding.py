"""Does the network learn to use the sound? A fast, in-memory training experiment.

    .venv/bin/python benchmarks/audio_binding.py [--videos 1000] [--video-frames 16] [--steps 2400]
        [--size 64x96] [--oracle | --pitch-probe] [--init FILE] [--save FILE] [--json FILE] [--model '{"dims": [64, 32, 16, 16]}']
    .venv/bin/python benchmarks/audio_binding.py --score MODEL.safetensors [--val 5] [--generate 144x256] [--seeds 99]
    .venv/bin/python benchmarks/audio_binding.py --diagnose MODEL.safetensors
    .venv/bin/python benchmarks/audio_binding.py --claims MODEL.safetensors [--val 12] [--seeds 400]
    .venv/bin/python benchmarks/audio_binding.py --select RUN_DIR --data ROOT [--val-videos 30] [--copy FILE]

Trains an ``avrsp_tiny``-shaped network on relevant-audio videos from ``avrsp synth``'s
renderer, kept in memory and never written to disk, so that many short videos (too many
to memorise which disc sounds when) cost nothing but their generation. Every
``--eval-every`` steps it scores unseen videos (seed 99, as ``tests/test_predict.py``)
with their sound and with silence: the fraction of frames whose map peaks on the
sounding disc. A model that uses the sound scores clearly higher with it.

``--oracle`` replaces SoundNet by a learned embedding of the sounding disc's colour: a
perfect audio feature. ``--pitch-probe`` trains SoundNet alone to name the sounding
colour from the same windows. If even the oracle goes unused, the obstacle is on the
visual side of the fusion, not in learning pitch. At the end a run measures how local
the fusion tokens are (``cell_locality``): RAVF can only single out the sounding disc's
cell if that cell's token describes that cell. ``--score`` judges a model file from
``avrsp train`` by the acceptance test's measure, before the test is run (``--seeds``:
other unseen videos, e.g. 300-307, the bar test's). ``--select``
picks the checkpoint of a run on its validation videos (``make default-model``).
``--diagnose`` says where a model file loses hits (SoundNet's features, or the windows
where the sounding disc changes), on development seeds 200–202. ``--claims`` scores a
model file by the ablation study's measures (docs/results.md).
docs/default_model.md records what each run gave.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

import avrsp
from avrsp.data.datasets import to_model_frames
from avrsp.data.synth import PALETTE, SynthConfig, _write_mp4, disc_speeds, generate_video
from avrsp.loss import SaliencyLoss
from avrsp.media import SOUNDNET_RATE, MediaWarning, clip_audio, frame_span, resize_map
from avrsp.predict import Predictor

EVAL_SEED = 99       # tests/test_predict.py's unseen videos
EVAL_FRAMES = 32
TEST_FRAMES = 40     # the length of tests/test_predict.py's videos


class OracleAudio(nn.Module):
    """Stands in for SoundNet: the first ``len(PALETTE)`` input samples carry a one-hot
    code of the sounding colour (all zero for silence), embedded as one audio token."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        self.embed = nn.Linear(len(PALETTE), out_channels)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.embed(audio[:, 0, :len(PALETTE)]))[:, :, None]


class Clips:
    """One video's frames and maps at the model's size, and its clips with or without sound."""

    def __init__(self, video, size: tuple[int, int], frames: int, oracle: bool, fps: float):
        self.video, self.size, self.frames, self.oracle, self.fps = video, size, frames, oracle, fps
        self.rgb = to_model_frames(list(video.frames), size)                                   # 3×F×H×W
        self.maps = torch.stack([torch.from_numpy(resize_map(m.astype(np.float32), size)) for m in video.maps])
        self.scale = np.array([size[1] / video.frames.shape[2], size[0] / video.frames.shape[1]])
        self.audio_samples = avrsp.get_config("avrsp_tiny", frames=frames).audio_samples  # SoundNet's buffer

    def __len__(self) -> int:
        return len(self.maps)

    def clip(self, k: int, sound: bool = True):
        first = k - self.frames + 1
        start, end = frame_span(first, k, self.fps)
        length = self.audio_samples
        if self.oracle:
            audio = np.zeros(length, np.float32)
            if sound and self.video.sounding[k] is not None:
                audio[self.video.colours[self.video.sounding[k]]] = 1.0
        else:
            audio = clip_audio(self.video.audio if sound else None, SOUNDNET_RATE, start, end, length)
        indices = [max(j, 0) for j in range(first, k + 1)]
        return self.rgb[:, indices], torch.from_numpy(audio)[None], self.maps[k]

    def on_sounding_disc(self, k: int, saliency: np.ndarray) -> bool:
        return self.video.peak_on_sounding_disc(k, saliency, self.scale)


def hit_rates(model: nn.Module, videos: list[Clips]) -> tuple[float, float]:
    """Fraction of frames (every second frame with a full clip) peaking on the sounding
    disc, with the sound and with silence."""
    model.eval()
    hits, total = {True: 0, False: 0}, 0
    with torch.no_grad():
        for v in videos:
            ks = list(range(v.frames - 1, len(v), 2))
            total += len(ks)
            for sound in (True, False):
                clips = [v.clip(k, sound) for k in ks]
                pred = model(torch.stack([c[0] for c in clips]), torch.stack([c[1] for c in clips]))
                hits[sound] += sum(v.on_sounding_disc(k, m) for k, m in zip(ks, pred.numpy()))
    model.train()
    return hits[True] / total, hits[False] / total


def cell_locality(model: nn.Module, clip: torch.Tensor) -> tuple[float, float]:
    """How local the fusion tokens are: for each X⁰ cell, the share of the input-gradient
    energy of its feature vector that falls inside the cell's own 32×32 pixels, averaged
    over cells; returned with the share a token that sees the whole frame evenly would
    have (1 / cells)."""
    model.eval()
    clip = clip[None].clone().requires_grad_(True)
    x0 = model.features(clip)[0]
    h, w = x0.shape[-2:]
    shares = []
    for i in range(h):
        for j in range(w):
            grad, = torch.autograd.grad(x0[0, :, :, i, j].norm(), clip, retain_graph=True)
            energy = grad.pow(2).sum((0, 1, 2))
            shares.append(float(energy[32 * i:32 * (i + 1), 32 * j:32 * (j + 1)].sum() / energy.sum()))
    model.train()
    return float(np.mean(shares)), 1 / (h * w)


def pitch_probe(args: argparse.Namespace, log=print) -> float:
    """The audio side alone (``avrsp.pretrain.pitch_probe``): SoundNet trained to name the
    sounding colour; returns held-out accuracy, and saves SoundNet with ``--save``."""
    from avrsp.pretrain import pitch_probe as probe, save_probe

    state, accuracy = probe("avrsp_tiny", videos=args.videos, steps=args.steps, lr=args.lr, seed=args.seed,
                            video_frames=EVAL_FRAMES, log=log)
    if args.save:
        save_probe(args.save, state)
    return accuracy


def _predicted(predictor, cfg: SynthConfig):
    """``(video, sound, maps)`` for each relevant video of ``cfg``, written to MP4 as
    ``unseen_<i>_seed<seed>`` and predicted by ``predictor`` as ``avrsp predict`` does,
    with its sound and with silence."""
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(cfg.videos):
            video = generate_video(cfg, i, "relevant")
            path = Path(tmp) / f"unseen_{i}_seed{cfg.seed}.mp4"
            _write_mp4(path, video, cfg)
            for sound in (True, False):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MediaWarning)  # silence is asked for, not missing
                    yield video, sound, list(predictor.predict_video(path, audio=sound))


def seed_list(text: str) -> list[int]:
    """``--seeds``: ``99``, ``200,201,202`` or ``203-214``."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def visual_cue_rate(video) -> float:
    """The share of ``video``'s frames whose fastest disc is the sounding one: how often a
    model that, without the sound, follows the viewers' visual rule (faster discs draw
    more gaze) lands on the sounding disc."""
    speed = disc_speeds(video.positions)
    return float(np.mean([speed[k].argmax() == s for k, s in enumerate(video.sounding)]))


def score(args: argparse.Namespace, log=print, predictor=None) -> tuple[float, float]:
    """The acceptance test's measure for a model file that ``avrsp train`` wrote: ``--val``
    unseen videos of the test's length (seed 99, or each of ``--seeds``) rendered at
    ``--generate``, written to MP4 and predicted by ``avrsp.Predictor`` as ``avrsp
    predict`` does, with their sound and with silence. Returns the fractions of all
    frames that peak on the sounding disc; logs them per seed, with the visual cue's own
    rate (:func:`visual_cue_rate`), and with several seeds their mean ± standard deviation."""
    h, w = map(int, args.generate.split("x"))
    predictor = predictor or Predictor(args.score, device="cpu", precision="fp32")
    seeds = seed_list(args.seeds)
    per_seed = []
    for seed in seeds:
        cfg = SynthConfig(videos=args.val, frames=TEST_FRAMES, height=h, width=w, seed=seed)
        hits, cue = {True: 0, False: 0}, []
        for video, sound, maps in _predicted(predictor, cfg):
            hits[sound] += sum(video.peak_on_sounding_disc(k, m) for k, m in enumerate(maps))
            if sound:  # each video comes twice, with its sound and with silence
                cue.append(visual_cue_rate(video))
        frames = args.val * cfg.frames
        per_seed.append((hits[True] / frames, hits[False] / frames, float(np.mean(cue))))
        log(f"{args.score}, seed {seed}: peak on the sounding disc in {per_seed[-1][0]:.1%} of {frames} frames "
            f"with sound, {per_seed[-1][1]:.1%} with silence (the visual cue alone: {per_seed[-1][2]:.1%}; "
            f"{args.val} unseen videos at {h}×{w})")
    sound, silence, cue = (np.array(x) for x in zip(*per_seed))
    if len(seeds) > 1:
        log(f"{args.score}, {len(seeds)} seeds: with sound {sound.mean():.1%} ± {sound.std(ddof=1):.1%}, with "
            f"silence {silence.mean():.1%} ± {silence.std(ddof=1):.1%}, visual cue {cue.mean():.1%} "
            f"(mean ± standard deviation over seeds)")
    return float(sound.mean()), float(silence.mean())


def claims(args: argparse.Namespace, log=print) -> dict:
    """``--claims FILE``: the ablation study's measures (:func:`avrsp.ablate.evaluate_run`)
    for any audio model file, on ``--val`` unseen videos of each kind (seed: the first of
    ``--seeds``; 40 frames at ``--generate``): relevant CC with the sound and with
    silence, music maps with the music against with silence and another video's music,
    and how well Ret_A and Ret_V separate the kinds (ROC AUC)."""
    from avrsp.ablate import StudyConfig, evaluate_run
    from avrsp.checkpoint import read_metadata
    from avrsp.data.synth import DB_NAME, write_dataset
    from avrsp.evaluate import plan

    if not read_metadata(args.claims)["config"]["audio"]:
        raise SystemExit(f"{args.claims}: a model without audio; the claims are about the sound")
    h, w = map(int, args.generate.split("x"))
    cfg = SynthConfig(videos=2 * args.val, frames=TEST_FRAMES, height=h, width=w, relevant_fraction=0.5,
                      seed=seed_list(args.seeds)[0])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_dataset(data, cfg)
        items = sorted((i for fold in "123" for i in plan(data / "stavis", DB_NAME, fold, [None])),
                       key=lambda i: i.video.name)  # every video is one fold's test video
        r = evaluate_run(Path(args.claims), StudyConfig(height=h, width=w, device="cpu"), data, items)
    sound, silence = r["scores"]["sound"], r["scores"]["silence"]
    out = {"videos": len(items), "seed": cfg.seed, "relevant_cc_sound": sound["relevant"]["cc"],
           "relevant_cc_silence": silence["relevant"]["cc"],
           "gain": sound["relevant"]["cc"] - silence["relevant"]["cc"], "hits": r["hits"],
           "music_cc_sound": sound["music"]["cc"], "music_cc_silence": silence["music"]["cc"],
           "music_agreement": r["music_agreement"], "ret_a_auc": r.get("ret_a_auc"), "ret_v_auc": r.get("ret_v_auc"),
           "ret": r.get("ret", [])}
    log(f"{args.claims} on {len(items)} unseen videos (seed {cfg.seed}): relevant CC {out['relevant_cc_sound']:.3f} "
        f"with the sound, {out['relevant_cc_silence']:.3f} with silence (gain {out['gain']:.3f}); music maps "
        f"with the music against silence CC {r['music_agreement']['silence']:.3f}, against other music "
        f"{r['music_agreement']['other']:.3f}; Ret_A AUC {out['ret_a_auc']:.2f}, Ret_V AUC {out['ret_v_auc']:.2f}")
    return out


DEV_SEEDS = (200, 201, 202)   # development videos: for choosing between candidates, not for reporting


def soundnet_separability(net: nn.Module, frames: int = 8, videos: int = 120, seed: int = 4242) -> float:
    """How well the sounding colour can be read off ``net``'s features by a linear
    classifier: held-out accuracy (chance 1/6) over the windows of ``videos`` unseen
    relevant videos whose ``frames`` frames have one sounding disc, features averaged
    over time and standardised, 70 / 30 split in video order."""
    from avrsp.pretrain import labelled_windows

    cfg = SynthConfig(videos=videos, frames=32, height=36, width=64, relevant_fraction=1.0, seed=seed)
    x, y = labelled_windows(cfg, videos, frames, one_disc=True)
    n = int(0.7 * len(x))
    net.eval()
    with torch.no_grad():
        f = net(x).float()
    f = f.mean(-1) if f.dim() == 3 else f.flatten(1)
    f = (f - f[:n].mean(0)) / (f[:n].std(0) + 1e-6)
    torch.manual_seed(0)
    head = nn.Linear(f.shape[1], len(PALETTE))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(500):
        loss = nn.functional.cross_entropy(head(f[:n]), y[:n])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((head(f[n:]).argmax(1) == y[n:]).float().mean())


def hits_by_window(predictor, seeds=DEV_SEEDS, videos: int = 6, generate: tuple[int, int] = (144, 256)) -> dict:
    """The acceptance test's hits (:func:`score`) on unseen relevant videos of ``seeds``,
    with the sound and with silence, split by whether the frame's window has one
    sounding disc or straddles a change: ``{(one_disc, sound): (hits, frames)}``."""
    T = predictor.config.frames
    out = {(one, sound): [0, 0] for one in (True, False) for sound in (True, False)}
    for seed in seeds:
        cfg = SynthConfig(videos=videos, frames=TEST_FRAMES, height=generate[0], width=generate[1], seed=seed)
        for video, sound, maps in _predicted(predictor, cfg):
            for k, m in enumerate(maps):
                one = len(set(video.sounding[max(0, k - T + 1):k + 1])) == 1
                out[(one, sound)][0] += video.peak_on_sounding_disc(k, m)
                out[(one, sound)][1] += 1
    return {key: tuple(v) for key, v in out.items()}


def diagnose(args: argparse.Namespace, log=print) -> dict:
    """``--diagnose FILE``: where a model file loses hits. The linear separability of its
    SoundNet's features (does the sound's information reach the fusion?) and its hits on
    the development seeds split by window (are the misses where the sounding disc
    changes?)."""
    predictor = Predictor(args.diagnose, device="cpu", precision="fp32")
    result = {"separability": soundnet_separability(predictor.model.audio_net, predictor.config.frames)}
    log(f"{args.diagnose}: a linear classifier names the sounding colour from SoundNet's features in "
        f"{result['separability']:.1%} of held-out one-disc windows")
    result["hits"] = hits_by_window(predictor)
    for (one, sound), (h, n) in result["hits"].items():
        log(f"  {'one sounding disc' if one else 'a change in the window'}, {'sound' if sound else 'silence'}: "
            f"{h}/{n} = {h / max(n, 1):.1%} on the sounding disc (seeds {', '.join(map(str, DEV_SEEDS))})")
    return result


def select(args: argparse.Namespace, log=print) -> Path:
    """``--select RUN``: score every checkpoint of an ``avrsp train`` run on its own
    validation videos (the seeded holdout of its training fold, both kinds; never the
    test fold) with the measures of ``avrsp ablate``, and pick the one that best meets
    the built-in model's bars: on the sounding disc in ≥ 65 % of relevant frames with the
    sound and ≤ 35 % with silence, music maps unchanged by the music (CC ≥ 0.95). The
    margin is the smallest of the three distances past their bars; ``--copy`` copies
    the winner."""
    import shutil

    import avrsp.ablate as ab
    from avrsp.evaluate import Item, video_kinds
    from avrsp.train import _videos, load_train_config

    run_dir, data = Path(args.select), Path(args.data)
    cfg = load_train_config(run_dir / "config.yaml")
    _, val = _videos(cfg)
    kinds = video_kinds(data)
    items = [Item("SynthAV", "val", v) for kind in ("relevant", "music")
             for v in [v for v in val if kinds.get(v.name) == kind][:args.val_videos]]
    meta = json.loads((data / "synth.json").read_text())["config"]
    study = ab.StudyConfig(height=meta["height"], width=meta["width"], device="cpu")
    rows = []
    for ck in sorted((run_dir / "ckpt").glob("step_*.safetensors")):
        m = ab.measures(ab.evaluate_run(ck, study, data, items))
        margin = min(m["hits_sound"] - 0.65, 0.35 - m["hits_silence"], m["music_agree_silence"] - 0.95)
        rows.append((margin, ck, m))
        log(f"{ck.name}: on the sounding disc {m['hits_sound']:.2f} with sound, {m['hits_silence']:.2f} with "
            f"silence; music maps vs silence CC {m['music_agree_silence']:.3f}; relevant CC {m['relevant_cc']:.3f} "
            f"(silence {m['relevant_cc_silence']:.3f}); margin {margin:+.3f}")
    margin, best, _ = max(rows, key=lambda r: r[0])
    log(f"selected {best.name} (margin {margin:+.3f}; {len(items)} validation videos)")
    if args.copy:
        shutil.copyfile(best, args.copy)
        log(f"copied to {args.copy}")
    return best


def run(args: argparse.Namespace, log=print) -> dict:
    torch.manual_seed(args.seed)
    gen_h, gen_w = map(int, args.generate.split("x"))
    size = tuple(map(int, args.size.split("x")))
    model = avrsp.create_model("avrsp_tiny", frames=args.frames, height=size[0], width=size[1],
                               **json.loads(args.model))
    if args.oracle:
        model.audio_net = OracleAudio(model.audio_net.out_channels)
    if args.init:
        missing, _ = model.load_state_dict(torch.load(args.init), strict=False)
        log(f"init from {args.init}" + (f" ({len(missing)} tensors new)" if missing else ""))
    if args.init_soundnet:
        model.audio_net.load_state_dict(load_file(args.init_soundnet))
        log(f"SoundNet from {args.init_soundnet}")
    t0 = time.perf_counter()
    train_cfg = SynthConfig(videos=args.videos, frames=args.video_frames, height=gen_h, width=gen_w,
                            relevant_fraction=1.0, seed=1000 + args.seed)
    eval_cfg = SynthConfig(videos=args.val, frames=EVAL_FRAMES, height=gen_h, width=gen_w, seed=EVAL_SEED)
    train = [Clips(generate_video(train_cfg, i, "relevant"), size, args.frames, args.oracle, train_cfg.fps)
             for i in range(args.videos)]
    held_out = [Clips(generate_video(eval_cfg, i, "relevant"), size, args.frames, args.oracle, eval_cfg.fps)
                for i in range(args.val)]
    log(f"{args.videos} training and {args.val} held-out videos in {time.perf_counter() - t0:.0f} s")

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = SaliencyLoss()
    rng = np.random.default_rng(args.seed)
    rows, losses, t0 = [], [], time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        batch = []
        for _ in range(args.batch):
            v = train[int(rng.integers(len(train)))]
            batch.append(v.clip(int(rng.integers(len(v)))))
        pred = model(torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch]))
        loss = loss_fn(pred, torch.stack([b[2] for b in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            sound, silence = hit_rates(model, held_out)
            rows.append({"step": step, "loss": float(np.mean(losses)), "hit_sound": sound, "hit_silence": silence,
                         "seconds": round(time.perf_counter() - t0, 1)})
            log(f"step {step}: loss {rows[-1]['loss']:.3f}, peak on the sounding disc {sound:.2f} with sound, "
                f"{silence:.2f} with silence ({rows[-1]['seconds']:.0f} s)")
            losses = []
    if args.save:
        torch.save(model.state_dict(), args.save)
    result = {"args": vars(args), "rows": rows}
    share, even = cell_locality(model, held_out[0].clip(held_out[0].frames - 1)[0])
    result["locality"] = {"own_cell_share": share, "even_share": even}
    log(f"fusion tokens at {size[0]}×{size[1]}: {share:.2f} of each cell's input gradient lies in the cell "
        f"({even:.2f} if it saw the whole frame evenly)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=1000, help="training videos, all relevant-audio")
    p.add_argument("--video-frames", type=int, default=16, help="frames per training video")
    p.add_argument("--val", type=int, default=8, help="held-out videos")
    p.add_argument("--generate", default="72x128", help="HxW the videos are rendered at")
    p.add_argument("--size", default="64x96", help="HxW the model sees")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (T)")
    p.add_argument("--steps", type=int, default=2400, help="0 measures --init's fusion-token locality only")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--model", default="{}", help="avrsp_tiny overrides as JSON")
    p.add_argument("--oracle", action="store_true", help="a perfect audio feature instead of SoundNet")
    p.add_argument("--pitch-probe", action="store_true",
                   help="train SoundNet alone to name the sounding colour (the audio side's capacity)")
    p.add_argument("--select", default="", metavar="RUN",
                   help="score each checkpoint of an avrsp train run on its validation videos; pick the best")
    p.add_argument("--data", default="", metavar="ROOT", help="with --select: the avrsp synth dataset of the run")
    p.add_argument("--val-videos", type=int, default=30, help="with --select: validation videos of each kind")
    p.add_argument("--copy", default="", metavar="FILE", help="with --select: copy the selected checkpoint here")
    p.add_argument("--score", default="", metavar="FILE",
                   help="score a model file instead of training: the acceptance test's measure on --val videos")
    p.add_argument("--seeds", default=str(EVAL_SEED), metavar="SEEDS",
                   help="with --score: the seeds of the unseen videos (99, 200,201,202 or 203-214); with "
                        "--claims: the first is the seed")
    p.add_argument("--claims", default="", metavar="FILE",
                   help="the ablation study's measures for a model file, on --val unseen videos of each kind")
    p.add_argument("--diagnose", default="", metavar="FILE",
                   help="a model file's SoundNet separability and hits by window on the development seeds")
    p.add_argument("--init", default="", help="start from a state dict saved by --save")
    p.add_argument("--init-soundnet", default="", help="SoundNet weights (.safetensors) saved by --pitch-probe --save")
    p.add_argument("--save", default="", help="write the trained state dict (of SoundNet with --pitch-probe) here")
    p.add_argument("--json", default="", help="write the arguments and every evaluation here")
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    arguments = parser().parse_args()
    if arguments.select:
        select(arguments)
    elif arguments.diagnose:
        diagnose(arguments)
    elif arguments.score:
        score(arguments)
    elif arguments.claims:
        claims(arguments)
    elif arguments.pitch_probe:
        pitch_probe(arguments)
    else:
        run(arguments)
