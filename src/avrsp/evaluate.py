"""The evaluation protocol behind the paper's tables (docs/evaluation.md).

``evaluate`` runs model files over a dataset's test videos with sliding windows and
scores every frame; :mod:`avrsp.prediction_folders` scores a folder of someone else's
predicted maps the same way. Averages go per video first, then over videos (the
audio-visual tables). DHF1K's frame average is reported beside it.

Work is saved per video, atomically, under the output folder:

- ``videos/<dataset>/<split>/<video>.json``: per-frame scores, the unit of resumption;
- ``cache/<dataset>/<split>/<video>.npy``: the video's predictions (float32, model
  size), kept from the end of prediction until its scores are written, so a run killed
  while scoring does not predict again; deleted afterwards to bound disk use;
- ``maps/<dataset>/<video>/eyeMap_%05d.png`` with ``save_maps``: 8-bit predictions, each
  scaled to its own maximum.

A killed run restarts where it stopped: it skips the videos already scored and reuses
the predictions already made.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .checkpoint import atomic_write
from .data.datasets import (STAVIS_DATABASES, AnnotatedVideo, DataError, dhf1k_videos, stavis_databases,
                            stavis_fold_list, stavis_videos)
from .media import write_map_png
from .metrics import METRICS, imresize, score_frame

TABLE_METRICS = ("sim", "cc", "nss", "auc_j")          # Tables I–II, in their order
EXTRA_METRICS = ("kld", "sauc")
LABELS = {"sim": "SIM↑", "cc": "CC↑", "nss": "NSS↑", "auc_j": "AUC-J↑", "kld": "KL↓", "sauc": "sAUC↑"}
OTHER_FRAMES = 10  # sAUC negatives: fixations of this many other frames of the same video (Borji's M)
#: The layout of the per-video records; a folder of another layout is not resumed.
RECORD_FORMAT = 2


class EvalError(Exception):
    """An evaluation that cannot run as asked; the message says why."""


class EvalWarning(UserWarning):
    """Something left out of the scores, reported once with its path."""


@dataclass
class Item:
    dataset: str
    split: str
    video: AnnotatedVideo
    checkpoint: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.split}/{self.video.name}"


# ------------------------------------------------------------------ what to evaluate

def plan(data: Path, dataset: str, split: str, checkpoints: Sequence[Path | None]) -> list[Item]:
    """The (dataset, split, video, model) items of a protocol.

    * ``DHF1K``: the validation videos, one model.
    * a STAViS database with ``split`` 1–3: that split's test list, one model (DIEM: its
      fixed list).
    * ``split="all"``: three models, one per split. Coutrot1/2, AVAD, ETMD, SumMe (any
      database with three folds) are scored by 3-fold cross-validation, pooling the test
      folds. DIEM's fixed test list is scored by each split's model.
    * ``stavis``: every database of ``data/fold_lists``.
    """
    data = Path(data)
    if dataset.upper() == "DHF1K":
        if len(checkpoints) != 1:
            raise EvalError("DHF1K validation takes one model")
        videos = dhf1k_videos(data, "val")
        return [Item("DHF1K", "val", v, checkpoints[0]) for v in videos]
    names = stavis_databases(data) if dataset.lower() == "stavis" else [dataset]
    if not names:
        raise EvalError(f"{data}: no fold lists under fold_lists/")
    splits = [1, 2, 3] if split == "all" else [int(split)]
    if len(checkpoints) != len(splits):
        raise EvalError(f"split {split} takes {len(splits)} model file(s), one per split in order; "
                        f"got {len(checkpoints)}")
    items = []
    for db in names:
        fixed = db == "DIEM" or stavis_fold_list(data, db, "test", None).is_file()
        for s, ckpt in zip(splits, checkpoints):
            for v in stavis_videos(data, db, "test", None if fixed else s):
                items.append(Item(db, str(s), v, ckpt))
    return items


def video_kinds(data: Path) -> dict[str, str]:
    """Video name → kind ('relevant'/'music') when ``data`` is (part of) an ``avrsp synth`` dataset."""
    for candidate in (Path(data) / "synth.json", Path(data).parent / "synth.json"):
        if candidate.is_file():
            meta = json.loads(candidate.read_text())
            kinds = {v["name"]: v["kind"] for v in meta["videos"]}
            kinds.update({v["dhf1k"].split("/")[1]: v["kind"] for v in meta["videos"]})
            return kinds
    return {}


# ------------------------------------------------------------------ scoring one video

def _fixation_points(video: AnnotatedVideo) -> list[tuple[np.ndarray, tuple[int, int]] | None]:
    """Each frame's fixations as (row, col) points and the map's shape; None if unreadable."""
    out = []
    for k in range(len(video)):
        f = video.fixations(k)
        out.append(None if f is None else (np.argwhere(f), f.shape))
    return out


def _as_map(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    if len(points):
        m[np.minimum(points[:, 0], shape[0] - 1), np.minimum(points[:, 1], shape[1] - 1)] = True
    return m


def score_video(video: AnnotatedVideo, prediction: Callable[[int], np.ndarray | None], *, postprocess: bool,
                seed: int = 0) -> dict:
    """Per-frame scores of one video; ``prediction(k)`` is frame k's map (any size) or None.

    Each metric is averaged over the frames that have what it needs (``metrics.score_frame``):
    a frame without a prediction, or whose ground truth is missing, unreadable or all
    zero, counts in no average of the metrics that need it, and the record says how many
    frames each metric used and why the others were left out. sAUC's negatives are the
    fixations of up to 10 other frames of the same video, drawn with a generator seeded by
    (seed, k).
    """
    fixations = _fixation_points(video)
    with_fix = [k for k, f in enumerate(fixations) if f is not None and len(f[0])]
    rows = []
    reasons = {"no_prediction": 0, "no_density": 0, "no_fixations": 0}
    for k in range(len(video)):
        density, pred = video.saliency_map(k), prediction(k)
        if density is None or not density.any():
            reasons["no_density"] += 1
            density = None
        if fixations[k] is None or not len(fixations[k][0]):
            reasons["no_fixations"] += 1
        if pred is None:
            reasons["no_prediction"] += 1
            rows.append({m: math.nan for m in METRICS})
            continue
        fix_map = other = None
        if fixations[k] is not None:
            points, shape = fixations[k]
            fix_map = _as_map(points, shape)
            others = [j for j in with_fix if j != k]
            picked = np.random.default_rng([seed, k]).choice(others, min(OTHER_FRAMES, len(others)), replace=False)
            other = _as_map(np.concatenate([fixations[j][0] for j in picked]) if len(picked)
                            else np.zeros((0, 2), int), shape)
        rows.append(score_frame(pred, density, fix_map, other, seed=seed + k, postprocess=postprocess))
    return summarise(video.name, rows, reasons)


def summarise(name: str, rows: list[dict], reasons: dict[str, int] | None = None) -> dict:
    """A video's record: per-metric means over the frames where the metric is defined,
    how many frames each metric used, how many counted for none (``left_out``) and the
    per-frame scores (None where undefined)."""
    arr = {m: np.array([r[m] for r in rows], dtype=np.float64) for m in METRICS}
    used = {m: int(np.isfinite(a).sum()) for m, a in arr.items()}
    left_out = int(np.sum(~np.any([np.isfinite(arr[m]) for m in METRICS], axis=0))) if rows else 0
    means = {m: (float(np.mean(a[np.isfinite(a)])) if used[m] else math.nan) for m, a in arr.items()}
    return {"video": name, "frames": len(rows), "used": used, "left_out": left_out, **(reasons or {}),
            "mean": means, "per_frame": {m: [None if math.isnan(x) else x for x in a.tolist()] for m, a in arr.items()}}


# ------------------------------------------------------------------ running a protocol

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _check_run(out: Path, settings: dict) -> None:
    """One output folder holds one evaluation: refuse to mix settings on resume."""
    path = out / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise EvalError(f"{out}: holds an evaluation with other settings ({', '.join(changed)}), and resuming "
                            f"would mix the two: pass another --out, or remove {out} to start again")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(settings, indent=2)))


def _save_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj)))


def _save_maps(out: Path, item: Item, preds: np.ndarray) -> None:
    """8-bit PNGs at the frame's resolution, each scaled to its own maximum
    (``write_map_png``), named like the ground truth they match."""
    d = out / "maps" / item.dataset / item.video.name
    d.mkdir(parents=True, exist_ok=True)
    h, w = item.video.frame(0).shape[:2]
    for k, p in enumerate(preds):
        m = np.clip(imresize(p.astype(np.float64), (h, w)), 0, 1)
        atomic_write(d / f"eyeMap_{k + 1:05d}.png", lambda tmp, m=m: write_map_png(tmp, m))


FIGURE_VIDEOS = 2


def _figure_rows(item: Item, preds: np.ndarray) -> list[tuple]:
    """Three frames (at 25, 50, 75 %) of one video: (label, frame, gt, fixations, prediction)."""
    n = len(item.video)
    ks = sorted({min(n - 1, int(n * f)) for f in (0.25, 0.5, 0.75)})
    return [(f"{item.video.name} #{k + 1}", item.video.frame(k), item.video.saliency_map(k),
             item.video.fixations(k), preds[k]) for k in ks]


def run_evaluation(items: list[Item], out: Path, *, settings: dict, postprocess: bool, runtime=None,
                   save_maps: bool = False, seed: int = 0, progress: bool = True, figure: bool = False,
                   dist=None) -> list[dict]:
    """Predict and score every item, resuming from ``out``; returns the per-video records.
    ``runtime``: where and how the models run (:class:`avrsp.runtime.Runtime`; default:
    ``auto`` everything).
    With ``figure``, ``figure.png`` shows frames, ground truth and predictions of the first
    videos predicted in this run.

    ``dist`` (an ``avrsp.distributed.Dist``, under torchrun) shards the videos: each
    process predicts and scores its share into the same folder, and every process
    returns every record once all are done. A video's record does not depend on which
    process made it, so the report is the one a single process writes."""
    import torch
    from tqdm import tqdm

    from .distributed import Dist
    from .runtime import Runtime

    dist = dist or Dist()
    out = Path(out)
    runtime = (runtime or Runtime()).resolve()
    # Everything that changes what the folder holds: a resumed run must not mix two evaluations
    # (or add saved maps to only the videos scored after the restart).
    settings = {**settings, "checkpoints": {str(c): _sha256(c) for c in sorted({i.checkpoint for i in items})},
                "postprocess": postprocess, "seed": seed, "save_maps": save_maps, "format": RECORD_FORMAT}
    if dist.main:
        _check_run(out, settings)
    dist.barrier()
    if not dist.main:
        _check_run(out, settings)
    models: dict[Path, torch.nn.Module] = {}
    mine = dist.shard(items)
    todo = [i for i in mine if not (out / "videos" / f"{i.key}.json").is_file()]
    figure_rows: list[tuple] = []
    bar = tqdm(total=sum(len(i.video) for i in todo), unit="frame", disable=not (progress and dist.main),
               dynamic_ncols=True)
    for item in todo:
        score_path = out / "videos" / f"{item.key}.json"
        cache = out / "cache" / f"{item.key}.npy"
        preds = np.load(cache) if cache.is_file() else _predict_item(item, cache, models, runtime, bar)
        if save_maps:
            _save_maps(out, item, preds)
        if figure and len(figure_rows) < 3 * FIGURE_VIDEOS:
            figure_rows += _figure_rows(item, preds)
        record = score_video(item.video, lambda k, preds=preds: preds[k].astype(np.float64),
                             postprocess=postprocess, seed=seed)
        _save_json(score_path, record)
        cache.unlink()
    bar.close()
    dist.barrier()
    records = [{**json.loads((out / "videos" / f"{i.key}.json").read_text()), "dataset": i.dataset, "split": i.split}
               for i in items]
    if figure_rows:
        from .visualize import comparison_grid

        comparison_grid([r[1] for r in figure_rows], {"Ground truth": [r[2] for r in figure_rows],
                                                      "Prediction": [r[4] for r in figure_rows]},
                        out / "figure.png", row_labels=[r[0] for r in figure_rows],
                        fixations=[r[3] for r in figure_rows])
    return records


def _predict_item(item: Item, cache: Path, models: dict, runtime, bar) -> np.ndarray:
    """The item's maps (n × model size), its model loaded once into ``models``, saved to
    ``cache`` before they are scored."""
    from .checkpoint import load_model
    from .inference import predict_frames

    if item.checkpoint not in models:
        models[item.checkpoint] = runtime.prepare(load_model(item.checkpoint))
    model = models[item.checkpoint]
    bar.set_description(item.key)
    maps = []
    for _, m in predict_frames(model, item.video.frames, len(item.video), item.video.fps,
                               item.video.audio if model.config.audio else None, batch=runtime.batch,
                               streams=runtime.streams):
        maps.append(m)
        bar.update(1)
    preds = np.stack(maps)
    atomic_write(cache, lambda tmp: np.save(open(tmp, "wb"), preds))
    return preds


# ------------------------------------------------------------------ reports

def aggregate(records: list[dict], kinds: dict[str, str] | None = None) -> list[dict]:
    """Per dataset (and per dataset and kind): for each metric the mean over videos of the
    per-video means (videos where the metric is defined), the frames it used, and DHF1K's
    average over those frames."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], "all"), []).append(r)
        if kinds and r["video"] in kinds:
            groups.setdefault((r["dataset"], kinds[r["video"]]), []).append(r)
    rows = []
    for (dataset, kind), rs in groups.items():
        row = {"dataset": dataset, "kind": kind, "videos": len(rs), "frames": sum(r["frames"] for r in rs),
               "left_out": sum(r["left_out"] for r in rs)}
        for m in METRICS:
            vals = np.array([r["mean"][m] for r in rs], dtype=np.float64)
            frames = np.array([x for r in rs for x in r["per_frame"][m] if x is not None], dtype=np.float64)
            row[m] = float(vals[np.isfinite(vals)].mean()) if np.isfinite(vals).any() else math.nan
            row[f"{m}_frame_avg"] = float(frames.mean()) if frames.size else math.nan
            row[f"{m}_frames"] = int(frames.size)
        rows.append(row)
    order = {d: i for i, d in enumerate(STAVIS_DATABASES)}
    return sorted(rows, key=lambda r: (order.get(r["dataset"], 99), r["dataset"], r["kind"] != "all", r["kind"]))


