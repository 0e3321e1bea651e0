"""`avrsp data from-gaze`: recordings in, a dataset the readers take out (docs/datasets.md,
"Your own eye-tracking data"). Expected values come from the recordings as the tests
write them, from SciPy's own Gaussian filter, or from the tracker's own events."""

import csv
import json
import math
import shutil
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat
from scipy.ndimage import gaussian_filter

from avrsp.cli import main
from avrsp.data.datasets import DataError, stavis_videos
from avrsp.data.from_gaze import FromGazeConfig, build
from avrsp.data.gaze import DensityMaps, Screen, fixation_mask, load_screen, parse_blur, viewer_points
from avrsp.data.recordings import Recording, read_asc, read_csv, read_edf
from avrsp.data.synth import SynthConfig, generate_video, write_dataset
from avrsp.data.synth_gaze import GAZE_SCREEN, gaze_rect

REPO = Path(__file__).resolve().parents[1]


def write_video(path: Path, pts_ms, size=(48, 64)) -> Path:
    """An H.264 .mp4 whose frame k is shown from ``pts_ms[k]`` milliseconds on."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = size[1], size[0], "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        for k, p in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), (40 * k) % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = p, Fraction(1, 1000)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
    return path


def write_csv(path: Path, rows, header=("viewer", "time", "x", "y", "valid")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def fixations_by_frame(root: Path, db: str, name: str) -> list[set[tuple[int, int]]]:
    """Each frame's fixation pixels (row, col), read back by the project's STAViS reader."""
    videos = [v for part in ("train", "test") for v in stavis_videos(root / "stavis", db, part, 1) if v.name == name]
    v = videos[0]
    return [set(map(tuple, np.argwhere(v.fixations(k)))) for k in range(len(v))]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three 10-frame, 25 fps videos of 48×64 shown on a 64×48 screen (one video pixel per
    screen pixel) and one CSV per video: viewer p1 looks at pixel (row 10, col 20) all
    along, p2 at (30, 40)."""
    root = tmp_path_factory.mktemp("study")
    (root / "videos").mkdir()
    (root / "gaze").mkdir()
    for name in ("a", "b", "c"):
        write_video(root / "videos" / f"{name}.mp4", [40 * k for k in range(10)])
        t = np.arange(0, 0.4, 0.004)
        rows = [("p1", f"{s:.3f}", 20.5, 10.5, 1) for s in t] + [("p2", f"{s:.3f}", 40.5, 30.5, 1) for s in t]
        write_csv(root / "gaze" / f"{name}.csv", rows)
    (root / "screen.yaml").write_text("resolution: [64, 48]\nvideo_rect: stretch\n")
    return root


def study_args(root: Path, out: Path, *extra, gaze=None) -> list[str]:
    return ["data", "from-gaze", "--videos", str(root / "videos"), "--gaze", *(gaze or [str(root / "gaze")]),
            "--screen", str(root / "screen.yaml"), "--blur", "2px", "--out", str(out), "--quiet", *extra]


# ------------------------------------------------------------------ samples → frames

def test_samples_go_to_the_frame_on_screen_by_the_decoded_timestamps(study, tmp_path):
    """A variable-frame-rate video: frame k is on screen from its own timestamp to the
    next one's, the last frame for the median frame interval (60 ms here). One sample per
    frame, 0.5 ms after the frame appeared, at column k: frame k's fixation is at column k.
    Catches taking the frame of a sample as floor(t·fps) with the average rate."""
    pts = [0, 40, 100, 120, 200, 260, 400, 410, 500, 560]
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "vfr.mp4", pts)
    for name in ("a", "b"):
        shutil.copy(study / "videos" / f"{name}.mp4", videos)
    rows = [("p1", f"{(p + 0.5) / 1000:.4f}", k + 0.5, 5.5, 1) for k, p in enumerate(pts)]
    rows += [("p1", "0.6150", 60.5, 7.5, 1), ("p1", "0.6250", 61.5, 7.5, 1)]  # in the last frame; after its end
    recs = read_csv(write_csv(tmp_path / "vfr.csv", rows))
    recs += [r for n in ("a", "b") for r in read_csv(study / "gaze" / f"{n}.csv")]
    meta = build(sorted(videos.iterdir()), recs, Screen(64, 48, video_rect="stretch"), tmp_path / "out",
                 FromGazeConfig(blur="2px", per_frame="samples", layouts=("stavis",)))
    got = fixations_by_frame(tmp_path / "out", "Gaze", "vfr")
    assert got[:9] == [{(5, k)} for k in range(9)]
    assert got[9] == {(5, 9), (7, 60)}
    vfr = next(v for v in meta["videos"] if v["name"] == "vfr")
    assert vfr["viewers"]["p1"]["outside"] == 1 and vfr["variable_frame_rate"]
    assert vfr["fps"] == pytest.approx(10 / 0.62)  # frames over their display time, in the fold list too
    assert "vfr 10 16.129" in (tmp_path / "out" / "stavis" / "fold_lists" / "Gaze_list_train_1_fps.txt").read_text() \
        + (tmp_path / "out" / "stavis" / "fold_lists" / "Gaze_list_test_1_fps.txt").read_text()


