"""`avrsp predict` on the files people actually have (issue 17): every common audio codec,
rate and channel layout in every common container reaches the overlay video in sync, a
sound that cannot be encoded costs the sound and not the video, a failure part-way
leaves nothing that looks finished, and broken or odd files give maps or one clean line."""

import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import avrsp
from avrsp.checkpoint import save_model
from avrsp.cli import main
from avrsp.media import MediaError, MediaWarning, iter_frames, probe, read_audio
from avrsp.predict import Predictor, predict_to_folder

FPS, FRAMES, CLICK = 25, 25, 0.3  # a click at 0.3 s, then a 440 Hz tone from 0.5 s


def signal(rate: int, seconds: float) -> np.ndarray:
    """Silence, a 10 ms click at CLICK seconds, silence, a 440 Hz tone from 0.5 s: the click's
    onset is aperiodic, so a shifted track cannot match it by accident."""
    x = np.zeros(int(rate * seconds), np.float32)
    c = int(CLICK * rate)
    x[c:c + int(0.01 * rate)] = 0.8
    t0 = int(0.5 * rate)
    x[t0:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(x) - t0) / rate)
    return x


def make_video(path: Path, container: str, vcodec: str, pix_fmt: str, acodec: str | None = None, rate: int = 0,
               layout: str = "", frames: int = FRAMES, size=(64, 96), fps: int = FPS, start: float = 0.0) -> Path:
    """``start``: the time (s) both streams' timestamps begin at, as in MPEG-TS files cut
    from a broadcast, whose clock is rarely at 0."""
    with av.open(str(path), "w", format=container) as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[1], size[0], pix_fmt
        a = None
        if acodec:
            a = out.add_stream(acodec, rate=rate)
            a.layout = layout
            if acodec == "vorbis":
                a.codec_context.options = {"strict": "experimental"}
        for i in range(frames):
            img = np.zeros((*size, 3), np.uint8)
            img[:, (i * 3) % size[1]:(i * 3) % size[1] + 10] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if start:
                frame.pts, frame.time_base = round(start * fps) + i, Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if a is not None:
            fmt = a.codec_context.format.name
            x = np.repeat(signal(rate, frames / fps)[None], a.codec_context.layout.nb_channels, 0)
            base = fmt.rstrip("p")
            x = {"s16": lambda v: (v * 32767).astype(np.int16), "s32": lambda v: (v * 2**31 * 0.99).astype(np.int32),
                 "flt": lambda v: v.astype(np.float32), "dbl": lambda v: v.astype(np.float64)}[base](x)
            arr = x if fmt.endswith("p") else x.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, round(start * rate), Fraction(1, rate)
            for p in a.encode(frame):
                out.mux(p)
            for p in a.encode(None):
                out.mux(p)
    return path


@pytest.fixture(scope="module")
def predictor():
    return Predictor(device="cpu", precision="fp32")


def onset(x: np.ndarray, rate: int = 22050) -> float:
    return float(np.argmax(np.abs(x) > 0.3)) / rate


def peak_hz(x: np.ndarray, rate: int = 22050) -> float:
    x = x[int(0.55 * rate):int(0.95 * rate)]
    return float(np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x)))))) * rate / len(x)


