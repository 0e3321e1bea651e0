import math
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from avrsp.metrics import (auc_borji, auc_judd, auc_shuffled, cc, imresize, kld, nss, score_frame, sim,
                           stavis_postprocess)

NAN = float("nan")
#: Float64 on a few values, or the same arithmetic reached two ways: rounding ~1e-16 on
#: values of order 1. Absolute, on each metric's own scale (a CC or a KL can be near 0).
EXACT = 1e-12


# ------------------------------------------------------------------ imresize

def test_imresize_hand_computed_border_value():
    # MATLAB imresize([1 2 3 4], [1 8]) bicubic: u = 0.75 for the first output; taps at
    # 1-based -1, 0, 1, 2 mirror to x2, x1, x1, x2 with weights
    # cubic(1.75), cubic(0.75), cubic(0.25), cubic(1.25) = -0.0234375, 0.2265625, 0.8671875, -0.0703125.
    out = imresize(np.array([[1.0, 2, 3, 4]]), (1, 8))
    assert out[0, 0] == pytest.approx(1.09375 * 1 - 0.09375 * 2, abs=EXACT)
    assert out[0, -1] == pytest.approx(1.09375 * 4 - 0.09375 * 3, abs=EXACT)  # symmetric at the far end


@pytest.mark.parametrize("src, dst", [((80, 120), (34, 58)), ((30, 50), (90, 150)), ((36, 64), (36, 100))])
def test_imresize_matches_an_independent_bicubic_away_from_borders(src, dst):
    # PIL's BICUBIC is the same Keys a = -0.5 kernel, pixel-centre aligned, widened when
    # shrinking; it only treats borders differently (MATLAB mirrors).
    x = np.random.default_rng(0).random(src)
    ours = imresize(x, dst)
    pil = np.asarray(Image.fromarray(x.astype(np.float32), "F").resize(dst[::-1], Image.Resampling.BICUBIC))
    # PIL computes in float32: a few of its steps on values in [0, 1].
    np.testing.assert_allclose(ours[4:-4, 4:-4], pil[4:-4, 4:-4], atol=1e-6)


def test_imresize_keeps_constants_and_identity():
    np.testing.assert_allclose(imresize(np.full((7, 9), 3.5), (20, 4)), 3.5, rtol=0, atol=EXACT)  # weights sum to 1
    x = np.random.default_rng(1).random((5, 6))
    np.testing.assert_array_equal(imresize(x, (5, 6)), x)   # the same size: returned untouched


# ------------------------------------------------------------------ hand-computed values

def test_cc_sim_kld_nss_hand_computed():
    assert cc([[1, 2], [3, 4]], [[1, 3], [2, 4]]) == pytest.approx(0.8, abs=EXACT)
    # SIM: [0,1,2,3] → [0,1/6,1/3,1/2]; [1,1,1,0] → [1/3,1/3,1/3,0]; Σ min = 0 + 1/6 + 1/3 + 0.
    assert sim([[0, 1], [2, 3]], [[1, 1], [1, 0]]) == pytest.approx(0.5, abs=EXACT)
    assert kld(np.ones((2, 2)), [[1, 1], [0, 0]]) == pytest.approx(math.log(2), abs=EXACT)
    # NSS with the N−1 standard deviation: (4 − 2.5)/sqrt(5/3).
    assert nss([[1, 2], [3, 4]], [[0, 0], [0, 1]]) == pytest.approx(1.5 / math.sqrt(5 / 3), abs=EXACT)


def test_auc_judd_hand_computed():
    # S = [1..5] → [0, .25, .5, .75, 1]; fixations at 5 and 3.
    # thresholds 1.0 → tp .5, fp 0; 0.5 → tp 1, fp 1/3; area = .25 + 2/3.
    s = np.array([[1.0, 2, 3, 4, 5]])
    f = np.array([[0, 0, 1, 0, 1]])
    assert auc_judd(s, f, jitter=False) == pytest.approx(0.25 + 2 / 3, abs=EXACT)
    # Duplicate thresholds are kept, as in the reference, whose curve then steps back on
    # ties: (0,0) → (.5,.5) → (0,1) → (1,1), area 0.75 (the reason it jitters by default).
    tied, tied_fix = np.array([[1.0, 1, 0, 0]]), np.array([[1, 1, 0, 0]])
    assert auc_judd(tied, tied_fix, jitter=False) == pytest.approx(0.75, abs=EXACT)
    assert auc_judd(tied, tied_fix, seed=0) == pytest.approx(1.0, abs=EXACT)
    # Jitter only breaks ties: the ordering of distinct values survives it (1e-7 of noise
    # moves the normalised thresholds, not the ranks).
    assert auc_judd(s, f, jitter=True, seed=3) == pytest.approx(0.25 + 2 / 3, abs=1e-6)