def _fmt(x: float, metric: str) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:.2f}" if metric == "nss" else f"{x:.3f}"


def _used(row: dict) -> str:
    """Frames each metric used: one number when they agree."""
    counts = [row[f"{m}_frames"] for m in METRICS]
    if len(set(counts)) == 1:
        return str(counts[0])
    return ", ".join(f"{LABELS[m][:-1]} {row[f'{m}_frames']}" for m in METRICS)


def markdown(rows: list[dict], model: str, *, protocol: str, postprocess: bool) -> str:
    """Tables in the layout of the paper's Tables I–II (plus KL and sAUC)."""
    main = [r for r in rows if r["kind"] == "all"]
    lines = [f"# Evaluation of {model}", "",
             f"Protocol: {protocol}. Scores are averaged per video, then over videos. "
             f"Post-processing: {'STAViS (scale to [0, 1], Gaussian σ = 2)' if postprocess else 'none'}. "
             "Each metric is averaged over the frames that have what it needs: a prediction and, for SIM, CC "
             "and KL, a ground-truth map that is not all zero; for NSS, AUC-J and sAUC, at least one fixation. "
             "'Frames used' counts them; 'left out' counts frames used by no metric.", ""]
    header = "| Method | " + " | ".join(f"{r['dataset']} {LABELS[m]}" for r in main for m in TABLE_METRICS) + " |"
    lines += [header, "|" + "---|" * (1 + len(main) * len(TABLE_METRICS)),
              f"| {model} | " + " | ".join(_fmt(r[m], m) for r in main for m in TABLE_METRICS) + " |", ""]
    lines += ["| Dataset | Kind | Videos | Frames | Frames used | Left out | " + " | ".join(LABELS[m] for m in METRICS)
              + " |", "|" + "---|" * (6 + len(METRICS))]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['kind']} | {r['videos']} | {r['frames']} | {_used(r)} | "
                     f"{r['left_out']} | " + " | ".join(_fmt(r[m], m) for m in METRICS) + " |")
    if any(r["dataset"] == "DHF1K" for r in rows):
        lines += ["", "DHF1K's benchmark averages over frames: "
                  + ", ".join(f"{LABELS[m]} {_fmt(r[m + '_frame_avg'], m)}" for r in rows
                              if r["dataset"] == "DHF1K" and r["kind"] == "all" for m in TABLE_METRICS)]
    return "\n".join(lines) + "\n"


