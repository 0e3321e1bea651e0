import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import avrsp
from avrsp.checkpoint import save_model
from avrsp.cli import main
from avrsp.data.synth import SynthConfig, generate_video, write_mp4
from avrsp.inference import predict_frames
from avrsp.media import MediaError, MediaWarning, iter_frames, probe, read_audio
from avrsp.predict import Predictor, default_checkpoint, demo_video

from test_media import coloured_frames, tone, write_video

# A seed no shipped asset was trained on; rendered at the size of the built-in model's training data.
CFG = SynthConfig(videos=5, frames=40, height=144, width=256, seed=99)


@pytest.fixture(scope="module")
def relevant_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    out = []
    for i in range(CFG.videos):
        v = generate_video(CFG, i, "relevant")
        path = root / f"relevant_{i}.mp4"
        write_mp4(path, v, CFG)
        out.append((path, v))
    return out


def test_shipped_assets_load():
    model = avrsp.checkpoint.load_model(default_checkpoint())
    assert model.config.name == "avrsp_tiny" and model.config.audio
    info = probe(demo_video())
    assert info.frames >= 64 and info.audio_rate == 22050
    assert default_checkpoint().stat().st_size < 8 * 2**20  # a few MB in the repository


def _hits(videos, precision: str = "fp32") -> tuple[float, float]:
    """The fractions of frames whose map peaks on the sounding disc, with the sound and
    with silence, over ``videos`` ((path, SynthVideo) pairs)."""
    predictor = Predictor(device="cpu", precision=precision)
    hits = {True: 0, False: 0}
    total = 0
    for path, video in videos:
        for with_audio in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MediaWarning)
                maps = list(predictor.predict_video(path, audio=with_audio))
            assert len(maps) == video.maps.shape[0] and maps[0].shape == video.maps.shape[1:]
            hits[with_audio] += sum(video.peak_on_sounding_disc(k, m) for k, m in enumerate(maps))
            total += len(maps) if with_audio else 0
    return hits[True] / total, hits[False] / total


@pytest.fixture(scope="module")
def sounding_disc_hits(relevant_videos):
    """Hits on the 5 unseen relevant videos of seed 99 (as measured in docs/default_model.md)."""
    return _hits(relevant_videos)


def test_default_model_looks_at_the_sounding_disc(sounding_disc_hits):
    """The built-in model was trained on synthetic data where viewers look at the disc
    whose pitch sounds. On unseen videos, its map must peak on that disc in most frames,
    and *because of the sound*: clearly less often once the sound is removed (disc speed
    alone can correlate with which disc sounds in a few videos)."""
    with_sound, silent = sounding_disc_hits
    assert with_sound > 0.5, f"peak on the sounding disc in {with_sound:.2f} of frames"
    assert with_sound - silent >= 0.15, f"with sound {with_sound:.2f}, with silence {silent:.2f}"


#: The paired bar of issue 38, on 48 relevant videos (8 seeds × 6) that no model here was
#: trained or tuned on, fixed before the built-in model was first scored on them: one seed's
#: 5 or 6 videos move a model's hits by ± 4–9 points, too much to judge from a few videos.
BAR_SEEDS, BAR_VIDEOS = range(6000, 6008), 6


def test_default_model_gains_from_the_sound(tmp_path):
    """With the sound, the map peaks on the sounding disc in ≥ 65 % of the frames of the 48
    videos, and in ≥ 30 points more frames than with silence (paired: the same frames).
    Chance is 1/3; a bar on silence alone would pass a model whose peak is on no disc."""
    videos = []
    for seed in BAR_SEEDS:
        cfg = SynthConfig(videos=BAR_VIDEOS, frames=40, height=144, width=256, seed=seed)
        for i in range(BAR_VIDEOS):
            v = generate_video(cfg, i, "relevant")
            write_mp4(tmp_path / f"{seed}_{i}.mp4", v, cfg)
            videos.append((tmp_path / f"{seed}_{i}.mp4", v))
    with_sound, silent = _hits(videos, precision="auto")
    assert with_sound >= 0.65, f"with sound {with_sound:.3f}"
    assert with_sound - silent >= 0.30, f"with sound {with_sound:.3f}, with silence {silent:.3f}"