@pytest.mark.parametrize("origin", ["first-frame", "media"])
def test_a_video_whose_first_frame_is_not_at_zero(study, tmp_path, origin):
    """Frames from 0.5 s on the video's own clock, 40 ms apart. With time 0 at the first
    frame's onset (default), t = 0.01 s is frame 0 and 0.05 s frame 1; on the media clock
    (presentation timestamps) 0.51 s is frame 0, 0.55 s frame 1 and 0.2 s precedes the
    video. Catches ignoring the first timestamp on the media clock, or applying it to
    first-frame times."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "late.mp4", [500 + 40 * k for k in range(10)])
    for name in ("a", "b"):
        shutil.copy(study / "videos" / f"{name}.mp4", videos)
    shift = 0.5 if origin == "media" else 0.0
    rows = [("p1", f"{shift + 0.01:.3f}", 3.5, 4.5, 1), ("p1", f"{shift + 0.05:.3f}", 8.5, 4.5, 1),
            ("p1", "0.2" if origin == "media" else "-0.1", 30.5, 4.5, 1)]
    recs = read_csv(write_csv(tmp_path / "late.csv", rows))
    recs += [r for n in ("a", "b") for r in read_csv(study / "gaze" / f"{n}.csv")]
    meta = build(sorted(videos.iterdir()), recs, Screen(64, 48, video_rect="stretch"), tmp_path / "out",
                 FromGazeConfig(blur="2px", time_origin=origin, layouts=("stavis",)))
    got = fixations_by_frame(tmp_path / "out", "Gaze", "late")
    assert got[0] == {(4, 3)} and got[1] == {(4, 8)} and all(not f for f in got[2:])
    late = next(v for v in meta["videos"] if v["name"] == "late")
    assert late["viewers"]["p1"]["outside"] == 1
    assert late["first_frame_at"] == pytest.approx(shift)


def test_screen_pixels_to_video_pixels_and_what_is_dropped():
    """A 128×72 video on a 1280×960 screen. Fitted: 10 screen pixels per video pixel, bars
    of 120 px above and below; at its own size: centred at (576, 444). Each drop reason
    counts once, in order: outside the duration, invalid, off the screen, off the video.
    Catches a missed letterbox offset, a scale taken from the screen instead of the
    video's rectangle, or a blink counted as off-screen."""
    starts, end = np.arange(4) / 10, 0.4
    fit = Screen(1280, 960)
    assert fit.rect("v", 128, 72) == (0.0, 120.0, 1280.0, 720.0)
    native = Screen(1280, 960, video_rect="native")
    assert native.rect("v", 128, 72) == (576.0, 444.0, 128.0, 72.0)
    assert Screen(1280, 960, videos={"v": (10, 20, 256, 144)}).rect("v", 128, 72) == (10, 20, 256, 144)
    t = np.array([0.05, 0.15, 0.16, 0.17, 0.18, 0.19, -0.1, 0.45, 0.25])
    x = np.array([645.0, 100.0, 100.0, np.nan, -3.0, 640.0, 640.0, 640.0, 1279.9])
    y = np.array([125.0, 300.0, 300.0, np.nan, 300.0, 50.0, 300.0, 300.0, 839.9])
    valid = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1], bool)
    rec = Recording("p", "v", "r.csv", t, x, y, valid)
    frames, rows, cols, d = viewer_points(rec, starts, end, fit, fit.rect("v", 128, 72), (72, 128))
    assert list(zip(frames, rows, cols)) == [(0, 0, 64), (1, 18, 10), (2, 71, 127)]
    assert (d.samples, d.outside, d.invalid, d.off_screen, d.off_video, d.kept) == (9, 2, 2, 1, 1, 3)
    assert d.frames_without_gaze == 1  # frame 3: this viewer has no sample there
    frames, rows, cols, _ = viewer_points(Recording("p", "v", "r.csv", np.array([0.05]), np.array([576 + 10.5]),
                                                    np.array([444 + 3.2]), np.array([True])),
                                          starts, end, native, native.rect("v", 128, 72), (72, 128))
    assert (rows[0], cols[0]) == (3, 10)


