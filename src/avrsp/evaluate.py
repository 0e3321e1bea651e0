"""The evaluation protocol behind the paper's tables (REFERENCE §1, §4, §5).

``evaluate`` runs model files over a dataset's test videos with sliding windows and
scores every frame. ``score`` scores a folder of someone else's predicted maps the same
way. Averages go per video first, then over videos (the audio-visual tables). DHF1K's
frame average is reported beside it.

Work is saved per video, atomically, under the output folder:

- ``videos/<dataset>/<split>/<video>.json``: per-frame scores, the unit of resumption;
- ``cache/<dataset>/<split>/<video>.npy``: the video's predictions (float32, model
  size), kept from the end of prediction until its scores are written, so a run killed
  while scoring does not predict again; deleted afterwards to bound disk use;
- ``maps/<dataset>/<video>/eyeMap_%05d.png`` with ``save_maps``: 8-bit predictions.

A killed run restarts where it stopped: it skips the videos already scored and reuses
the predictions already made.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .checkpoint import atomic_write
from .data.datasets import (STAVIS_DATABASES, AnnotatedVideo, DataError, dhf1k_videos, stavis_databases,
                            stavis_fold_list, stavis_videos)
from .metrics import METRICS, imresize, score_frame

TABLE_METRICS = ("sim", "cc", "nss", "auc_j")          # Tables I–II, in their order
EXTRA_METRICS = ("kld", "sauc")
LABELS = {"sim": "SIM↑", "cc": "CC↑", "nss": "NSS↑", "auc_j": "AUC-J↑", "kld": "KL↓", "sauc": "sAUC↑"}
OTHER_FRAMES = 10  # sAUC negatives: fixations of this many other frames of the same video (Borji's M)


class EvalError(Exception):
    """An evaluation that cannot run as asked; the message says why."""


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

    sAUC's negatives are the fixations of up to 10 other frames of the same video, drawn
    with a generator seeded by (seed, k).
    """
    fixations = _fixation_points(video)
    with_fix = [k for k, f in enumerate(fixations) if f is not None and len(f[0])]
    rows = []
    for k in range(len(video)):
        density, pred = video.saliency_map(k), prediction(k)
        if density is None or fixations[k] is None or pred is None:
            rows.append({m: math.nan for m in METRICS})
            continue
        points, shape = fixations[k]
        others = [j for j in with_fix if j != k]
        picked = np.random.default_rng([seed, k]).choice(others, min(OTHER_FRAMES, len(others)), replace=False)
        other = _as_map(np.concatenate([fixations[j][0] for j in picked]) if len(picked) else np.zeros((0, 2), int),
                        shape)
        rows.append(score_frame(pred, density, _as_map(points, shape), other, seed=seed + k,
                                postprocess=postprocess))
    return summarise(video.name, rows)


def summarise(name: str, rows: list[dict]) -> dict:
    arr = {m: np.array([r[m] for r in rows], dtype=np.float64) for m in METRICS}
    nan_frames = int(np.sum(np.any([np.isnan(arr[m]) for m in ("sim", "cc", "nss", "auc_j", "kld")], axis=0)))
    means = {m: (float(np.nanmean(a)) if np.isfinite(a).any() else math.nan) for m, a in arr.items()}
    return {"video": name, "frames": len(rows), "nan_frames": nan_frames, "mean": means,
            "per_frame": {m: [None if math.isnan(x) else x for x in a.tolist()] for m, a in arr.items()}}


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
            raise EvalError(f"{out}: holds an evaluation with other settings ({', '.join(changed)}); "
                            f"use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(settings, indent=2)))


def _save_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj)))


def _save_maps(out: Path, item: Item, preds: np.ndarray) -> None:
    """8-bit PNGs at the frame's resolution, named like the ground truth they match."""
    from PIL import Image

    d = out / "maps" / item.dataset / item.video.name
    d.mkdir(parents=True, exist_ok=True)
    h, w = item.video.frame(0).shape[:2]
    for k, p in enumerate(preds):
        m = np.clip(imresize(p.astype(np.float64), (h, w)), 0, 1)
        atomic_write(d / f"eyeMap_{k + 1:05d}.png",
                     lambda tmp, m=m: Image.fromarray(np.round(m * 255).astype(np.uint8)).save(tmp, format="PNG"))