@pytest.mark.parametrize("register", ["tones", "low"])
def test_default_model_ignores_background_music(tmp_path, register):
    """On unseen music videos, whose viewers follow the visual cue, the built-in model's
    maps are the same with the music as with silence (CC ≥ 0.95), for music written in
    the discs' own register (no frequency band tells it from a disc's tone) and below it.
    Off-screen tones are not discounted (docs/default_model.md), so no test claims it."""
    cfg = dataclasses.replace(CFG, music_register=register)
    predictor = Predictor(device="cpu", precision="auto")
    ccs = []
    for i in range(cfg.videos):
        video = generate_video(cfg, i, "music")
        path = tmp_path / f"music_{i}.mp4"
        write_mp4(path, video, cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MediaWarning)
            music, silence = list(predictor.predict_video(path)), list(predictor.predict_video(path, audio=False))
        ccs += [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(music, silence)]
    assert np.mean(ccs) >= 0.95, f"maps with the music against with silence: CC {np.mean(ccs):.3f}"


def test_predict_cli_writes_maps_overlay_and_npz(relevant_videos, tmp_path, capsys):
    path, _ = relevant_videos[0]
    out = tmp_path / "out"
    assert main(["predict", str(path), "--out", str(out), "--npz", "--side-by-side", "--quiet"]) == 0
    folder = out / path.stem
    pngs = sorted((folder / "maps").glob("*.png"))
    assert len(pngs) == CFG.frames and Image.open(pngs[0]).size == (CFG.width, CFG.height)
    assert "built-in avrsp_tiny" in capsys.readouterr().err  # says which model it used
    video = folder / f"{path.stem}_saliency.mp4"
    info = probe(video)
    assert (info.width, info.height, info.audio_rate) == (2 * CFG.width, CFG.height, 22050)
    assert len(list(iter_frames(video))) == CFG.frames
    original, muxed = read_audio(path), read_audio(video)
    n = min(len(original), len(muxed), 22050)
    assert np.corrcoef(original[2000:n], muxed[2000:n])[0, 1] > 0.9  # the original sound, in sync
    # Frame k's files are numbered k from 1 (%05d), in the PNGs as in the .npz: the first
    # frame's map is 00001.png and the last frame's is N.png.
    assert [p.name for p in pngs] == [f"{k:05d}.png" for k in range(1, CFG.frames + 1)]
    archive = np.load(folder / "maps.npz")
    assert sorted(archive.files) == [f"frame_{k:05d}" for k in range(1, CFG.frames + 1)]
    for k in (1, 6, CFG.frames):
        # Each PNG is its float map scaled to the map's maximum and rounded to 8 bits: within
        # half a grey level, plus float32 rounding of the scaling.
        m = archive[f"frame_{k:05d}"]
        png = np.asarray(Image.open(folder / "maps" / f"{k:05d}.png"), dtype=np.float64)
        assert png.max() == 255
        np.testing.assert_allclose(png, m / m.max() * 255, atol=0.5 + 1e-3, err_msg=str(k))