def test_per_frame_median_or_every_sample():
    """Four samples at one point and one at another within a frame: the median keeps the
    four's pixel only; ``samples`` keeps both. Catches a mean (which lands between) or a
    median over the wrong axis."""
    screen = Screen(100, 100, video_rect="stretch")
    t = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    x = np.array([10.2, 10.4, 10.6, 90.0, 10.8])
    y = np.array([20.3, 20.1, 20.5, 80.0, 20.7])
    rec = Recording("p", "v", "r.csv", t, x, y, np.ones(5, bool))
    args = (np.array([0.0]), 0.1, screen, (0, 0, 100, 100), (100, 100))
    f, r, c, _ = viewer_points(rec, *args, "median")
    assert list(zip(f, r, c)) == [(0, 20, 10)]
    f, r, c, _ = viewer_points(rec, *args, "samples")
    assert sorted(set(zip(f, r, c))) == [(0, 20, 10), (0, 80, 90)]


def test_per_frame_fixations_leave_out_the_saccade():
    """500 Hz: a fixation, a 40 ms saccade across 600 px, another fixation. REMoDNaV marks
    the saccade's samples as no fixation; each frame's point sits on the fixation of its
    frame. Catches the detector's mask being ignored or inverted, or the detection
    failing on a recording whose first or last samples are lost."""
    pytest.importorskip("remodnav")
    rng = np.random.default_rng(0)
    t = np.arange(0, 1.0, 1 / 500)
    a, b = np.array([305.0, 405.0]), np.array([905.0, 505.0])
    frac = np.clip((t - 0.4) / 0.04, 0, 1)[:, None]
    xy = a + (b - a) * frac + rng.normal(0, 0.3, (len(t), 2))
    rec = Recording("p", "v", "r.csv", t, xy[:, 0], xy[:, 1], np.ones(len(t), bool))
    screen = Screen(1280, 960, (40.0, 30.0), 60.0, "stretch")
    mask = fixation_mask(rec, screen)
    saccade = (t > 0.402) & (t < 0.438)
    assert not mask[saccade].any()
    far = np.abs(t - 0.42) > 0.05
    assert mask[far].mean() > 0.9
    f, r, c, d = viewer_points(rec, np.arange(10) / 10, 1.0, screen, (0, 0, 1280, 960), (96, 128), "fixations", mask)
    assert d.not_fixation == int((~mask).sum()) >= saccade.sum() and d.kept == int(mask.sum())
    assert list(zip(r[:4], c[:4])) == [(40, 30)] * 4 and list(zip(r[5:], c[5:])) == [(50, 90)] * 5
    # A recording that starts and ends with the eye lost (a blink at either end).
    lost = np.ones(len(t), bool)
    lost[:2] = lost[-3:] = False
    mask = fixation_mask(Recording("p", "v", "r.csv", t, xy[:, 0], xy[:, 1], lost), screen)
    assert not mask[~lost].any() and mask[far & lost].mean() > 0.9


# ------------------------------------------------------------------ density maps

def test_density_maps_are_scipys_gaussian_scaled_to_255():
    """The separable product equals SciPy's 2-D Gaussian filter of the binary map, scaled
    so that the frame's maximum is 255 (to one grey level of rounding); no fixation gives
    an all-zero map. Catches a wrong border rule, σ in the wrong axis, or another scale."""
    rng = np.random.default_rng(0)
    fix = np.zeros((36, 64), bool)
    fix[rng.integers(0, 36, 7), rng.integers(0, 64, 7)] = True
    fix[0, 0] = fix[35, 63] = True  # at the borders, where the mirror rule shows
    for sigma in (1.5, 4.48, 12.7):
        ref = gaussian_filter(fix.astype(np.float32), sigma)
        ref = np.round(255 * ref / ref.max())
        got = DensityMaps(fix.shape, sigma)(fix)
        assert got.dtype == np.uint8 and got.max() == 255
        assert np.abs(got.astype(int) - ref).max() <= 1
    assert not DensityMaps(fix.shape, 3.0)(np.zeros_like(fix)).any()