def test_auc_borji_expected_value():
    # Prediction = the fixation map: every split's curve is (0,0) → (fp, 1) → (1,1), area
    # 1 − fp/2, and fp (the share of random pixels landing on a fixation) averages Nfix/Npix.
    rng = np.random.default_rng(0)
    f = np.zeros((40, 50))
    f.flat[rng.choice(f.size, 200, replace=False)] = 1
    q = 200 / f.size
    scores = [auc_borji(f, f, seed=s) for s in range(5)]
    # 5 seeds × 100 splits × 200 draws: the mean's sampling error is about 5e-4, a tenth of the bound.
    assert np.mean(scores) == pytest.approx(1 - q / 2, abs=0.005)
    assert auc_borji(f, f, seed=1) == auc_borji(f, f, seed=1)   # one seed, the same draws: the same value


def test_auc_shuffled_extremes():
    f = np.zeros((10, 10))
    f[2, 3] = f[7, 7] = f[5, 1] = 1
    pred = f.copy()
    # Negatives at the same places as the positives: the ROC curve is the diagonal.
    assert auc_shuffled(pred, f, f, seed=0) == pytest.approx(0.5, abs=EXACT)
    # Negatives only where the prediction is 0: perfect separation.
    other = np.zeros_like(f)
    other[0, 0] = other[9, 9] = 1
    assert auc_shuffled(pred, f, other, seed=0) == pytest.approx(1.0, abs=EXACT)


# Values exactly on the 0.1 thresholds, where counting S ≥ t (AUC_Borji.m, AUC_shuffled.m)
# and S > t part: a map in twentieths, min 0 and max 20, so min-max scaling gives j/20.
# On-threshold values use only k/10 for k in {0, 1, 2, 4, 5, 8, 9, 10}: there 0.1·k (the
# threshold as the code computes it) is the same double as k/10 (the scaled value); 0.3,
# 0.6 and 0.7 are not, in numpy or in MATLAB's colon, and would test rounding instead.
ON_THRESHOLDS = np.array([[20, 10, 10, 4],
                          [11, 9, 9, 2],
                          [3, 0, 17, 16]], float)
POSITIVES = np.zeros((3, 4), bool)
POSITIVES[0] = True                                         # 1.0, 0.5, 0.5, 0.2: on thresholds
NEGATIVES = np.zeros((3, 4), bool)
NEGATIVES[1, 0] = NEGATIVES[1, 1] = NEGATIVES[1, 3] = NEGATIVES[2, 0] = True   # 0.55, 0.45, 0.1, 0.15


def _roc_area_by_hand(positives: list[Fraction], negatives: list[Fraction], neg_weights=None) -> Fraction:
    """AUC_Borji.m's loop in exact arithmetic: thresholds 1.0, 0.9, …, 0 (the maximum is
    1 here), tp = #(Sth ≥ t)/Nfix, fp = #(neg ≥ t)/Nneg (or the weighted share), (0, 0)
    first and (1, 1) last, trapezoidal area."""
    weights = neg_weights or [Fraction(1, len(negatives))] * len(negatives)
    tp, fp = [Fraction(0)], [Fraction(0)]
    for k in range(10, -1, -1):
        t = Fraction(k, 10)
        tp.append(Fraction(sum(v >= t for v in positives), len(positives)))
        fp.append(sum((w for v, w in zip(negatives, weights) if v >= t), Fraction(0)))
    tp.append(Fraction(1))
    fp.append(Fraction(1))
    return sum(((fp[i + 1] - fp[i]) * (tp[i] + tp[i + 1]) / 2 for i in range(len(tp) - 1)), Fraction(0))