def test_scoring_the_pngs_predict_writes_gives_the_scores_of_its_float_maps(tmp_path, capsys):
    """`avrsp score` on `avrsp predict`'s PNGs against the same protocol on the float maps
    of its --npz, frame by frame, without post-processing (its blur would hide the
    rounding). Every metric ignores a map's scale, so what is left is 8-bit rounding of a
    map scaled to its maximum: at most half a level in 255 of the frame's peak.

    - CC correlates the whole map: the rounding noise, a fraction of a level, is a tiny
      share of the map's spread, so 2e-3 on its [−1, 1] scale.
    - SIM, NSS, AUC-J and sAUC also see the background, and on these maps most of the
      frame lies within a level or two of zero: its pixels round to the same few levels,
      so SIM's min-max normalisation shifts and the ranks among them become ties that
      AUC-J's jitter breaks at random. 1e-2 for SIM and sAUC (0.1 thresholds), 2.5e-2 for
      AUC-J, on their [0, 1] scales; 2e-2 for NSS, whose z-scores reach several units.
    - KL is not compared: a pixel that rounds to 0 where the ground truth is not costs its
      ground-truth mass times log(1/eps) ≈ 36, so the KL of any 8-bit file of a map whose
      background lies below half a level is far above the float map's (docs/predict.md).
    A map at the model's own scale (× 255) keeps as few levels as its peak reaches and
    fails these bounds on faint frames."""
    from avrsp.data.datasets import stavis_videos
    from avrsp.data.synth import write_dataset
    from avrsp.evaluate import score_video
    from test_evaluation_exact import records

    cfg = SynthConfig(videos=3, frames=12, height=72, width=128, seed=17)
    write_dataset(tmp_path / "synth", cfg)
    videos = stavis_videos(tmp_path / "synth" / "stavis", "SynthAV", "test", 1)
    mp4s = [str(tmp_path / "synth" / "videos" / f"{v.name}.mp4") for v in videos]
    assert main(["predict", *mp4s, "--out", str(tmp_path / "pred"), "--npz", "--no-video", "--precision", "fp32",
                 "--quiet"]) == 0
    (tmp_path / "pngs").mkdir()
    for v in videos:   # the layout `score` reads: PRED_DIR/<video>/<…N>.png
        (tmp_path / "pred" / v.name / "maps").rename(tmp_path / "pngs" / v.name)
    assert main(["score", str(tmp_path / "pngs"), "--data", str(tmp_path / "synth" / "stavis"), "--dataset", "SynthAV",
                 "--split", "1", "--no-postprocess", "--out", str(tmp_path / "score"), "--quiet"]) == 0
    capsys.readouterr()
    tolerance = {"cc": 2e-3, "sim": 1e-2, "sauc": 1e-2, "auc_j": 2.5e-2, "nss": 2e-2}
    scored = records(tmp_path / "score")
    for v in videos:
        floats = np.load(tmp_path / "pred" / v.name / "maps.npz")
        want = score_video(v, lambda k: floats[f"frame_{k + 1:05d}"].astype(np.float64), postprocess=False)
        for m, atol in tolerance.items():
            got = [np.nan if x is None else x for x in scored[v.name]["per_frame"][m]]
            np.testing.assert_allclose(got, want["per_frame"][m], rtol=0, atol=atol, err_msg=f"{v.name} {m}")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predict_clip_matches_the_video_path(relevant_videos, precision):
    """Both paths build the model's input alike, so they agree exactly in either precision."""
    path, _ = relevant_videos[1]
    predictor = Predictor(device="cpu", precision=precision)
    cfg = predictor.config
    T, size = cfg.frames, (cfg.height, cfg.width)
    fps, audio = probe(path).fps, read_audio(path)
    # One stream runs in this thread, with predict_clip's thread count: the same kernels,
    # batch (1) and threads, so the same maps; 1e-5 on maps in (0, 1) is below a bf16 step.
    raw = dict(predict_frames(predictor.model, (rgb for rgb, _ in iter_frames(path, size=size)), None, fps, audio,
                              streams=1))
    k = 20
    start, end = round((k - T + 1 - 0.5) / fps * 22050), round((k + 0.5) / fps * 22050)
    small = np.stack([rgb for rgb, _ in iter_frames(path, size=size)])[k - T + 1:k + 1]
    # The same frames and the clip's own waveform: exactly the video path's window.
    np.testing.assert_allclose(predictor.predict_clip(small, audio[start:end]), raw[k], atol=1e-5)
    # Full-resolution frames are resized like decoded video; the map comes back at their size.
    full = np.stack([rgb for rgb, _ in iter_frames(path)])[k - T + 1:k + 1]
    big = predictor.predict_clip(full, audio[start:end])
    assert big.shape == (CFG.height, CFG.width)
    video_map = list(predictor.predict_video(path))[k]
    # Decoded full size and resized, against decoded at the model's size: nearly the same
    # pixels, so nearly the same map at the video's size.
    assert np.corrcoef(big.ravel(), video_map.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("every", [1, 4])
def test_videos_in_one_pipeline_get_the_maps_each_gets_alone(relevant_videos, tmp_path, every):
    """predict_videos runs the videos through one pipeline; that must change no map, keep a
    bad file's error to that file, and still say once, at its turn, that a video has no sound."""
    (a, _), (b, _) = relevant_videos[0], relevant_videos[1]
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    silent = write_video(tmp_path / "silent.mp4", coloured_frames(12, 64, 96))
    predictor = Predictor(device="cpu", precision="fp32", every=every)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MediaWarning)
        alone = {path: list(predictor.predict_video(path)) for path in (a, silent, b)}
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path, maps in predictor.predict_videos([a, bad, silent, b]):
            if path == bad:
                with pytest.raises(MediaError, match="bad.mp4: cannot open"):
                    next(maps)
            else:
                got = list(maps)
                # The same batches; but a batch may run on either stream, and with an odd number
                # of CPU threads the two streams hold different counts: float32 sums in another
                # order, on maps in (0, 1).
                assert len(got) == len(alone[path]) and all(np.allclose(x, y, rtol=0, atol=2e-5)
                                                            for x, y in zip(got, alone[path]))
            seen.append((path, [str(w.message) for w in caught if w.category is MediaWarning]))
    assert [path for path, _ in seen] == [a, bad, silent, b]
    assert [len(said) for _, said in seen] == [0, 0, 1, 1] and "silent.mp4: no audio track" in seen[2][1][0]