FIGURE_VIDEOS = 2


def _figure_rows(item: Item, preds: np.ndarray) -> list[tuple]:
    """Three frames (at 25, 50, 75 %) of one video: (label, frame, gt, fixations, prediction)."""
    n = len(item.video)
    ks = sorted({min(n - 1, int(n * f)) for f in (0.25, 0.5, 0.75)})
    return [(f"{item.video.name} #{k + 1}", item.video.frame(k), item.video.saliency_map(k),
             item.video.fixations(k), preds[k]) for k in ks]


def run_evaluation(items: list[Item], out: Path, *, settings: dict, postprocess: bool, batch: int | None = None,
                   device: str = "auto", precision: str = "auto", save_maps: bool = False, seed: int = 0,
                   progress: bool = True, figure: bool = False) -> list[dict]:
    """Predict and score every item, resuming from ``out``; returns the per-video records.
    With ``figure``, ``figure.png`` shows frames, ground truth and predictions of the first
    videos predicted in this run."""
    import torch
    from tqdm import tqdm

    from .checkpoint import load_model
    from .inference import default_batch, predict_frames, prepare

    out = Path(out)
    batch = batch or default_batch(device)
    settings = {**settings, "checkpoints": {str(c): _sha256(c) for c in {i.checkpoint for i in items}},
                "postprocess": postprocess, "seed": seed}
    _check_run(out, settings)
    models: dict[Path, torch.nn.Module] = {}
    records = []
    todo = [i for i in items if not (out / "videos" / f"{i.key}.json").is_file()]
    figure_rows: list[tuple] = []
    bar = tqdm(total=sum(len(i.video) for i in todo), unit="frame", disable=not progress, dynamic_ncols=True)
    for item in items:
        score_path = out / "videos" / f"{item.key}.json"
        if score_path.is_file():
            records.append({**json.loads(score_path.read_text()), "dataset": item.dataset, "split": item.split})
            continue
        cache = out / "cache" / f"{item.key}.npy"
        if cache.is_file():
            preds = np.load(cache)
        else:
            if item.checkpoint not in models:
                models[item.checkpoint] = prepare(load_model(item.checkpoint), device, precision)
            model = models[item.checkpoint]
            bar.set_description(item.key)
            maps = []
            for _, m in predict_frames(model, item.video.frames, len(item.video), item.video.fps,
                                       item.video.audio if model.config.audio else None, batch=batch):
                maps.append(m)
                bar.update(1)
            preds = np.stack(maps)
            atomic_write(cache, lambda tmp, preds=preds: np.save(open(tmp, "wb"), preds))
        if save_maps:
            _save_maps(out, item, preds)
        if figure and len(figure_rows) < 3 * FIGURE_VIDEOS:
            figure_rows += _figure_rows(item, preds)
        record = score_video(item.video, lambda k, preds=preds: preds[k].astype(np.float64),
                             postprocess=postprocess, seed=seed)
        _save_json(score_path, record)
        cache.unlink()
        records.append({**record, "dataset": item.dataset, "split": item.split})
    bar.close()
    if figure_rows:
        from .visualize import comparison_grid

        comparison_grid([r[1] for r in figure_rows], {"Ground truth": [r[2] for r in figure_rows],
                                                      "Prediction": [r[4] for r in figure_rows]},
                        out / "figure.png", row_labels=[r[0] for r in figure_rows],
                        fixations=[r[3] for r in figure_rows])
    return records


# ------------------------------------------------------------------ scoring other models' maps

_NUM = re.compile(r"(\d+)(?!.*\d)")


def prediction_files(folder: Path) -> dict[int, Path]:
    """Frame index (0-based) → image, from the last number in each file name (1-based)."""
    out = {}
    for p in folder.iterdir():
        if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
            m = _NUM.search(p.stem)
            if m:
                out[int(m.group(1)) - 1] = p
    return out