def test_blur_in_pixels_degrees_and_dhf1k():
    """σ in video pixels as given; DHF1K's 30 px full width at half maximum per 640 px of
    width (σ = 30 / 2.3548 = 12.74 px at 640×360, twice that at 1280); one degree on a
    40 cm, 1280 px screen at 60 cm is 1280/40 · 2·60·tan(0.5°) = 33.51 screen px, and a
    128 px video shown 1280 px wide has 0.1 video px per screen px. Catches FWHM taken as
    σ, or degrees converted in screen instead of video pixels."""
    screen = Screen(1280, 960, (40.0, 30.0), 60.0)
    assert parse_blur("dhf1k").sigma_px(640, 640, screen) == pytest.approx(12.7398, abs=1e-3)
    assert parse_blur("dhf1k").sigma_px(1280, 1280, screen) == pytest.approx(25.4797, abs=1e-3)
    assert parse_blur("3.5px").sigma_px(128, 1280, screen) == 3.5
    assert parse_blur("1deg").sigma_px(128, 1280, screen) == pytest.approx(3.3511, abs=1e-3)
    with pytest.raises(DataError, match="size_cm and distance_cm"):
        parse_blur("1deg").sigma_px(128, 1280, Screen(1280, 960))
    with pytest.raises(DataError, match="expected dhf1k"):
        parse_blur("30")


# ------------------------------------------------------------------ tracker formats

def test_csv_in_milliseconds_for_several_videos():
    """One CSV holding several videos (a ``video`` column), times in ms, a lost sample
    with empty x, y. Catches ms read as seconds, the file name taking precedence over
    the video column, or video "a" + viewer "bc" grouped with video "ab" + viewer "c"."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = write_csv(Path(d) / "session.csv", [("p1", "a", "1500", "10", "20"), ("p1", "a", "1504", "", ""),
                                                   ("p2", "b", "-8", "1.5", "2.5"), ("c", "ab", "0", "1", "1"),
                                                   ("bc", "a", "0", "1", "1")],
                         header=("viewer", "video", "time", "x", "y"))
        recs = {(r.video, r.viewer): r for r in read_csv(path, "ms")}
    assert sorted(recs) == [("a", "bc"), ("a", "p1"), ("ab", "c"), ("b", "p2")]
    np.testing.assert_allclose(recs["a", "p1"].t, [1.5, 1.504])
    assert recs["a", "p1"].valid.tolist() == [True, False]
    np.testing.assert_allclose(recs["b", "p2"].t, [-0.008])


ASC_HEADER = """** CONVERTED FROM D:\\{name}.edf using edfapi 4.2.1 Jun 13 2023
** DATE: Wed Dec  6 20:00:00 2023
** TYPE: EDF_FILE BINARY EVENT SAMPLE TAGGED
** VERSION: EYELINK II 1
** SOURCE: EYELINK CL
** EYELINK II CL v6.12 Feb  1 2018 (EyeLink Portable Duo)
**

MSG\t{t0} DISPLAY_COORDS 0 0 1279 959
MSG\t{t0} RECCFG CR 500 2 1 {eyes}
MSG\t{t0} GAZE_COORDS 0.00 0.00 1279.00 959.00
START\t{t0} \t{start}\tSAMPLES\tEVENTS
PRESCALER\t1
VPRESCALER\t1
PUPIL\tAREA
EVENTS\tGAZE\t{start}\tRATE\t 500.00\tTRACKING\tCR\tFILTER\t2
SAMPLES\tGAZE\t{start}\tRATE\t 500.00\tTRACKING\tCR\tFILTER\t2
"""


def test_eyelink_asc(tmp_path):
    """An ASC file as edf2asc writes it (EyeLink 1000 Plus User Manual, "ASC file format"):
    500 Hz, millisecond timestamps, two videos' onset messages, a blink whose samples
    are '.'. Times become seconds from each onset; the blink's samples are invalid; a
    binocular file averages the two eyes where both are valid. Catches milliseconds kept
    as seconds, onsets not subtracted, or one video's samples running into the next."""
    pytest.importorskip("pymovements")
    lines = ASC_HEADER.format(name="p01", t0=994, eyes="L", start="LEFT").splitlines()
    lines += [f"{t}\t    1.0\t    1.0\t 1000.0\t..." for t in (994, 996, 998)]  # before any video
    t = 1000
    for name, (x, y) in (("clip_a", (640.5, 480.0)), ("clip_b.mp4", (100.0, 200.0))):
        lines.append(f"MSG\t{t} VIDEO_ONSET {name}")
        for i in range(10):
            if name == "clip_b.mp4" and i == 3:
                lines.append(f"SBLINK L {t}")
            if name == "clip_b.mp4" and 3 <= i < 5:
                lines.append(f"{t}\t   .\t   .\t    0.0\t...")
            else:
                lines.append(f"{t}\t  {x:.1f}\t  {y:.1f}\t 1000.0\t...")
            if name == "clip_b.mp4" and i == 4:
                lines.append(f"EBLINK L {t - 2} {t} 3")
            t += 2
    lines.append(f"END\t{t} \tSAMPLES\tEVENTS\tRES\t  38.54\t  31.12")
    path = tmp_path / "p01.asc"
    path.write_text("\n".join(lines) + "\n")
    a, b = read_asc(path, r"VIDEO_ONSET (\S+)")
    assert (a.viewer, a.video, b.video) == ("p01", "clip_a", "clip_b")
    np.testing.assert_allclose(a.t, np.arange(10) * 0.002)
    np.testing.assert_allclose(b.t, np.arange(10) * 0.002)
    np.testing.assert_allclose(a.x, 640.5)
    np.testing.assert_allclose(b.x[b.valid], 100.0)
    assert b.valid.tolist() == [True] * 3 + [False] * 2 + [True] * 5
    lines = ASC_HEADER.format(name="p02", t0=2000, eyes="LR", start="LEFT\tRIGHT").splitlines()
    lines.append("MSG\t2000 VIDEO_ONSET clip_a")
    lines += [f"{2000 + 2 * i}\t  100.0\t  200.0\t 1000.0\t  110.0\t  204.0\t 1000.0\t....." for i in range(3)]
    lines += ["SBLINK R 2006", "2006\t  100.0\t  200.0\t 1000.0\t   .\t   .\t    0.0\t.....",
              "EBLINK R 2006 2006 1", "END\t2008 \tSAMPLES\tEVENTS\tRES\t  38.54\t  31.12"]
    path = tmp_path / "p02.asc"
    path.write_text("\n".join(lines) + "\n")
    (both,) = read_asc(path, r"VIDEO_ONSET (\S+)", eye="mean")
    np.testing.assert_allclose(both.x, [105, 105, 105, 100])
    np.testing.assert_allclose(both.y, [202, 202, 202, 200])
    (right,) = read_asc(path, r"VIDEO_ONSET (\S+)", eye="right")
    assert right.valid.tolist() == [True, True, True, False]