def _twentieths(mask):
    return [Fraction(int(v), 20) for v in ON_THRESHOLDS[mask]]


def test_shuffled_auc_counts_values_on_a_threshold_as_above_it():
    """Four other fixations for four fixations: every split draws all of them, so the
    value is exact. By hand: the curve passes (0, 1/4) at t = 1, (1/4, 3/4) at t = 0.5,
    (1/2, 3/4) at 0.4, (1/2, 1) at 0.2, (1, 1) at 0.1: area 13/16. Counting S > t
    instead puts the 0.5s under 0.55 and 0.45 alike and gives 21/32."""
    want = _roc_area_by_hand(_twentieths(POSITIVES), _twentieths(NEGATIVES))
    assert want == Fraction(13, 16)
    for seed in (0, 1):
        assert auc_shuffled(ON_THRESHOLDS, POSITIVES, NEGATIVES, seed=seed) == pytest.approx(float(want), abs=1e-12)


def test_auc_borji_counts_values_on_a_threshold_as_above_it():
    """Random pixels as negatives: the curve's area is linear in the false-positive rates
    and the thresholds do not depend on the draw (a fixation holds the maximum), so the
    mean over splits tends to the area at each threshold's share of all pixels: 5/8 by
    the loop below, 53/96 if S > t were counted. 10 000 splits of 4 draws: the sampling
    error's standard deviation is about 0.0025, the tolerance six of them."""
    every = [Fraction(int(v), 20) for v in ON_THRESHOLDS.ravel()]
    want = _roc_area_by_hand(_twentieths(POSITIVES), every)
    assert want == Fraction(5, 8)
    assert auc_borji(ON_THRESHOLDS, POSITIVES, n_splits=10_000, seed=0) == pytest.approx(float(want), abs=0.015)


# ------------------------------------------------------------------ edge cases

def test_no_fixations_is_nan_never_an_exception():
    pred, empty = np.random.default_rng(0).random((6, 8)), np.zeros((6, 8))
    for value in (nss(pred, empty), auc_judd(pred, empty), auc_borji(pred, empty),
                  auc_shuffled(pred, empty, np.ones((6, 8)))):
        assert math.isnan(value)
    f = np.zeros((6, 8))
    f[1, 1] = 1
    assert math.isnan(auc_shuffled(pred, f, empty))  # nothing to draw negatives from


def test_constant_maps_follow_the_reference():
    const, zero = np.full((6, 8), 0.3), np.zeros((6, 8))
    g = np.random.default_rng(0).random((6, 8))
    f = np.zeros((6, 8))
    f[2, 2] = f[4, 5] = 1
    assert math.isnan(cc(const, g)) and math.isnan(cc(g, const))
    assert math.isnan(nss(const, f))
    assert math.isnan(sim(const, g))                 # (x − min)/0 everywhere
    assert sim(zero, g) == 0.0                       # a zero map stays zero
    assert math.isfinite(kld(zero, g)) and kld(g, zero) == 0.0
    assert kld(np.array([[-0.1, 1.0], [0.5, 0.2]]), g[:2, :2]) == pytest.approx(
        kld(np.array([[0.0, 1.0], [0.5, 0.2]]), g[:2, :2]), abs=EXACT)  # overshoot below 0 counts as 0
    # A constant prediction ranks nothing: the random AUCs give exactly 0.5 (MATLAB's
    # 0:step:NaN is empty), AUC-Judd is 0.5 without jitter and ≈ 0.5 with it.
    assert auc_borji(const, f, seed=0) == 0.5 and auc_shuffled(const, f, np.ones((6, 8)), seed=0) == 0.5
    assert auc_judd(const, f, jitter=False) == 0.5
    assert 0.0 <= auc_judd(const, f, seed=0) <= 1.0


def test_uint8_maps_are_their_float_values():
    rng = np.random.default_rng(0)
    p8 = (rng.random((12, 16)) * 255).astype(np.uint8)
    g8 = (rng.random((12, 16)) * 255).astype(np.uint8)
    f = (rng.random((12, 16)) > 0.9).astype(np.uint8)
    for metric in (cc, sim, kld):
        assert metric(p8, g8) == pytest.approx(metric(p8.astype(float), g8.astype(float)), abs=EXACT)
    assert nss(p8, f) == pytest.approx(nss(p8.astype(float), f), abs=EXACT)
    # No uint8 wrap-around in the z-score or the min-max (254 − 255 would be 255 in uint8).
    assert nss(np.array([[255, 254], [0, 1]], np.uint8), np.array([[1, 0], [0, 0]])) > 0


