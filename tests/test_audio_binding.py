"""benchmarks/audio_binding.py: the experiment behind docs/default_model.md's diagnosis."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def binding(benchmark_script):
    return benchmark_script("audio_binding")


def test_oracle_clips_carry_the_sounding_colour_and_the_hit_rule(binding):
    from avrsp.data.synth import SynthConfig, generate_video

    cfg = SynthConfig(videos=3, frames=20, height=72, width=128, seed=3)
    video = generate_video(cfg, 0, "relevant")
    clips = binding.Clips(video, (64, 96), 8, oracle=True, fps=cfg.fps)
    k = 12
    rgb, audio, target = clips.clip(k)
    assert rgb.shape == (3, 8, 64, 96) and target.shape == (64, 96)
    assert np.flatnonzero(audio.numpy()).tolist() == [video.colours[video.sounding[k]]]
    assert not clips.clip(k, sound=False)[1].any()
    # The hit rule, at the model's size: a peak on the sounding disc counts, one on another disc does not.
    pos = video.positions[k] * clips.scale
    for j in range(cfg.objects):
        m = np.zeros((64, 96), np.float32)
        m[int(round(pos[j, 1])), int(round(pos[j, 0]))] = 1
        assert clips.on_sounding_disc(k, m) == (j == video.sounding[k])


def test_a_short_run_records_sound_and_silence_scores(binding, tmp_path):
    args = binding.parser().parse_args(["--videos", "2", "--video-frames", "10", "--val", "1", "--steps", "2",
                                        "--batch", "2", "--eval-every", "1", "--save", str(tmp_path / "m.pt"),
                                        "--json", str(tmp_path / "r.json")])
    result = binding.run(args, log=lambda _: None)
    assert [r["step"] for r in result["rows"]] == [1, 2]
    assert all(np.isfinite(r["loss"]) and 0 <= r["hit_sound"] <= 1 and 0 <= r["hit_silence"] <= 1
               for r in result["rows"])
    locality = result["locality"]
    assert locality["even_share"] == pytest.approx(1 / 6)  # X⁰ is 2×3 cells at 64×96
    assert 0 < locality["own_cell_share"] < 1
    # A saved run restarts from its weights, including with the oracle in place of SoundNet.
    again = binding.parser().parse_args(["--videos", "2", "--video-frames", "10", "--val", "1", "--steps", "1",
                                         "--batch", "2", "--oracle", "--init", str(tmp_path / "m.pt")])
    logs = []
    binding.run(again, log=logs.append)
    assert any("tensors new" in line for line in logs)  # the oracle's embedding is the new part


def test_the_pitch_probe_learns_to_name_the_sounding_colour(binding, tmp_path):
    import torch
    from safetensors.torch import load_file

    probe = tmp_path / "soundnet.safetensors"
    args = binding.parser().parse_args(["--pitch-probe", "--videos", "12", "--steps", "150", "--save", str(probe)])
    assert binding.pitch_probe(args, log=lambda _: None) > 0.5  # chance is 1/6
    # Its SoundNet can start a run's audio branch.
    run = binding.parser().parse_args(["--videos", "1", "--video-frames", "10", "--val", "1", "--steps", "0",
                                       "--init-soundnet", str(probe), "--save", str(tmp_path / "m.pt")])
    binding.run(run, log=lambda _: None)
    saved, trained = torch.load(tmp_path / "m.pt"), load_file(probe)
    assert all(torch.equal(saved[f"audio_net.{k}"], v) for k, v in trained.items())
    # And `avrsp train`'s init.soundnet loads the same file into the built-in model's shape.
    from avrsp import get_config
    from avrsp.train import InitConfig, TrainConfig, build_model

    model = build_model(TrainConfig(model=get_config("avrsp_tiny"), init=InitConfig(soundnet=str(probe))),
                        log=lambda _: None)
    assert all(torch.equal(model.audio_net.state_dict()[k], v) for k, v in trained.items())


def test_score_applies_the_test_rule_to_each_frame_with_and_without_sound(binding):
    """``--score`` must count, per frame, whether the map peaks on the sounding disc,
    separately for the sound and for silence. A stand-in predictor that looks at the
    sounding disc only when it hears the sound must score 1 and 0."""
    from avrsp.data.synth import SynthConfig, generate_video

    args = binding.parser().parse_args(["--score", "stand-in", "--val", "2", "--generate", "36x64",
                                        "--seeds", "99-100"])
    seen = set()

    class StandIn:
        def predict_video(self, path, audio=True):
            _, i, seed = path.stem.split("_")
            seed = int(seed.removeprefix("seed"))
            seen.add(seed)
            cfg = SynthConfig(videos=2, frames=binding.TEST_FRAMES, height=36, width=64, seed=seed)
            video = generate_video(cfg, int(i), "relevant")
            assert path.is_file()
            for k in range(cfg.frames):
                s = video.sounding[k]
                target = s if audio else next(j for j in range(cfg.objects) if j != s)
                m = np.zeros((cfg.height, cfg.width), np.float32)
                x, y = np.clip(np.round(video.positions[k, target]).astype(int), 0, [cfg.width - 1, cfg.height - 1])
                m[y, x] = 1
                yield m

    lines = []
    sound, silence = binding.score(args, log=lines.append, predictor=StandIn())
    assert sound > 0.9 and silence < 0.1  # not exactly 1 / 0: discs can overlap or sit at the border
    assert seen == {99, 100} and len(lines) == 3 and "2 seeds" in lines[-1]
    assert binding.seed_list("200,201,202") == [200, 201, 202] == binding.seed_list("200-202")


def test_visual_cue_rate_counts_frames_whose_fastest_disc_sounds(binding):
    from types import SimpleNamespace

    t = np.arange(5.0)[:, None]
    positions = np.stack([np.hstack([t * 1, t * 0]), np.hstack([t * 3, t * 0]), np.zeros((5, 2))], 1)  # disc 1 fastest
    assert binding.visual_cue_rate(SimpleNamespace(positions=positions, sounding=[1] * 5)) == 0.8  # frame 0: no motion
    assert binding.visual_cue_rate(SimpleNamespace(positions=positions, sounding=[0] * 5)) == 0.2


def test_separability_is_high_for_pitch_features_and_chance_for_none(binding):
    """``--diagnose``'s read-out of SoundNet: features that carry the pitch (a magnitude
    spectrum) name the sounding colour; features that carry nothing do not."""
    import torch

    class Spectrum(torch.nn.Module):
        def forward(self, x):  # B×1×L → B×C×1
            return torch.fft.rfft(x[:, 0]).abs()[:, :2048].reshape(len(x), 64, 32).sum(-1)[..., None]

    class Nothing(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 8, 1)

    assert binding.soundnet_separability(Spectrum(), videos=40) > 0.9
    assert binding.soundnet_separability(Nothing(), videos=40) < 0.4


def test_hits_by_window_splits_frames_by_their_window(binding):
    """A stand-in that looks at the sounding disc only when it hears the sound and the
    window has one sounding disc scores 1 there and 0 everywhere else; every frame is
    counted once per sound setting."""
    from avrsp.data.synth import SynthConfig, generate_video

    T, seeds, videos = 8, (200,), 2

    class StandIn:
        class config:
            frames = T

        def predict_video(self, path, audio=True):
            _, i, seed = path.stem.split("_")  # unseen_<i>_seed<seed>
            cfg = SynthConfig(videos=videos, frames=binding.TEST_FRAMES, height=36, width=64,
                              seed=int(seed.removeprefix("seed")))
            video = generate_video(cfg, int(i), "relevant")
            for k in range(cfg.frames):
                s = video.sounding[k]
                one = len(set(video.sounding[max(0, k - T + 1):k + 1])) == 1
                target = s if audio and one else next(j for j in range(cfg.objects) if j != s)
                m = np.zeros((cfg.height, cfg.width), np.float32)
                x, y = np.clip(np.round(video.positions[k, target]).astype(int), 0, [cfg.width - 1, cfg.height - 1])
                m[y, x] = 1
                yield m

    hits = binding.hits_by_window(StandIn(), seeds=seeds, videos=videos, generate=(36, 64))
    for sound in (True, False):
        assert hits[(True, sound)][1] + hits[(False, sound)][1] == len(seeds) * videos * binding.TEST_FRAMES
    assert hits[(False, True)][1] > 0  # the videos change their sounding disc
    one_sound = hits[(True, True)]
    assert one_sound[0] / one_sound[1] > 0.9  # not exactly 1: discs can overlap or sit at the border
    assert max(hits[key][0] / hits[key][1] for key in [(False, True), (True, False), (False, False)]) < 0.1


def test_claims_scores_a_model_file_by_the_study_measures(binding, tmp_path):
    """``--claims``: every unseen video of both kinds goes through the study's scoring;
    the gain is the CC with the sound minus with silence; a model without audio is refused."""
    import avrsp
    from avrsp.checkpoint import save_model

    save_model(tmp_path / "av.safetensors", avrsp.create_model("avrsp_tiny", height=64, width=96))
    args = binding.parser().parse_args(["--claims", str(tmp_path / "av.safetensors"), "--val", "2",
                                        "--generate", "64x96", "--seeds", "7"])
    out = binding.claims(args, log=lambda _: None)
    assert out["videos"] == 4 and out["seed"] == 7 and len(out["ret"]) == 4
    assert {r["kind"] for r in out["ret"]} == {"relevant", "music"}
    assert out["gain"] == out["relevant_cc_sound"] - out["relevant_cc_silence"]
    assert all(-1 <= v <= 1 for v in out["music_agreement"].values()) and 0 <= out["ret_a_auc"] <= 1
    save_model(tmp_path / "v.safetensors", avrsp.create_model("avrsp_tiny", height=64, width=96, audio=False))
    args.claims = str(tmp_path / "v.safetensors")
    with pytest.raises(SystemExit, match="without audio"):
        binding.claims(args, log=lambda _: None)