def _eyelinkio_sample(name: str) -> Path:
    eyelinkio = pytest.importorskip("eyelinkio")
    path = Path(eyelinkio.__file__).parent / "tests" / "data" / name
    if not path.is_file():
        pytest.skip(f"eyelinkio's sample recording {name} is not installed")
    return path


def test_eyelink_edf_against_the_trackers_own_fixations():
    """EDF files cannot be written without SR Research's tools, so this reads a real
    EyeLink 1000 Hz recording that ships with eyelinkio, cut at its TRIALID messages. The
    tracker's own fixation events (computed on the host from the same samples) give the
    expected values: the mean of our samples between a fixation's start and end, in
    seconds from the trial's onset, is the tracker's average position to 0.1 px. Catches
    a wrong time base or onset (saccade samples would pull the mean by pixels)."""
    path = _eyelinkio_sample("test_2_raw.edf")
    import eyelinkio

    recs = read_edf(path, r"TRIALID (\d+)")
    edf = eyelinkio.read_edf(str(path))
    onsets = sorted(float(m["stime"]) for m in edf["discrete"]["messages"] if m["msg"].startswith(b"TRIALID"))
    assert len(recs) == len(onsets) and [r.video for r in recs[:3]] == ["1", "2", "3"]
    assert recs[0].viewer == "test_2_raw"
    checked = 0
    for rec, t0, t1 in zip(recs[:5], onsets, onsets[1:]):
        for e in edf["discrete"]["fixations"]:
            if t0 <= e["stime"] and e["etime"] < t1:
                sel = (rec.t >= e["stime"] - t0) & (rec.t <= e["etime"] - t0) & rec.valid
                assert np.mean(rec.x[sel]) == pytest.approx(e["axp"], abs=0.1)
                assert np.mean(rec.y[sel]) == pytest.approx(e["ayp"], abs=0.1)
                checked += 1
    assert checked >= 5
    blinks = edf["discrete"]["blinks"]
    inside = next(b for b in blinks if onsets[0] <= b["stime"] and b["etime"] < onsets[-1])
    rec = next(r for r, t0 in zip(recs, onsets) if t0 <= inside["stime"] < t0 + r.t[-1])
    t0 = onsets[recs.index(rec)]
    assert not rec.valid[(rec.t >= inside["stime"] - t0) & (rec.t <= inside["etime"] - t0)].any()


# ------------------------------------------------------------------ the round trip

RT = SynthConfig(videos=3, frames=16, height=72, width=128, viewers=6, seed=5, gaze_csv=True)
RT_SIGMA = 0.035 * RT.width  # synth's own blur


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """`avrsp synth --gaze-csv`, then `avrsp data from-gaze` on its videos and raw gaze
    with synth's own blur."""
    root = tmp_path_factory.mktemp("rt")
    write_dataset(root / "synth", RT)
    out = root / "from_gaze"
    assert main(["data", "from-gaze", "--videos", str(root / "synth" / "videos"), "--gaze",
                 str(root / "synth" / "gaze"), "--screen", str(root / "synth" / "gaze" / "screen.json"),
                 "--blur", f"{RT_SIGMA}px", "--db", "Mine", "--out", str(out), "--quiet"]) == 0
    return root / "synth", out