def test_the_next_video_opens_while_this_ones_windows_run(relevant_videos, tmp_path, monkeypatch):
    """The first video's forward passes wait (up to 20 s each) for the second to be opened.
    Its 3 batches fit in the pipeline's queues, so a pipeline opens the second video while
    they wait; one video at a time would open it only after they had run."""
    import threading

    import avrsp.predict

    a = write_video(tmp_path / "a.mp4", coloured_frames(12, 64, 96), audio=tone(440, 0.5, 22050),
                    audio_rate=22050, layout="mono")
    b = relevant_videos[0][0]
    predictor = Predictor(device="cpu", precision="fp32", batch=4)
    opened_b = threading.Event()
    original_probe, original_forward = avrsp.predict.probe, predictor.model.forward

    def probe(path):
        if path == b:
            opened_b.set()
        return original_probe(path)

    waited = []

    def forward(*args, **kwargs):
        waited.append(opened_b.wait(20))
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(avrsp.predict, "probe", probe)
    monkeypatch.setattr(predictor.model, "forward", forward)
    videos = predictor.predict_videos([a, b])
    path, maps = next(videos)
    assert path == a and len(list(maps)) == 12 and len(waited) >= 3 and all(waited)   # a's 3, maybe b's first
    assert [len(list(maps)) for _, maps in videos] == [CFG.frames]


def test_heatmap_colours_are_matplotlibs_jet_and_the_overlay_blends_them():
    from matplotlib import colormaps

    from avrsp.media import colormap, overlay

    def jet(m):
        return (colormaps["jet"](np.clip(m, 0, 1))[..., :3] * 255).astype(np.uint8)

    # Both sides of [0, 1] and the table's edges; 2-D, as predict passes maps.
    m = np.concatenate([np.linspace(-0.2, 1.2, 997), [0, 1 / 256, 0.5, 255 / 256, 1]])
    m = m.astype(np.float32).reshape(-1, 2)
    assert np.array_equal(colormap(m), jet(m))
    frame = np.random.default_rng(0).integers(0, 256, (*m.shape, 3), dtype=np.uint8)
    sal = np.clip(m, 0, None) * 3
    scaled = sal / sal.max()  # each map is shown against its own maximum
    a = 0.6 * scaled[..., None]
    blend = (frame * (1 - a) + jet(scaled) * a).astype(np.uint8)
    # float32 against float64: one level where the two round a .5 apart.
    assert np.abs(overlay(frame, sal).astype(int) - blend).max() <= 1


def test_stream_counts_below_one_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="streams must be ≥ 1"):
        Predictor(device="cpu", streams=0)
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "o"), "--streams", "0"])
    assert "--streams: '0': expected a whole number ≥ 1" in capsys.readouterr().err
    assert Predictor(device="cpu", streams=1).streams == 1