VIDEO_FIELDS = ("dataset", "split", "video", "frames", "left_out", "no_prediction", "no_density", "no_fixations")


def write_reports(out: Path, records: list[dict], rows: list[dict], *, model: str, protocol: str,
                  postprocess: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)

    def write_csv(path: Path, fieldnames: list[str], data: Iterable[dict]) -> None:
        def w(tmp):
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(data)
        atomic_write(path, w)

    write_csv(out / "per_video.csv", [*VIDEO_FIELDS, *METRICS, *(f"{m}_frames" for m in METRICS)],
              [{**{k: r.get(k) for k in VIDEO_FIELDS}, **r["mean"], **{f"{m}_frames": r["used"][m] for m in METRICS}}
               for r in records])
    write_csv(out / "per_dataset.csv", list(rows[0]) if rows else ["dataset"], rows)
    write_csv(out / "per_frame.csv", ["dataset", "split", "video", "frame", *METRICS],
              ({"dataset": r["dataset"], "split": r["split"], "video": r["video"], "frame": k + 1,
                **{m: ("" if r["per_frame"][m][k] is None else repr(r["per_frame"][m][k])) for m in METRICS}}
               for r in records for k in range(r["frames"])))
    _save_json(out / "results.json", {"model": model, "protocol": protocol, "postprocess": postprocess,
                                      "datasets": rows,
                                      "videos": [{k: v for k, v in r.items() if k != "per_frame"} for r in records]})
    report = out / "report.md"
    text = markdown(rows, model, protocol=protocol, postprocess=postprocess)
    if (out / "figure.png").is_file():
        text += "\n![frames, ground truth and predictions](figure.png)\n"
    atomic_write(report, lambda tmp: tmp.write_text(text))
    return report


def default_postprocess(dataset: str) -> bool:
    """STAViS post-processing is on for the audio-visual datasets, off for DHF1K."""
    return dataset.upper() != "DHF1K"


def plan_or_fail(data: Path, dataset: str, split: str, checkpoints: Sequence[Path | None]) -> list[Item]:
    try:
        items = plan(Path(data), dataset, split, checkpoints)
    except DataError as e:
        raise EvalError(str(e)) from None
    if not items:
        raise EvalError(f"{data}: no {dataset} test videos found for split {split}")
    return items


__all__ = ["EvalError", "EvalWarning", "Item", "aggregate", "default_postprocess", "markdown", "plan", "plan_or_fail",
           "run_evaluation", "score_video", "video_kinds", "write_reports"]
