"""The fusion study's measures (docs/results.md): one trained model scored on a fixed
set of unseen synthetic videos, each predicted with its own sound and with silence.

Every video of a scoring set is generated from its seed (``avrsp synth``'s renderer, in
memory), predicted through the product's window pipeline
(:func:`avrsp.inference.maps_of_videos`) on the windows of every ``every``-th frame and
of the last one, and scored per frame:

* **relevant** and **mixed** videos (viewers follow the tone's disc): how often the map
  peaks on the sounding disc (``hits``), and its CC with the ground truth, with the
  sound and with silence; the paired gains are sound − silence;
* **offscreen** and **music** videos (viewers follow what they see): the CC between the
  maps made with the sound and with silence (``agreement``, 1 = the sound changes
  nothing), and how often the map peaks on the fastest disc, the visual cue
  (``cue_hits``), with the sound and with silence;
* **Ret_A / Ret_V** (RAVF models): each video's mean over its windows; ROC AUC of
  relevant against offscreen and against music videos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .data.synth import ATTENDED_KINDS, SynthConfig, fastest_disc, generate_video, peak_on_sounding_disc

#: The kinds a scoring set holds, in report order.
SCORED_KINDS = ("relevant", "mixed", "offscreen", "music")


@dataclass(frozen=True)
class ScoringSet:
    """``videos`` unseen videos of each of :data:`SCORED_KINDS`, ``frames`` frames at
    ``height``×``width``, generated from ``seed``; every ``every``-th frame is scored."""

    seed: int
    videos: int
    frames: int = 24
    height: int = 144
    width: int = 256
    every: int = 2

    def synth_config(self) -> SynthConfig:
        return SynthConfig(videos=self.videos * len(SCORED_KINDS), frames=self.frames, height=self.height,
                           width=self.width, seed=self.seed)

    def items(self):
        """``(index, kind)`` of each video: the kinds interleaved, so any prefix is balanced."""
        return [(i, SCORED_KINDS[i % len(SCORED_KINDS)]) for i in range(self.videos * len(SCORED_KINDS))]


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(a positive scores above a negative), ties counting half: the area under the ROC
    curve of separating the two by thresholding the score."""
    from scipy.stats import rankdata

    if not positive or not negative:
        return math.nan
    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _predict(model, videos: list, every: int, batch: int) -> list[dict[int, tuple]]:
    """For each ``(frames, fps, audio)`` of ``videos``, frame → (map, ret_a, ret_v)."""
    from .inference import maps_of_videos

    out: list[dict[int, tuple]] = [{} for _ in videos]
    for v, row in maps_of_videos(model, [(f, len(f), fps, a, None) for f, fps, a in videos], batch=batch,
                                 every=every, relevance=True):
        if isinstance(row, BaseException):
            raise row
        k, m, ret_a, ret_v = row
        out[v][k] = (m, ret_a, ret_v)
    return out


def score_model(model, scoring: ScoringSet, *, batch: int = 8, progress=None) -> dict:
    """Every measure of the module docstring for ``model`` (prepared for inference) on
    ``scoring``: ``{"kinds": {kind: {measure: value}}, "ret_auc": {...}, "videos": [...]}``,
    the per-video figures kept so that any figure can be recomputed from the record."""
    from .media import resize_rgb
    from .metrics import cc, imresize

    cfg = scoring.synth_config()
    size = (model.config.height, model.config.width)
    scale = (size[1] / cfg.width, size[0] / cfg.height)
    per_video = []
    for n, (i, kind) in enumerate(scoring.items()):
        video = generate_video(cfg, i, kind)
        frames = [resize_rgb(f, size) for f in video.frames]
        sound, silence = _predict(model, [(frames, cfg.fps, video.audio), (frames, cfg.fps, None)], scoring.every,
                                  batch)
        scored = sorted(sound)
        row: dict = {"index": i, "kind": kind, "frames": len(scored)}
        for condition, maps in (("sound", sound), ("silence", silence)):
            # The disc a good map peaks on: the sounding one where viewers follow the tone,
            # else the visual cue.
            attended = kind in ATTENDED_KINDS
            target = [video.sounding[k] if attended else fastest_disc(video.positions, k) for k in scored]
            hits = sum(peak_on_sounding_disc(video.positions[k], d, video.radius, maps[k][0], scale)
                       for k, d in zip(scored, target))
            ccs = [cc(imresize(maps[k][0], video.maps[k].shape), video.maps[k].astype(np.float64)) for k in scored]
            row[f"cc_{condition}"] = float(np.nanmean(ccs))
            row[f"{'hits' if attended else 'cue_hits'}_{condition}"] = hits / len(scored)
        row["agreement"] = float(np.nanmean([cc(sound[k][0], silence[k][0]) for k in scored]))
        if sound[scored[0]][1] is not None:
            row["ret_a"] = float(np.mean([sound[k][1].mean() for k in scored]))
            row["ret_v"] = float(np.mean([sound[k][2].mean() for k in scored]))
        per_video.append(row)
        if progress is not None:
            progress(n + 1, len(scoring.items()))
    return summarise(per_video)


def summarise(per_video: list[dict]) -> dict:
    """Per-kind means of the per-video figures (each video weighs the same), the paired
    gains, and the Ret AUCs."""
    kinds: dict[str, dict[str, float]] = {}
    for kind in SCORED_KINDS:
        rows = [r for r in per_video if r["kind"] == kind]
        if not rows:
            continue
        keys = [k for k in rows[0] if k not in ("index", "kind", "frames")]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        mean["cc_gain"] = mean["cc_sound"] - mean["cc_silence"]
        if kind in ATTENDED_KINDS:
            mean["hits_gain"] = mean["hits_sound"] - mean["hits_silence"]
        else:
            mean["cue_change"] = mean["cue_hits_sound"] - mean["cue_hits_silence"]
        mean["videos"] = len(rows)
        kinds[kind] = mean
    out: dict = {"kinds": kinds, "videos": per_video}
    if any("ret_a" in r for r in per_video):
        out["ret_auc"] = {f"{key}_relevant_vs_{other}": roc_auc(
            [r[key] for r in per_video if r["kind"] == "relevant"], [r[key] for r in per_video if r["kind"] == other])
            for key in ("ret_a", "ret_v") for other in ("offscreen", "music")}
    return out


def primary(measures: dict) -> dict[str, float]:
    """The study's two primary outcomes (docs/results.md, "Protocol"): ``uses_sound``, the
    gain in hits from the sound on relevant and mixed videos (each video weighs the same),
    and ``discounts_sound``, the agreement of maps with the sound and with silence on
    offscreen and music videos."""
    rows = measures["videos"]
    attended = [r["hits_sound"] - r["hits_silence"] for r in rows if r["kind"] in ATTENDED_KINDS]
    ignored = [r["agreement"] for r in rows if r["kind"] not in ATTENDED_KINDS]
    return {"uses_sound": float(np.mean(attended)) if attended else math.nan,
            "discounts_sound": float(np.mean(ignored)) if ignored else math.nan}


__all__ = ["SCORED_KINDS", "ScoringSet", "primary", "roc_auc", "score_model", "summarise"]