def test_one_runtime_resolved_once(monkeypatch):
    """A Runtime's auto and None become this machine's values once, and a Predictor runs
    with exactly the runtime it is given (or the same fields as keywords), never both."""
    from avrsp import Runtime

    for forced in ("fp32", "bf16"):
        monkeypatch.setenv("AVRSP_AUTO_PRECISION", forced)
        rt = Runtime(device="cpu").resolve()
        assert (rt.device, rt.precision, rt.batch, rt.streams) == ("cpu", forced, 4, None)
        assert rt.resolve() == rt  # resolving twice changes nothing
    assert Runtime("cpu", "bf16", batch=3).resolve().precision == "bf16"  # explicit: never overridden
    for bad, message in ((dict(batch=0), "batch must be ≥ 1"), (dict(streams=0), "streams must be ≥ 1"),
                         (dict(precision="fp16"), "precision must be one of auto, fp32, bf16")):
        with pytest.raises(ValueError, match=message):
            Runtime(**bad)
    p = Predictor(runtime=Runtime("cpu", "fp32", batch=3, streams=1))
    assert (p.device, p.precision, p.batch, p.streams) == ("cpu", "fp32", 3, 1)
    assert next(p.model.parameters()).dtype == torch.float32  # prepared as the runtime says
    assert Predictor(device="cpu", precision="bf16", batch=2).runtime == Runtime("cpu", "bf16", 2).resolve()
    with pytest.raises(ValueError, match="not both"):
        Predictor(device="cpu", runtime=Runtime("cpu"))