def _expected_fixations(synth: Path, index: int, kind: str, name: str) -> list[set[tuple[int, int]]]:
    """Per frame, the fixation pixel of every simulated viewer who has at least one valid
    sample on the video while the frame is shown, straight from the CSV rows."""
    video = generate_video(RT, index, kind)
    left, top, w, h = gaze_rect(RT)
    seen = [set() for _ in range(RT.frames)]
    with open(synth / "gaze" / f"{name}.csv") as f:
        for row in csv.DictReader(f):
            if row["valid"] != "1":
                continue
            t, x, y = float(row["time"]), float(row["x"]), float(row["y"])
            k = math.floor(t * RT.fps)
            if 0 <= k < RT.frames and left <= x < left + w and top <= y < top + h:
                seen[k].add(int(row["viewer"][1:]))
    return [{tuple(video.gaze[k, v]) for v in seen[k]} for k in range(RT.frames)]


def test_round_trip_rebuilds_the_synthetic_fixations_and_maps(round_trip):
    """Every fixation from-gaze writes is the simulated viewer's own pixel, for exactly the
    viewers whose eye the tracker saw during the frame (a blink that spans a whole frame
    hides that viewer there); the density maps are SciPy's blur of those fixations. Against
    synth's own maps (every viewer, every frame) nothing is added and at least 90 % of the
    pixels come back. Catches any offset in time (a frame early or late), in space (the
    letterbox bars, a pixel's centre) or in the blur."""
    synth, out = round_trip
    meta = json.loads((synth / "synth.json").read_text())
    gmeta = json.loads((out / "gaze.json").read_text())
    dhf = {v["name"]: v["dhf1k"] for v in gmeta["videos"]}
    total = recovered = 0
    for i, v in enumerate(meta["videos"]):
        expected = _expected_fixations(synth, i, v["kind"], v["name"])
        got = fixations_by_frame(out, "Mine", v["name"])
        assert got == expected, v["name"]
        for k in range(RT.frames):
            fix = np.zeros((RT.height, RT.width), np.float32)
            for r, c in expected[k]:
                fix[r, c] = 1
            ref = gaussian_filter(fix, RT_SIGMA)
            ref = np.round(255 * ref / ref.max()) if ref.max() > 0 else ref
            mine = np.asarray(Image.open(out / "dhf1k" / dhf[v["name"]] / "maps" / f"{k + 1:04d}.png"), np.int32)
            assert np.abs(mine - ref).max() <= 1
            theirs = np.asarray(Image.open(synth / "dhf1k" / v["dhf1k"] / "fixation" / f"{k + 1:04d}.png")) > 0
            assert all(theirs[r, c] for r, c in got[k])
            total += int(theirs.sum())
            recovered += len(got[k])
    assert recovered / total >= 0.9


def test_the_round_trip_dataset_passes_data_check_and_records_how_it_was_made(round_trip, capsys):
    """`avrsp data check` finds nothing wrong in either layout; gaze.json names the blur,
    the per-frame rule and the screen, and counts per viewer what synth's recording threw
    away (blinks, off-screen glitches, samples on the letterbox bars, the margins before
    and after the video). Catches a layout the readers do not take, or a drop left out
    of the summary."""
    synth, out = round_trip
    capsys.readouterr()
    assert main(["data", "check", str(out)]) == 0
    report = capsys.readouterr().out
    assert "DHF1K (vinet)" in report and "STAViS" in report and "no problems found" in report
    meta = json.loads((out / "gaze.json").read_text())
    assert meta["blur"]["spec"] == f"{RT_SIGMA}px" and meta["per_frame"] == "median"
    assert meta["screen"]["width"] == GAZE_SCREEN["resolution"][0]
    for v in meta["videos"]:
        assert v["rect"] == list(gaze_rect(RT))
        for d in v["viewers"].values():
            assert d["samples"] == d["outside"] + d["invalid"] + d["off_screen"] + d["off_video"] + d["kept"]
            assert d["outside"] >= 90  # 0.2 s before and after the video at 250 Hz
        for reason in ("invalid", "off_screen", "off_video"):  # blinks, glitches, looks at the bars
            assert sum(d[reason] for d in v["viewers"].values()) > 0, (v["name"], reason)