# (audio codec, rate, layout, container, video codec, pixel format, extension, copied into the MP4)
MATRIX = [
    ("pcm_s16le", 8000, "mono", "matroska", "ffv1", "yuv420p", "mkv", False),
    ("pcm_s16le", 16000, "mono", "matroska", "ffv1", "yuv420p", "mkv", False),   # the reported crash
    ("pcm_s16le", 44100, "stereo", "mov", "libx264", "yuv420p", "mov", False),
    ("pcm_f32le", 48000, "5.1", "matroska", "libx264", "yuv420p", "mkv", False),  # read back as '6 channels'
    ("pcm_s16le", 48000, "stereo", "avi", "mjpeg", "yuvj420p", "avi", False),
    ("aac", 44100, "stereo", "mp4", "libx264", "yuv420p", "mp4", True),
    ("aac", 48000, "5.1", "mp4", "libx264", "yuv420p", "mp4", True),
    ("aac", 22050, "mono", "matroska", "libx264", "yuv420p", "mkv", True),
    ("libmp3lame", 44100, "stereo", "mp4", "libx264", "yuv420p", "mp4", True),
    ("libmp3lame", 22050, "mono", "avi", "mpeg4", "yuv420p", "avi", True),
    ("libopus", 48000, "stereo", "webm", "libvpx", "yuv420p", "webm", True),
    ("libopus", 16000, "mono", "matroska", "libx264", "yuv420p", "mkv", True),
    ("vorbis", 44100, "stereo", "webm", "libvpx-vp9", "yuv420p", "webm", False),
    ("ac3", 48000, "5.1", "matroska", "libx264", "yuv420p", "mkv", True),
    ("ac3", 44100, "stereo", "avi", "mpeg4", "yuv420p", "avi", True),
]


@pytest.mark.parametrize("acodec, rate, layout, container, vcodec, pix_fmt, ext, copied", MATRIX,
                         ids=[f"{m[0]}-{m[1]}-{m[2]}-{m[6]}" for m in MATRIX])
def test_every_audio_kind_reaches_the_overlay_in_sync(predictor, tmp_path, acodec, rate, layout, container, vcodec,
                                                      pix_fmt, ext, copied):
    source = make_video(tmp_path / f"in.{ext}", container, vcodec, pix_fmt, acodec, rate, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)  # no sound may be dropped here
        result = predict_to_folder(predictor, source, tmp_path / "out", progress=False)
    assert result.frames == FRAMES
    video = tmp_path / "out" / "in_saliency.mp4"
    with av.open(str(video)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        name = c.streams.audio[0].codec_context.codec.canonical_name
    assert (name != "aac" or acodec == "aac") if copied else name == "aac"
    assert len(list(iter_frames(video))) == FRAMES
    original, muxed = read_audio(source), read_audio(video)
    # The click is where it was, to 5 ms (an audio frame of the video is 40 ms), and the tone is the tone.
    assert abs(onset(muxed) - onset(original)) < 0.005, (onset(original), onset(muxed))
    assert CLICK - 0.002 <= onset(original) < CLICK + 0.06  # (+ the source encoder's own delay, e.g. MP3 in AVI)
    assert abs(peak_hz(muxed) - 440) < 10   # FFT bins of 2.5 Hz on 0.4 s; a wrong rate would move it by far more


def click_time(path: Path) -> float:
    """When the click sounds, in seconds after the first video frame is shown, read from
    the streams' own timestamps (not through read_audio, which aligns the same way the
    overlay's writer does)."""
    with av.open(str(path)) as c:
        first_frame = min(float(f.time) for f in c.decode(video=0))
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            x = f.to_ndarray().astype(np.float64)
            x = x[0] if f.format.is_planar else x[0, ::f.layout.nb_channels]   # the first channel
            loud = np.flatnonzero(np.abs(x) > 0.3 * (32767 if f.format.name.startswith("s16") else 1))
            if len(loud):
                return float(f.time) + loud[0] / f.sample_rate - first_frame
    raise AssertionError(f"{path}: no click")


@pytest.mark.parametrize("acodec, rate", [("aac", 44100), ("mp2", 48000)], ids=["aac-copied", "mp2-converted"])
def test_a_video_stream_that_starts_late_keeps_the_click_in_place(predictor, tmp_path, acodec, rate):
    """MPEG-TS streams carry the broadcast clock's time (often near 1.4 s, never 0 in
    practice), and the overlay MP4's video starts at 0: its sound must be shifted by the
    source video's start, copied (AAC) or converted (MP2). Unshifted, the click would be
    heard 1.4 s late; the bound is a 5 ms window of the 10 ms click."""
    source = make_video(tmp_path / "in.ts", "mpegts", "libx264", "yuv420p", acodec, rate, "stereo", start=1.4)
    with av.open(str(source)) as c:
        v = c.streams.video[0]
        assert float(v.start_time * v.time_base) >= 1.4        # the case at hand: a late video stream
    assert abs(click_time(source) - CLICK) < 0.005
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)
        predict_to_folder(predictor, source, tmp_path / "out", progress=False)
    assert abs(click_time(tmp_path / "out" / "in_saliency.mp4") - CLICK) < 0.005