def test_no_audio_folder_input_and_visual_only_models(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "silent.mp4", coloured_frames(12, 64, 96))
    write_video(tmp_path / "in" / "other.mp4", coloured_frames(6, 64, 96), audio=np.zeros((1, 4000), np.float32),
                audio_rate=22050, layout="mono")
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("no audio track") == 1 and "avrsp: warning: " in err and "silent.mp4" in err
    assert len(list((tmp_path / "out" / "silent" / "maps").glob("*.png"))) == 12
    assert len(list((tmp_path / "out" / "other" / "maps").glob("*.png"))) == 6
    # A visual-only model file ignores the sound entirely.
    torch.manual_seed(0)
    save_model(tmp_path / "v.safetensors", avrsp.create_model("avrsp_tiny", audio=False))
    p = Predictor(tmp_path / "v.safetensors", device="cpu", streams=1)  # one stream: the same arithmetic twice
    noisy = write_video(tmp_path / "noisy.mp4", coloured_frames(10, 64, 96),
                        audio=np.random.default_rng(0).uniform(-0.5, 0.5, (1, 8000)).astype(np.float32),
                        audio_rate=22050, layout="mono")
    a = list(p.predict_video(noisy))
    b = list(p.predict_video(noisy, audio=False))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))   # bit for bit: the sound reaches nothing


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert main(["predict", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert main(["predict", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert main(["predict", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "o"), "--checkpoint",
                 str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.mp4: cannot open" in err and "missing.mp4: no such file" in err and "Traceback" not in err


def test_streaming_memory_does_not_depend_on_length():
    # The frame buffer holds at most 2T + batch frames, whatever the stream's length.
    model = avrsp.create_model("avrsp_tiny").eval()
    held = []

    def frames(n):
        for _ in range(n):
            yield np.zeros((64, 96, 3), np.uint8)

    import avrsp.inference as inf

    original = inf._FrameBuffer.get

    def spy(self, indices):
        held.append(len(self._frames))
        return original(self, indices)

    inf._FrameBuffer.get = spy
    try:
        for n in (20, 200):
            held.clear()
            assert sum(1 for _ in predict_frames(model, frames(n), None, 15.0, None, batch=4)) == n
            assert max(held) <= 2 * model.config.frames + 4
    finally:
        inf._FrameBuffer.get = original


def test_figures(relevant_videos, tmp_path):
    path, _ = relevant_videos[0]
    music = generate_video(CFG, 10, "music")
    music_path = tmp_path / "music.mp4"
    write_mp4(music_path, music, CFG)
    out = tmp_path / "fig6.png"
    assert main(["visualize", "relevance", str(path), "--frame", "20", "--other-audio", str(music_path),
                 "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 300
    from avrsp.visualize import clip_relevance

    model = avrsp.checkpoint.load_model(default_checkpoint())
    own = clip_relevance(model, path, 19)
    other = clip_relevance(model, path, 19, music_path)
    assert not np.allclose(own[2], other[2])  # Ret_A depends on the sound (the same sound: the same computation)


def test_evaluate_figure_and_visualize_grid(tmp_path, capsys):
    from avrsp.data.synth import write_dataset

    data = tmp_path / "synth"
    write_dataset(data, SynthConfig(videos=3, frames=12, height=64, width=96, seed=4))
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(default_checkpoint()), "--data", str(data / "stavis"),
                 "--dataset", "SynthAV", "--split", "1", "--out", str(out), "--figure", "--save-maps",
                 "--quiet"]) == 0
    assert (out / "figure.png").is_file() and "figure.png" in (out / "report.md").read_text()
    # --save-maps: named as the ground truth they match, 1-based, each scaled to its maximum.
    name = next(v["name"] for v in json.loads((data / "synth.json").read_text())["videos"] if v["test_fold"] == 1)
    saved = sorted((out / "maps" / "SynthAV" / name).iterdir())
    assert [p.name for p in saved] == [f"eyeMap_{k:05d}.png" for k in range(1, 13)]
    assert all(np.asarray(Image.open(p)).max() == 255 for p in saved)
    # Without --checkpoint: the built-in model, as predict does, and it says so.
    capsys.readouterr()
    assert main(["evaluate", "--data", str(data / "stavis"), "--dataset", "SynthAV", "--split", "1",
                 "--out", str(tmp_path / "eval_default"), "--quiet"]) == 0
    assert "model: the built-in avrsp_tiny" in capsys.readouterr().err
    assert (tmp_path / "eval_default" / "per_video.csv").read_text() == (out / "per_video.csv").read_text()
    fig = tmp_path / "fig5.png"
    assert main(["visualize", "grid", "--data", str(data / "stavis"), "--dataset", "SynthAV", "--video", name,
                 "--frames", "3", "9", "--pred", f"saved={out / 'maps'}", "--checkpoint", str(default_checkpoint()),
                 "--out", str(fig)]) == 0
    w, h = Image.open(fig).size
    assert w > h > 100


def test_every_below_one_is_refused_in_one_line_before_any_output(tmp_path, capsys):
    """`--every 0` would divide the video into no windows; it is refused by the one check
    (the Predictor's), as one CLI line naming the option, and nothing is written."""
    rc = main(["predict", str(demo_video()), "--every", "0", "--out", str(tmp_path / "out")])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines() == ["avrsp: error: --every 0: must be 1 (every frame) or more"]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="--every -2"):
        Predictor(None, device="cpu", every=-2)


def test_an_extra_output_gets_every_frame_and_is_moved_in_with_the_maps(tmp_path):
    """`predict_to_folder(extra=...)` (what serve adds, docs/predict.md): each frame, in
    order, with its map and decoded frame at the video's size, then one close, inside the
    folder that becomes `out`."""
    from avrsp.predict import FrameOutput, predict_to_folder

    seen, closed = [], []

    class Record(FrameOutput):
        needs_frame = True

        def __init__(self, path):
            self.path = path

        def add(self, k, m, frame, ret):
            seen.append((k, m.shape, frame.shape))

        def close(self):
            closed.append(self.path.parent.name)
            self.path.write_text(str(len(seen)))

    video = demo_video()
    info = probe(video)
    r = predict_to_folder(Predictor(None, device="cpu", precision="fp32"), video, tmp_path / "out", progress=False,
                          overlay_video=False, extra=lambda folder, _: [Record(folder / "n.txt")])
    assert r.frames == info.frames and [k for k, _, _ in seen] == list(range(r.frames))
    assert {(s, f) for _, s, f in seen} == {((info.height, info.width), (info.height, info.width, 3))}
    assert closed == ["out.partial"] and (tmp_path / "out" / "n.txt").read_text() == str(r.frames)
    assert len(list((tmp_path / "out" / "maps").glob("*.png"))) == r.frames