def test_synth_gaze_csv_changes_no_other_file(round_trip, tmp_path):
    """The raw gaze draws from its own random stream: with gaze_csv off, every file is
    the same bytes (.mat files by content: their header holds the time they were
    written), and synth.json differs only by the flag. Catches a draw for the raw gaze
    taken from the video's own stream inside generate_video (the sound, drawn after the
    fixations, would change)."""
    synth, _ = round_trip
    plain = tmp_path / "plain"
    write_dataset(plain, SynthConfig(**{**RT.__dict__, "gaze_csv": False}))
    files = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(synth) for p in synth.rglob("*") if p.is_file() and "gaze" not in p.parts)
    for rel in files:
        if rel.suffix == ".mat":
            np.testing.assert_array_equal(loadmat(plain / rel)["eyeMap"], loadmat(synth / rel)["eyeMap"])
        elif rel.name == "synth.json":
            a, b = json.loads((plain / rel).read_text()), json.loads((synth / rel).read_text())
            assert a["config"].pop("gaze_csv") is False and b["config"].pop("gaze_csv") is True
            assert a == b
        else:
            assert (plain / rel).read_bytes() == (synth / rel).read_bytes(), rel


def test_a_from_gaze_dataset_trains_resumes_evaluates_and_serves(round_trip, tmp_path, capsys):
    """The tiny model fine-tunes for two steps on the from-gaze STAViS layout, resumes for
    a second epoch of two, is scored by `avrsp evaluate`, and the dataset is what `avrsp
    serve --data` lists. Catches a layout that data check accepts but training, its
    resume or evaluation cannot use."""
    from avrsp.evaluate import plan

    _, out = round_trip
    run = tmp_path / "run"
    assert main(["train", "--config", str(REPO / "configs" / "synth_tiny.yaml"), f"data.root={out / 'stavis'}",
                 "epochs=1", "steps_per_epoch=2", "workers=0", "log_images=0", "precise_bn=0", f"out={run}",
                 "--quiet"]) == 0
    first = list(csv.DictReader(open(run / "metrics.csv")))
    assert main(["train", "--resume", str(run), "epochs=2", "--quiet"]) == 0
    assert json.loads((run / "ckpt" / "latest.json").read_text())["step"] == 4
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert rows[:2] == first and [r["epoch"] for r in rows] == ["0", "1", "2"]  # continued, not redone
    ckpt = run / "best.safetensors"
    assert ckpt.is_file()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(out / "stavis"), "--dataset", "Mine", "--split",
                 "1", "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "eval" / "per_video.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["cc"])) and int(rows[0]["cc_frames"]) == RT.frames
    assert len(plan(out / "stavis", "stavis", "all", [None] * 3)) == RT.videos  # serve --data's list


# ------------------------------------------------------------------ bad input

