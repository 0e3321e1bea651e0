"""The audio front-end (avrsp.pretrain): pitches on a chromatic grid, never the palette."""

import numpy as np
import pytest
import torch

from avrsp.pretrain import GRID_BINS, GRID_LOW, chromatic_pretrain, chromatic_window, save_front_end, semitone


def _peak_hz(x, rate=22050):
    spec = np.abs(np.fft.rfft(x))
    return np.argmax(spec) * rate / len(x)


def test_a_window_is_labelled_with_the_semitones_that_sound_in_it():
    rng = np.random.default_rng(0)
    seen = {"tone": 0, "silent": 0}
    for _ in range(200):
        x, label = chromatic_window(rng, 8, 15.0, 17640)
        assert x.shape == (17640,) and label.shape == (GRID_BINS,) and set(np.unique(label)) <= {0.0, 1.0}
        assert np.abs(x).max() <= 256  # SoundNet's scale, as clip_audio cuts the model's windows
        if np.abs(x).max() < 10:
            assert not label.any()  # the noise floor alone names nothing
            seen["silent"] += 1
        if label.sum() == 1:  # one sounding semitone: the spectrum peaks there (or an octave up)
            hz = _peak_hz(x)
            assert min(abs(semitone(hz) - int(label.argmax())), abs(semitone(hz / 2) - int(label.argmax()))) <= 1
            seen["tone"] += 1
    assert seen["tone"] > 30 and seen["silent"] > 5
    assert semitone(GRID_LOW) == 0 and semitone(GRID_LOW * 2) == 12


def test_a_short_pretraining_names_pitches_far_above_chance(tmp_path):
    # Sixty steps already lift the accuracy several times above the untrained network's,
    # on the same held-out windows: about 400 lone tones, since with a quarter of that
    # one CPU's kernels put the trained network within one window of the bar.
    state, measured = chromatic_pretrain("avrsp_tiny", steps=60, held_out=1024, log=lambda _: None)
    untrained, before = chromatic_pretrain("avrsp_tiny", steps=0, held_out=1024, log=lambda _: None)
    assert measured["accuracy"] > max(4 / GRID_BINS, 2.5 * before["accuracy"]), (measured, before)
    # The file is what a training config's init.soundnet loads into the model's SoundNet.
    from avrsp import get_config
    from avrsp.train import InitConfig, TrainConfig, build_model

    path = tmp_path / "front_end.safetensors"
    save_front_end(path, state)
    model = build_model(TrainConfig(model=get_config("avrsp_tiny"), init=InitConfig(soundnet=str(path))),
                        log=lambda _: None)
    assert all(torch.equal(model.audio_net.state_dict()[k], v) for k, v in state.items())
    assert not all(torch.equal(untrained[k], v) for k, v in state.items())


def test_pretraining_needs_an_audio_branch():
    from avrsp.config import ConfigError

    with pytest.raises(ConfigError, match="no audio branch"):
        chromatic_pretrain("avrsp_v", steps=1)
