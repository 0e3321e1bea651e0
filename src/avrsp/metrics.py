"""Saliency metrics exactly as the MIT saliency benchmark's MATLAB code defines them
(docs/evaluation.md; Bylinskii et al., ``code_forMetrics``).

Each metric takes 2-D numpy arrays and returns a float. ``pred`` is resized to the
ground truth's size first, like the reference, with :func:`imresize`, a port of MATLAB's
``imresize`` (bicubic, pixel-centre aligned, antialiased when shrinking). Every input is
treated as its float values (a uint8 map is its 0–255 values, not rescaled). Where the
reference yields NaN (no fixations, a constant map for CC/NSS/SIM), so do we, without
raising. Deviations from the MATLAB code are listed in docs/evaluation.md.
"""

from __future__ import annotations

import numpy as np

EPS = np.finfo(np.float64).eps  # MATLAB's eps, 2.2204e-16


# ------------------------------------------------------------------ MATLAB imresize

def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _contributions(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights and (0-based) source indices of every output sample along one axis."""
    scale = n_out / n_in
    width = 4.0
    if scale < 1:  # antialiasing: widen the kernel by 1/scale
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        width = width / scale
    else:
        kernel = _cubic
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)                       # pixel-centre alignment
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]              # 1-based
    w = kernel(u[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])  # symmetric padding
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n_in)]
    keep = np.any(w != 0, axis=0)
    return w[:, keep], idx[:, keep]


def imresize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """MATLAB ``imresize(img, shape)`` for a 2-D float map (bicubic, antialiased). Like
    MATLAB, the axis shrunk the most is resized first."""
    img = np.asarray(img, dtype=np.float64)
    if img.shape == tuple(shape):
        return img
    scales = [shape[0] / img.shape[0], shape[1] / img.shape[1]]
    out = img
    for axis in np.argsort(scales, kind="stable"):
        if out.shape[axis] == shape[axis]:
            continue
        w, idx = _contributions(out.shape[axis], shape[axis])
        moved = np.moveaxis(out, axis, 0)
        out = np.moveaxis(np.einsum("ok,ok...->o...", w, moved[idx]), 0, axis)
    return out


def _prepare(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    gt = np.asarray(gt, dtype=np.float64)
    if gt.ndim != 2:
        raise ValueError(f"maps must be 2-D, got shape {gt.shape}")
    return imresize(np.asarray(pred, dtype=np.float64), gt.shape), gt


def _minmax(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x - x.min()) / (x.max() - x.min())


# ------------------------------------------------------------------ distribution metrics

def cc(pred, density) -> float:
    """Pearson's linear correlation coefficient (CC.m). NaN if either map is constant."""
    p, g = _prepare(pred, density)
    p, g = p - p.mean(), g - g.mean()
    den = np.sqrt((p * p).sum() * (g * g).sum())
    return float((p * g).sum() / den) if den > 0 else float("nan")


def sim(pred, density) -> float:
    """Similarity / histogram intersection (similarity.m): min-max normalise each
    non-zero map, scale it to sum 1, sum the element-wise minima. An all-zero map stays
    zero; a constant non-zero map makes the score NaN."""
    p, g = _prepare(pred, density)

    def norm(x):
        if not x.any():
            return x
        x = _minmax(x)
        return x / x.sum()

    p, g = norm(p), norm(g)
    if np.isnan(p).all() or np.isnan(g).all():
        return float("nan")
    return float(np.minimum(p, g).sum())


def kld(pred, density) -> float:
    """KL divergence of the prediction from the ground truth (KLdiv.m):
    Σ G·log(eps + G/(P + eps)) on sum-normalised maps (an all-zero map is left as is).
    Negative prediction values (bicubic overshoot after resizing) count as 0."""
    p, g = _prepare(pred, density)
    # Bicubic overshoot can leave small negative values, whose log MATLAB would make complex.
    p = np.clip(p, 0, None)
    if p.any():
        p = p / p.sum()
    if g.any():
        g = g / g.sum()
    return float((g * np.log(EPS + g / (p + EPS))).sum())


# ------------------------------------------------------------------ fixation metrics

def _fixations(fixations) -> np.ndarray:
    f = np.asarray(fixations)
    if f.ndim != 2:
        raise ValueError(f"fixations must be a 2-D map, got shape {f.shape}")
    return f > 0


def nss(pred, fixations) -> float:
    """Normalised scanpath saliency (NSS.m): the prediction z-scored with the sample
    (N−1) standard deviation, averaged at fixated pixels. NaN without fixations or for a
    constant prediction."""
    f = _fixations(fixations)
    p, _ = _prepare(pred, f)
    if not f.any():
        return float("nan")
    sd = p.std(ddof=1) if p.size > 1 else 0.0
    if not sd > 0:
        return float("nan")
    return float(((p - p.mean()) / sd)[f].mean())


def auc_judd(pred, fixations, jitter: bool = True, seed: int | None = None) -> float:
    """AUC-Judd (AUC_Judd.m): thresholds are the prediction at the fixations; tpr = i/Nfix,
    fpr = (#(S ≥ thr) − i)/(Npix − Nfix), trapezoidal area. ``jitter`` adds U(0, 1e-7) noise
    to break ties, as the reference does by default. NaN without fixations."""
    f = _fixations(fixations)
    s, _ = _prepare(pred, f)
    if not f.any():
        return float("nan")
    if jitter:
        s = s + np.random.default_rng(seed).random(s.shape) / 1e7
    s = _minmax(s)
    if np.isnan(s).all():
        return 0.5  # constant map without jitter: chance (MATLAB's result is meaningless here)
    flat = s.ravel()
    sth = np.sort(flat[f.ravel()])[::-1]
    n_fix, n_pix = len(sth), flat.size
    ascending = np.sort(flat)
    above = n_pix - np.searchsorted(ascending, sth, side="left")  # #(S ≥ thr) for each threshold
    i = np.arange(1, n_fix + 1)
    tp = np.concatenate([[0.0], i / n_fix, [1.0]])
    fp = np.concatenate([[0.0], (above - i) / max(n_pix - n_fix, 1), [1.0]])
    return float(np.trapezoid(tp, fp))


def _auc_random(sth: np.ndarray, negatives: np.ndarray, n_neg: int, step: float) -> np.ndarray:
    """AUC per split (columns of ``negatives``) with thresholds 0:step:max, swept downward."""
    n_fix = len(sth)
    sth_sorted = np.sort(sth)
    out = np.empty(negatives.shape[1])
    for s in range(negatives.shape[1]):
        neg = negatives[:, s]
        values = np.concatenate([sth, neg])
        if np.isnan(values).all():
            out[s] = 0.5  # constant map: 0:step:NaN is empty in MATLAB, the curve is the diagonal
            continue
        top = np.nanmax(values)  # MATLAB's max ignores NaN
        # MATLAB's colon: 0, step, … up to top (with a tolerance so exact multiples are included).
        thresholds = step * np.arange(int(np.floor(top / step + 1e-10)) + 1)
        thresholds = thresholds[::-1]
        tp = n_fix - np.searchsorted(sth_sorted, thresholds, side="left")
        fp = len(neg) - np.searchsorted(np.sort(neg), thresholds, side="left")
        tp = np.concatenate([[0.0], tp / n_fix, [1.0]])
        fp = np.concatenate([[0.0], fp / n_neg, [1.0]])
        out[s] = np.trapezoid(tp, fp)
    return out


def auc_borji(pred, fixations, n_splits: int = 100, step: float = 0.1, seed: int | None = None) -> float:
    """AUC-Borji (AUC_Borji.m): negatives are as many uniformly random pixels as there are
    fixations, drawn ``n_splits`` times; thresholds 0:step:max. NaN with fewer than two
    fixations, as the benchmark's AUC_Borji.m since its edge-case fixes of November 2015
    (``if sum(fixationMap(:)>0)<=1``; AUC_shuffled.m and AUC_Judd.m take one)."""
    f = _fixations(fixations)
    s, _ = _prepare(pred, f)
    if np.count_nonzero(f) <= 1:
        return float("nan")
    flat = _minmax(s).ravel()
    sth = flat[f.ravel()]
    rng = np.random.default_rng(seed)
    negatives = flat[rng.integers(0, flat.size, size=(len(sth), n_splits))]
    return float(_auc_random(sth, negatives, len(sth), step).mean())


def auc_shuffled(pred, fixations, other_fixations, n_splits: int = 100, step: float = 0.1,
                 seed: int | None = None) -> float:
    """Shuffled AUC (AUC_shuffled.m): negatives are the prediction's values at fixations of
    other frames (``other_fixations``, a binary map, e.g. the union over other frames of
    the same video), min(Nfix, #other) of them per split. NaN without fixations or
    without other fixations."""
    f = _fixations(fixations)
    s, _ = _prepare(pred, f)
    other = _fixations(other_fixations)
    if other.shape != f.shape:
        raise ValueError(f"other_fixations {other.shape} must match fixations {f.shape}")
    if not f.any() or not other.any():
        return float("nan")
    flat = _minmax(s).ravel()
    sth = flat[f.ravel()]
    ind = np.flatnonzero(other.ravel())
    n_oth = min(len(sth), len(ind))
    rng = np.random.default_rng(seed)
    negatives = np.stack([flat[rng.permutation(ind)[:n_oth]] for _ in range(n_splits)], axis=1)
    return float(_auc_random(sth, negatives, n_oth, step).mean())


# ------------------------------------------------------------------ post-processing and the set

def stavis_postprocess(pred) -> np.ndarray:
    """STAViS's evaluation post-processing: scale to [0, 1], Gaussian blur σ = 2 (a 9-tap
    kernel with replicated borders, as MATLAB's ``imgaussfilt``)."""
    from scipy.ndimage import gaussian_filter

    p = np.asarray(pred, dtype=np.float64)
    lo, hi = p.min(), p.max()
    p = (p - lo) / (hi - lo) if hi > lo else np.zeros_like(p)
    return gaussian_filter(p, sigma=2.0, mode="nearest", truncate=2.0)


METRICS = ("sim", "cc", "nss", "auc_j", "kld", "sauc")
#: Metrics scored against the continuous map, and against the fixations.
DENSITY_METRICS = ("sim", "cc", "kld")
FIXATION_METRICS = ("nss", "auc_j", "sauc")


def score_frame(pred, density, fixations, other_fixations=None, *, seed: int | None = 0,
                postprocess: bool = False) -> dict[str, float]:
    """Every metric of the paper's tables for one frame (the prediction resized once).

    A metric whose ground truth the frame lacks is NaN, so that the frame counts in no
    average of it: the density metrics (SIM, CC, KL) need ``density`` with a non-zero
    value, the fixation metrics (NSS, AUC-J, sAUC) at least one fixation. Either may be
    None. (On an all-zero map the MATLAB functions return SIM 0 and KL 0, the best KL
    there is; scoring such a frame would flatter every model, docs/evaluation.md.)
    """
    out = {m: float("nan") for m in METRICS}
    g = None if density is None else np.asarray(density, dtype=np.float64)
    f = None if fixations is None else _fixations(fixations)
    has_density = g is not None and bool(g.any())
    has_fixations = f is not None and bool(f.any())
    if not (has_density or has_fixations):
        return out
    p = stavis_postprocess(pred) if postprocess else np.asarray(pred, dtype=np.float64)
    p = imresize(p, (g if has_density else f).shape)
    if has_density:
        out.update(sim=sim(p, g), cc=cc(p, g), kld=kld(p, g))
    if has_fixations:
        out.update(nss=nss(p, f), auc_j=auc_judd(p, f, jitter=True, seed=seed))
        if other_fixations is not None:
            out["sauc"] = auc_shuffled(p, f, other_fixations, seed=seed)
    return out