def _break(case: str, root: Path) -> tuple[list[str], str]:
    """Damage a copy of the study; the extra arguments (a --gaze here replaces the
    study's) and what the error must say."""
    gaze = root / "gaze"
    if case == "missing column":
        write_csv(gaze / "a.csv", [("p1", "0.1", "3")], header=("viewer", "time", "x"))
        return [], f"{gaze / 'a.csv'}: no column 'y'"
    if case == "not a number":
        rows = list(csv.reader(open(gaze / "b.csv")))
        rows[5][2] = "12;5"
        write_csv(gaze / "b.csv", rows[1:])
        return [], f"{gaze / 'b.csv'}:6: x '12;5' is not a number"
    if case == "unknown video":
        write_csv(gaze / "d.csv", [("p1", "0.1", "3", "4", "1")])
        return [], f"{gaze / 'd.csv'}: viewer 'p1' watched video 'd', which is not among the videos"
    if case == "video without gaze":
        (gaze / "c.csv").unlink()
        return [], f"{root / 'videos' / 'c.mp4'}: no gaze recording names this video"
    if case == "milliseconds read as seconds":
        rows = [(r[0], str(float(r[1]) * 1000), *r[2:]) for r in list(csv.reader(open(gaze / "a.csv")))[1:]]
        write_csv(gaze / "a.csv", rows)
        return [], f"{gaze / 'a.csv'}: 2 of 200 valid samples fall within their video's duration"
    if case == "screen key":
        (root / "screen.yaml").write_text("resolution: [64, 48]\nvideo_rectangle: stretch\n")
        return [], f"{root / 'screen.yaml'}: unknown key 'video_rectangle'"
    if case == "no resolution":
        (root / "screen.yaml").write_text("distance_cm: 60\n")
        return [], f"{root / 'screen.yaml'}: the screen's resolution is missing"
    if case == "degrees without geometry":
        return ["--blur", "1deg"], "--blur 1deg: a blur in degrees needs the screen's size_cm and distance_cm"
    if case == "tracker file without --onset":
        (gaze / "p9.asc").write_text("MSG\t1 hello\n")
        return [], f"{gaze / 'p9.asc'}: a tracker recording needs --onset REGEX"
    if case == "no onset message":
        pytest.importorskip("pymovements")
        lines = ASC_HEADER.format(name="p9", t0=1000, eyes="L", start="LEFT").splitlines()
        lines += ["MSG\t1000 TRIALID 1", "1000\t  10.0\t  10.0\t 1000.0\t...",
                  "END\t1002 \tSAMPLES\tEVENTS\tRES\t 1.0\t 1.0"]
        (gaze / "p9.asc").write_text("\n".join(lines) + "\n")
        return ["--onset", r"VIDEO_ONSET (\S+)"], f"{gaze / 'p9.asc'}: no message matches --onset"
    if case == "unsupported format":
        (gaze / "p9.tsv").write_text("x")
        return ["--gaze", str(gaze / "p9.tsv")], f"{gaze / 'p9.tsv'}: unsupported recording format '.tsv'"
    if case == "truncated video":
        data = (root / "videos" / "b.mp4").read_bytes()
        (root / "videos" / "b.mp4").write_bytes(data[: len(data) // 2])
        return [], f"{root / 'videos' / 'b.mp4'}: "
    if case == "two recordings of one viewer":
        rows = [(r[0], "a", *r[1:]) for r in list(csv.reader(open(gaze / "a.csv")))[1:]]
        write_csv(root / "again.csv", rows, header=("viewer", "video", "time", "x", "y", "valid"))
        return ["--gaze", str(gaze), str(root / "again.csv")], "viewer 'p1' has a second recording of video 'a'"
    raise AssertionError(case)


BAD = ["missing column", "not a number", "unknown video", "video without gaze", "milliseconds read as seconds",
       "screen key", "no resolution", "degrees without geometry", "tracker file without --onset",
       "no onset message", "unsupported format", "truncated video", "two recordings of one viewer"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_naming_the_file_and_leaves_nothing(study, tmp_path, capsys, case):
    """Each bad input ends the command with exit status 2 and one line that names the file
    and the cause; no dataset and no temporary folder is left behind. Catches a traceback,
    a message without the file, or a half-written dataset."""
    root = tmp_path / "study"
    shutil.copytree(study, root)
    extra, message = _break(case, root)
    out = tmp_path / "out"
    args = study_args(root, out, gaze=extra[1:]) if extra[:1] == ["--gaze"] else study_args(root, out, *extra)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("avrsp: error: ") and message in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_an_existing_folder_is_replaced_only_when_it_holds_a_from_gaze_dataset(study, tmp_path, capsys):
    """A folder of other data is refused; a from-gaze dataset needs --overwrite and is then
    replaced whole. Catches writing into a user's folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert main(study_args(study, out)) == 2
    assert "is not a dataset written by 'avrsp data from-gaze'" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"
    shutil.rmtree(out)
    assert main(study_args(study, out)) == 0
    assert main(study_args(study, out)) == 2 and "--overwrite" in capsys.readouterr().err
    (out / "stale.txt").write_text("x")
    assert main(study_args(study, out, "--overwrite")) == 0 and not (out / "stale.txt").exists()


def test_a_missing_reader_names_the_extra_to_install(tmp_path, monkeypatch):
    """Without eyelinkio, an .edf file is refused with the pip line of the gaze extra.
    Catches an ImportError traceback."""
    import sys

    monkeypatch.setitem(sys.modules, "eyelinkio", None)  # what an absent package looks like to import
    (tmp_path / "p1.edf").write_bytes(b"")
    with pytest.raises(DataError, match=r"needs the 'eyelinkio' package: pip install 'avrsp\[gaze\]'"):
        read_edf(tmp_path / "p1.edf", "X (\\d+)")


def test_screen_file_and_command_line_combine(tmp_path):
    """The command line's values win over the file's; rectangles may be given per video.
    Catches overrides dropped or applied the other way round."""
    path = tmp_path / "screen.yaml"
    path.write_text("resolution: [1920, 1080]\nsize_cm: [53, 30]\ndistance_cm: 70\nvideos:\n  a: [0, 0, 960, 540]\n")
    s = load_screen(path, distance_cm=60.0, video_rect="native")
    assert (s.width, s.height, s.size_cm, s.distance_cm, s.video_rect) == (1920, 1080, (53.0, 30.0), 60.0, "native")
    assert s.rect("a", 64, 48) == (0.0, 0.0, 960.0, 540.0) and s.rect("b", 64, 48) == (928.0, 516.0, 64.0, 48.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_screen(None, resolution="800x600").width == 800