def test_a_sound_the_encoder_refuses_costs_the_sound_not_the_video(predictor, tmp_path, monkeypatch, capsys):
    source = make_video(tmp_path / "in.mkv", "matroska", "libx264", "yuv420p", "pcm_s16le", 16000, "mono")
    monkeypatch.setattr("avrsp.media.write._aac_opens", lambda rate, layout: "Invalid argument")
    assert main(["predict", str(source), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("without sound") == 1 and "Invalid argument" in err and "Traceback" not in err
    with av.open(str(tmp_path / "a" / "in" / "in_saliency.mp4")) as c:
        assert not c.streams.audio
    assert len(list(iter_frames(tmp_path / "a" / "in" / "in_saliency.mp4"))) == FRAMES


def test_a_sound_that_fails_while_written_is_dropped_with_one_warning(predictor, tmp_path, monkeypatch):
    source = make_video(tmp_path / "in.mkv", "matroska", "libx264", "yuv420p", "pcm_s16le", 16000, "mono")

    def broken(self, container, out, stream):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr("avrsp.media.write._SoundTrack.write", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict_to_folder(predictor, source, tmp_path / "out", progress=False)
    messages = [str(w.message) for w in caught if w.category is MediaWarning]
    assert len(messages) == 1 and "without sound" in messages[0] and "Invalid data" in messages[0]
    video = tmp_path / "out" / "in_saliency.mp4"
    with av.open(str(video)) as c:
        assert not c.streams.audio
    assert len(list(iter_frames(video))) == FRAMES


def test_a_failure_part_way_leaves_no_output_that_looks_complete(predictor, tmp_path, monkeypatch, capsys):
    good = make_video(tmp_path / "good.mp4", "mp4", "libx264", "yuv420p", "aac", 44100, "stereo")
    bad = make_video(tmp_path / "bad.mp4", "mp4", "libx264", "yuv420p", "aac", 44100, "stereo")
    out = tmp_path / "out"
    # An earlier, complete result for the bad video must not survive as if it were this run's.
    assert main(["predict", str(bad), "--out", str(out), "--quiet"]) == 0
    import avrsp.predict

    original = avrsp.predict.iter_frames

    def fails_part_way(path, size=None):  # as a decoder meeting damaged data in the middle does
        for k, item in enumerate(original(path, size)):
            if Path(path).name == "bad.mp4" and k == 20:
                raise MediaError(f"{path}: video decoding failed after 20 frames (Invalid data)")
            yield item

    monkeypatch.setattr(avrsp.predict, "iter_frames", fails_part_way)
    capsys.readouterr()
    assert main(["predict", str(bad), str(good), "--out", str(out), "--npz", "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("avrsp: error:")]
    assert len(lines) == 2 and "bad.mp4: video decoding failed after 20 frames" in lines[0]
    assert "incomplete" in lines[0] and "Traceback" not in err
    assert "1 of 2 videos failed; the outputs of 1 of them are kept in <name>.partial/ folders" in lines[1]
    partial = out / "bad.partial"
    import re

    # Maps were written up to where the windows' look-ahead met the damage.
    done = int(re.search(r"stopped after (\d+) frame", (partial / "INCOMPLETE").read_text()).group(1))
    assert 0 < done <= 20 and len(list((partial / "maps").glob("*.png"))) <= done
    assert not (partial / "bad_saliency.mp4").exists() and not (partial / "maps.npz").exists()
    assert not list(partial.glob(".*tmp*"))                 # no half-written files behind
    assert (out / "bad" / "maps").is_dir()                  # the earlier complete run is untouched ...
    assert len(list((out / "good" / "maps").glob("*.png"))) == FRAMES   # ... and the next video still ran
    assert (out / "good" / "maps.npz").is_file() and not (out / "good.partial").exists()


# ------------------------------------------------------------------ broken and odd files

@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A visual-only avrsp_tiny file: the matrix checks the file handling, fast."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "v.safetensors"
    save_model(path, avrsp.create_model("avrsp_tiny", audio=False))
    return path


def _files(tmp: Path) -> dict[str, tuple[Path, object]]:
    """name → (file, expected): an int is the number of maps, a str the error's text."""
    good = make_video(tmp / "good.mp4", "mp4", "libx264", "yuv420p", "aac", 44100, "stereo", frames=20)
    data = good.read_bytes()
    (tmp / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp / "empty.mp4").write_bytes(b"")
    only_audio = tmp / "only_audio.mp4"
    with av.open(str(only_audio), "w") as out:
        a = out.add_stream("aac", rate=22050)
        a.layout = "mono"
        frame = av.AudioFrame.from_ndarray(signal(22050, 0.5)[None], format="fltp", layout="mono")
        frame.sample_rate = 22050
        for p in [*a.encode(frame), *a.encode(None)]:
            out.mux(p)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp / "picture.png")
    (tmp / "picture.png").rename(tmp / "picture.mp4")
    rotated = tmp / "rotated.mp4"
    with av.open(str(rotated), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 32, "yuv420p"
        vs.set_display_rotation(90)
        for _ in range(6):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.zeros((32, 64, 3), np.uint8), format="rgb24")):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    vfr = tmp / "vfr.mp4"
    with av.open(str(vfr), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.time_base = Fraction(1, 1000)
        for i, t in enumerate([0, 40, 80, 200, 240, 520, 560]):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 30, np.uint8), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return {
        "good": (good, 20),
        "truncated": (tmp / "truncated.mp4", "truncated.mp4: "),
        "zero-length": (tmp / "empty.mp4", "empty.mp4: cannot open"),
        "audio only": (only_audio, "only_audio.mp4: no video stream"),
        "image renamed .mp4": (tmp / "picture.mp4", 1),        # FFmpeg reads a PNG as a one-frame video
        "odd size": (make_video(tmp / "odd.mkv", "matroska", "ffv1", "yuv420p", frames=5, size=(71, 127)), 5),
        "rotated": (rotated, 6),
        "variable frame rate": (vfr, 7),
        "one frame": (make_video(tmp / "one.mp4", "mp4", "libx264", "yuv420p", "aac", 22050, "mono", frames=1), 1),
        "long": (make_video(tmp / "long.mkv", "matroska", "mpeg4", "yuv420p", frames=900, size=(32, 32)), 900),
    }


def test_broken_and_odd_files_give_maps_or_one_clean_line(small_model, tmp_path, capsys):
    files = _files(tmp_path)
    for name, (path, expected) in files.items():
        out = tmp_path / "out" / name.replace(" ", "_")
        code = main(["predict", str(path), "--out", str(out), "--checkpoint", str(small_model), "--quiet"])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, name
        if isinstance(expected, int):
            assert code == 0, (name, captured.err)
            maps = sorted((out / path.stem / "maps").glob("*.png"))
            assert len(maps) == expected, name
            info = probe(path)
            assert Image.open(maps[0]).size == (info.width, info.height), name    # as displayed
            if name != "long":
                assert len(list(iter_frames(out / path.stem / f"{path.stem}_saliency.mp4"))) == expected, name
        else:
            assert code == 2, name
            errors = [line for line in captured.err.splitlines() if line.startswith("avrsp: error:")]
            # One video that cannot be opened is one line, and leaves no folder of any kind.
            assert expected in errors[0] and len(errors) == 1, (name, captured.err)
            assert not out.exists() or not list(out.iterdir()), name


# ------------------------------------------------------------------ broken and odd datasets

def _faults():
    """name → (damage(stavis_root, video_name), evaluate's exit status, what its one error or warning
    line says, whether data check must fail)."""
    def frame(root, name, k=3):
        return root / "video_frames" / "SynthAV" / name / f"img_{k:05d}.jpg"

    def wav(root, name):
        return root / "video_audio" / "SynthAV" / name / f"{name}.wav"

    def emptied(path):
        path.write_bytes(b"")

    def halved(path):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def picture(path):
        Image.new("RGB", (8, 8)).save(path, format="PNG")

    def one_frame(root, name):
        for p in sorted((root / "video_frames" / "SynthAV" / name).glob("img_*.jpg"))[1:]:
            p.unlink()

    def odd_size(root, name):
        for p in (root / "video_frames" / "SynthAV" / name).glob("*.jpg"):
            Image.open(p).resize((127, 71)).save(p)
        for p in (root / "annotations" / "SynthAV" / name / "maps").glob("*.jpg"):
            Image.open(p).resize((127, 71)).save(p)

    def moved(root, name):
        (root / "video_frames" / "SynthAV" / name).rename(root / "video_frames" / "SynthAV" / "elsewhere")

    map_of = lambda root, name: root / "annotations" / "SynthAV" / name / "maps" / "eyeMap_00004.jpg"  # noqa: E731
    return {
        "zero-length frame": (lambda r, n: emptied(frame(r, n)), 2, "img_00003.jpg: cannot read image", True),
        "truncated frame": (lambda r, n: halved(frame(r, n)), 2, "img_00003.jpg: cannot read image", True),
        "picture as wav": (lambda r, n: picture(wav(r, n)), 0, ".wav: ", True),
        "zero-length wav": (lambda r, n: emptied(wav(r, n)), 0, ".wav: ", True),
        "truncated wav": (lambda r, n: halved(wav(r, n)), 0, None, False),
        "corrupt map": (lambda r, n: halved(map_of(r, n)), 0, "eyeMap_00004.jpg: cannot read map", True),
        "all-zero map": (lambda r, n: Image.new("L", (64, 48)).save(map_of(r, n)), 0, None, True),
        "one frame": (one_frame, 0, "fold list says 12 frames, 1 on disk", False),
        "odd size": (odd_size, 0, None, False),
        "missing video": (moved, 0, "skipping video", True),
    }


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory):
    from avrsp.data.synth import SynthConfig, write_dataset

    root = tmp_path_factory.mktemp("faults") / "synth"
    meta = write_dataset(root, SynthConfig(videos=6, frames=12, height=48, width=64, seed=5))
    name = next(v["name"] for v in meta["videos"] if v["test_fold"] == 1)
    import torch

    torch.manual_seed(0)
    model = root.parent / "tiny.safetensors"
    save_model(model, avrsp.create_model("avrsp_tiny"))
    return root / "stavis", name, model


@pytest.mark.parametrize("fault", list(_faults()))
def test_broken_and_odd_datasets_give_scores_or_one_clean_line(clean_dataset, tmp_path, capsys, fault):
    import shutil

    src, name, model = clean_dataset
    root = tmp_path / "stavis"
    shutil.copytree(src, root)
    damage, code, message, check_fails = _faults()[fault]
    damage(root, name)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(model), "--data", str(root), "--dataset", "SynthAV", "--split",
                 "1", "--out", str(tmp_path / "eval"), "--precision", "fp32", "--quiet"]) == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("avrsp: ")]
    if message:
        assert any(message in line for line in lines), (fault, captured.err)
    if code == 0:
        assert (tmp_path / "eval" / "report.md").is_file()
    else:
        assert len(lines) == 1 and lines[0].startswith("avrsp: error:")
    assert main(["data", "check", str(root)]) == (1 if check_fails else 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if check_fails and message:
        assert message.split(":")[0] in captured.out, (fault, captured.out)