def score_folder(pred_dir: Path, items: list[Item], *, postprocess: bool, seed: int = 0,
                 progress: bool = True) -> list[dict]:
    """Score predicted maps stored as ``PRED_DIR/[<dataset>/]<video>/<…number>.png``."""
    from tqdm import tqdm

    from .data.datasets import read_map

    records = []
    for item in tqdm(items, unit="video", disable=not progress):
        folder = next((d for d in (pred_dir / item.dataset / item.video.name, pred_dir / item.video.name)
                       if d.is_dir()), None)
        if folder is None:
            raise EvalError(f"{pred_dir}: no predictions for {item.dataset}/{item.video.name} "
                            f"(expected {pred_dir / item.video.name}/)")
        files = prediction_files(folder)

        def pred(k: int, files=files) -> np.ndarray | None:
            return read_map(files[k]).astype(np.float64) if k in files else None

        record = score_video(item.video, pred, postprocess=postprocess, seed=seed)
        records.append({**record, "dataset": item.dataset, "split": item.split})
    return records


# ------------------------------------------------------------------ reports

def aggregate(records: list[dict], kinds: dict[str, str] | None = None) -> list[dict]:
    """Per dataset (and per dataset and kind): the mean over videos of the per-video means,
    frames excluded for NaN, and DHF1K's frame average."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], "all"), []).append(r)
        if kinds and r["video"] in kinds:
            groups.setdefault((r["dataset"], kinds[r["video"]]), []).append(r)
    rows = []
    for (dataset, kind), rs in groups.items():
        row = {"dataset": dataset, "kind": kind, "videos": len(rs), "frames": sum(r["frames"] for r in rs),
               "nan_frames": sum(r["nan_frames"] for r in rs)}
        for m in METRICS:
            vals = np.array([r["mean"][m] for r in rs], dtype=np.float64)
            frames = np.array([x for r in rs for x in r["per_frame"][m] if x is not None], dtype=np.float64)
            row[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
            row[f"{m}_frame_avg"] = float(frames.mean()) if frames.size else math.nan
        rows.append(row)
    order = {d: i for i, d in enumerate(STAVIS_DATABASES)}
    return sorted(rows, key=lambda r: (order.get(r["dataset"], 99), r["dataset"], r["kind"] != "all", r["kind"]))


def _fmt(x: float, metric: str) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:.2f}" if metric == "nss" else f"{x:.3f}"


def markdown(rows: list[dict], model: str, *, protocol: str, postprocess: bool) -> str:
    """Tables in the layout of the paper's Tables I–II (plus KL and sAUC)."""
    main = [r for r in rows if r["kind"] == "all"]
    lines = [f"# Evaluation of {model}", "",
             f"Protocol: {protocol}. Scores are averaged per video, then over videos. "
             f"Post-processing: {'STAViS (scale to [0, 1], Gaussian σ = 2)' if postprocess else 'none'}. "
             "Frames whose ground truth is missing or scores NaN (no fixations, constant map) are left out.", ""]
    header = "| Method | " + " | ".join(f"{r['dataset']} {LABELS[m]}" for r in main for m in TABLE_METRICS) + " |"
    lines += [header, "|" + "---|" * (1 + len(main) * len(TABLE_METRICS)),
              f"| {model} | " + " | ".join(_fmt(r[m], m) for r in main for m in TABLE_METRICS) + " |", ""]
    lines += ["| Dataset | Kind | Videos | Frames | Frames left out | " + " | ".join(LABELS[m] for m in METRICS)
              + " |", "|" + "---|" * (5 + len(METRICS))]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['kind']} | {r['videos']} | {r['frames']} | {r['nan_frames']} | "
                     + " | ".join(_fmt(r[m], m) for m in METRICS) + " |")
    if any(r["dataset"] == "DHF1K" for r in rows):
        lines += ["", "DHF1K's benchmark averages over frames: "
                  + ", ".join(f"{LABELS[m]} {_fmt(r[m + '_frame_avg'], m)}" for r in rows
                              if r["dataset"] == "DHF1K" and r["kind"] == "all" for m in TABLE_METRICS)]
    return "\n".join(lines) + "\n"


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

    write_csv(out / "per_video.csv", ["dataset", "split", "video", "frames", "nan_frames", *METRICS],
              [{**{k: r[k] for k in ("dataset", "split", "video", "frames", "nan_frames")}, **r["mean"]}
               for r in records])
    write_csv(out / "per_dataset.csv", list(rows[0]) if rows else ["dataset"], rows)
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


__all__ = ["EvalError", "Item", "aggregate", "default_postprocess", "markdown", "plan", "plan_or_fail",
           "run_evaluation", "score_folder", "score_video", "video_kinds", "write_reports"]