def test_prediction_is_resized_to_the_ground_truth():
    rng = np.random.default_rng(0)
    small, g = rng.random((9, 16)), rng.random((36, 64))
    f = (rng.random((36, 64)) > 0.95)
    assert cc(small, g) == pytest.approx(cc(imresize(small, (36, 64)), g), abs=EXACT)
    assert nss(small, f) == pytest.approx(nss(imresize(small, (36, 64)), f), abs=EXACT)


def test_stavis_postprocess_and_score_frame():
    impulse = np.zeros((21, 21))
    impulse[10, 10] = 1
    out = stavis_postprocess(impulse)
    assert out.sum() == pytest.approx(1.0, abs=EXACT)   # a normalised kernel
    assert np.count_nonzero(out[10]) == 9  # 9-tap kernel: 2·ceil(2σ) + 1 for σ = 2
    rng = np.random.default_rng(0)
    p, g = rng.random((18, 32)), rng.random((36, 64))
    f = rng.random((36, 64)) > 0.97
    scores = score_frame(p, g, f, other_fixations=rng.random((36, 64)) > 0.9)
    assert set(scores) == {"sim", "cc", "nss", "auc_j", "kld", "sauc"}
    assert scores["cc"] == pytest.approx(cc(p, g), abs=EXACT)
    post = score_frame(p, g, f, postprocess=True)
    assert post["cc"] == pytest.approx(cc(stavis_postprocess(p), g), abs=EXACT) and math.isnan(post["sauc"])


def test_auc_borji_needs_two_fixations_the_others_one():
    """As the MIT benchmark's current MATLAB code (code_forMetrics since commit 3c4d244,
    "small fixes for edge cases like nans", November 2015): AUC_Borji.m returns NaN when
    ``sum(fixationMap(:)>0) <= 1``; AUC_shuffled.m and AUC_Judd.m only without any
    fixation (``~any(fixationMap)``), and NSS.m averages over whatever fixations there are."""
    rng = np.random.default_rng(1)
    p = rng.random((20, 30))
    one = np.zeros((20, 30), bool)
    one[5, 7] = True
    two = one.copy()
    two[12, 20] = True
    other = rng.random((20, 30)) > 0.9
    assert math.isnan(auc_borji(p, one, seed=0))
    assert np.isfinite(auc_borji(p, two, seed=0))
    for value in (auc_shuffled(p, one, other, seed=0), auc_judd(p, one, seed=0), nss(p, one)):
        assert np.isfinite(value)
    none = np.zeros((20, 30), bool)
    assert all(math.isnan(v) for v in (auc_borji(p, none), auc_shuffled(p, none, other), auc_judd(p, none),
                                       nss(p, none)))


def test_score_frame_leaves_out_the_metrics_a_frame_has_no_ground_truth_for():
    """Called directly, not only through ``evaluate``: an all-zero or absent map gives NaN
    for SIM, CC and KL (the MATLAB functions would give SIM 0 and KL 0, KL's best value),
    and no fixation gives NaN for NSS, AUC-J and sAUC; each side is scored without the other."""
    rng = np.random.default_rng(2)
    p, g = rng.random((12, 16)), rng.random((12, 16))
    f = rng.random((12, 16)) > 0.8
    other = rng.random((12, 16)) > 0.8
    density = ("sim", "cc", "kld")
    fixation = ("nss", "auc_j", "sauc")
    for missing in (np.zeros((12, 16)), None):
        scores = score_frame(p, missing, f, other)
        assert all(math.isnan(scores[m]) for m in density), scores
        assert all(math.isfinite(scores[m]) for m in fixation), scores
    for missing in (np.zeros((12, 16), bool), None):
        scores = score_frame(p, g, missing, other)
        assert all(math.isfinite(scores[m]) for m in density) and all(math.isnan(scores[m]) for m in fixation)
    assert all(math.isnan(v) for v in score_frame(p, np.zeros((12, 16)), np.zeros((12, 16))).values())
