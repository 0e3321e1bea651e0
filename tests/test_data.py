import json
import shutil
import warnings

import av
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat, wavfile
from scipy.signal import resample_poly

from avrsp.cli import main
from avrsp.data.clips import ClipDataset, to_model_frames
from avrsp.data.datasets import (AnnotatedVideo, DataError, DataNote, DataWarning, ImageFrames, dhf1k_layout,
                                 dhf1k_videos, load_split, read_fixations, stavis_videos)
from avrsp.data.synth import PALETTE, SynthConfig, generate_video, video_kinds, write_dataset
from avrsp.media import MediaWarning, iter_frames, read_audio

CFG = SynthConfig(videos=6, frames=24, height=72, width=128, fps=15.0, seed=3)
SIZE = (64, 96)
T = 8


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    meta = write_dataset(root, CFG)
    return root, {v["name"]: v for v in meta["videos"]}


@pytest.fixture
def stavis_copy(synth, tmp_path):
    root, meta = synth
    shutil.copytree(root / "stavis", tmp_path / "stavis")
    return tmp_path / "stavis", meta


def all_videos(root):
    return [v for fold in (1,) for part in ("train", "test") for v in stavis_videos(root, "SynthAV", part, fold)]


def peak_hz(x, rate=22050):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


def scaled(xy, shape, size):
    return xy[0] * size[1] / shape[1], xy[1] * size[0] / shape[0]


# ------------------------------------------------------------------ the generator

def test_generation_is_seeded_and_kinds_differ():
    a, b = generate_video(CFG, 0, "relevant"), generate_video(CFG, 0, "relevant")
    # The same seed through the same numpy code on one machine: the same values, bit for bit.
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    other = generate_video(SynthConfig(**{**CFG.__dict__, "seed": 4}), 0, "relevant")
    assert not np.array_equal(a.frames, other.frames)
    music = generate_video(CFG, 1, "music")
    assert music.sounding == [None] * CFG.frames and a.sounding.count(None) == 0
    assert music.tones == [None] * CFG.frames and a.tones == [a.colours[d] for d in a.sounding]
    # Relevant audio sounds at the discs' pitches; music in the low register stays below
    # every disc pitch, in the tones' register (the default) among them. (Pitches: FFT bins
    # of 5.5 Hz on 4000 samples, palette pitches 160 Hz or more apart.)
    assert abs(peak_hz(a.audio[:4000]) - PALETTE[a.colours[a.sounding[0]]][1]) < 10
    low = generate_video(SynthConfig(**{**CFG.__dict__, "music_register": "low"}), 1, "music")
    assert peak_hz(low.audio) < min(p for _, p in PALETTE) - 40
    assert min(p for _, p in PALETTE) - 20 < peak_hz(music.audio) < max(p for _, p in PALETTE) + 120


def test_offscreen_tones_belong_to_no_disc_on_screen_and_viewers_ignore_them():
    """An offscreen video sounds like a relevant one (palette tones, one at a time, each
    for 1–2 s), but every tone's colour is missing from the screen, and its viewers
    follow the visual cue as in a music video."""
    cfg = SynthConfig(**{**CFG.__dict__, "frames": 60})
    off = generate_video(cfg, 2, "offscreen")
    assert off.sounding == [None] * cfg.frames
    assert all(t is not None and t not in off.colours for t in off.tones)
    assert len(set(off.tones)) > 1  # the tone changes, as in a relevant video
    first_change = next(k for k in range(1, cfg.frames) if off.tones[k] != off.tones[0])
    span = off.audio[int(0.1 * 22050):int((first_change / cfg.fps - 0.1) * 22050)]
    assert abs(peak_hz(span) - PALETTE[off.tones[0]][1]) < 10
    music = generate_video(cfg, 2, "music")
    np.testing.assert_array_equal(off.frames, music.frames)  # the same pictures as the music video
    np.testing.assert_array_equal(off.fixations, music.fixations)  # and the same gaze: the sound is ignored


def test_mixed_videos_are_relevant_videos_with_music_under_the_tone():
    relevant, mixed = generate_video(CFG, 4, "relevant"), generate_video(CFG, 4, "mixed")
    np.testing.assert_array_equal(relevant.frames, mixed.frames)
    np.testing.assert_array_equal(relevant.fixations, mixed.fixations)  # viewers follow the tone
    assert mixed.sounding == relevant.sounding and mixed.tones == relevant.tones
    music = mixed.audio - relevant.audio  # the music (and another draw of the noise floor)
    # docs/data.md states the level: about 9 dB below the tone in RMS at gain 1.
    assert 7 < 20 * np.log10(np.sqrt(np.mean(relevant.audio ** 2) / np.mean(music ** 2))) < 11
    louder = generate_video(SynthConfig(**{**CFG.__dict__, "mixed_music_gain": 2.0}), 4, "mixed")
    ratio = np.sqrt(np.mean((louder.audio - relevant.audio) ** 2) / np.mean(music ** 2))
    # The stated level scales the music alone. 5 %: the difference also holds two draws of
    # the noise floor (σ 0.005 each), a few percent of the music's power; the ratio is ~2.
    assert ratio == pytest.approx(2.0, rel=0.05)


def test_kind_fractions_give_each_kind_its_share():
    cfg = SynthConfig(videos=40, seed=5, relevant_fraction=0.3, mixed_fraction=0.2, offscreen_fraction=0.2,
                      silent_fraction=0.5)
    kinds = video_kinds(cfg)
    assert [kinds.count(k) for k in ("relevant", "mixed", "offscreen", "music", "silent")] == [12, 8, 8, 6, 6]
    # Which videos are relevant, mixed or offscreen does not depend on silent_fraction.
    plain = video_kinds(SynthConfig(**{**cfg.__dict__, "silent_fraction": 0.0}))
    assert [k.replace("silent", "music") for k in kinds] == plain
    for bad in ({"relevant_fraction": 0.6, "mixed_fraction": 0.6}, {"offscreen_fraction": -0.1},
                {"music_register": "high"}, {"offscreen_fraction": 0.1, "objects": 6}):
        with pytest.raises(ValueError):
            SynthConfig(**bad).validate()


def test_silent_videos_are_music_videos_without_their_sound():
    """--silent-fraction takes the sound off some music videos and changes nothing else:
    the same videos are relevant, the silent ones are every second music video (at 0.5),
    and each has the pictures and gaze of the music video it replaces."""
    big = SynthConfig(videos=40, seed=3)
    plain, some = video_kinds(big), video_kinds(SynthConfig(videos=40, seed=3, silent_fraction=0.5))
    others = [i for i, k in enumerate(plain) if k == "music"]
    assert [i for i, k in enumerate(some) if k == "relevant"] == [i for i, k in enumerate(plain) if k == "relevant"]
    assert [i for i, k in enumerate(some) if k == "silent"] == others[1::2]
    assert set(video_kinds(SynthConfig(videos=40, seed=3, silent_fraction=1.0))) == {"relevant", "silent"}
    music, silent = generate_video(CFG, 1, "music"), generate_video(CFG, 1, "silent")
    assert silent.audio is None and music.audio is not None and silent.name.endswith("_silent")
    np.testing.assert_array_equal(silent.frames, music.frames)
    np.testing.assert_array_equal(silent.maps, music.maps)
    assert silent.sounding == music.sounding
    with pytest.raises(ValueError, match="silent_fraction"):
        SynthConfig(silent_fraction=1.5).validate()


def test_a_silent_video_is_written_without_sound_and_trains_on_silence(tmp_path):
    cfg = SynthConfig(videos=3, frames=4, height=32, width=48, relevant_fraction=1 / 3, silent_fraction=1.0, seed=3)
    meta = write_dataset(tmp_path / "d", cfg)
    names = [v["name"] for v in meta["videos"] if v["kind"] == "silent"]
    assert len(names) == 2
    root = tmp_path / "d" / "stavis"
    assert not (root / "video_audio" / "SynthAV" / names[0]).exists()
    with pytest.warns(MediaWarning, match="no audio track"):
        assert read_audio(tmp_path / "d" / "videos" / f"{names[0]}.mp4") is None
    assert len(list(iter_frames(tmp_path / "d" / "videos" / f"{names[0]}.mp4"))) == cfg.frames
    video = next(v for v in all_videos(root) if v.name == names[0])
    assert video.audio is None
    assert ClipDataset([video], 4, (32, 48))[0]["audio"].abs().max() == 0  # silence is zeros, not small values


def test_gaze_follows_the_sounding_disc_only_in_relevant_videos():
    def share_on(video, pick):
        hits = total = 0
        for t in range(CFG.frames):
            ys, xs = np.nonzero(video.fixations[t])
            centre = video.positions[t, pick(video, t)]
            hits += np.sum(np.hypot(xs - centre[0], ys - centre[1]) < 2 * video.radius)
            total += len(xs)
        return hits / total

    rel = generate_video(CFG, 0, "relevant")
    assert share_on(rel, lambda v, t: v.sounding[t]) > 0.6
    music = generate_video(CFG, 1, "music")
    # With music no disc is special: the best single disc gets far less than the sounding one did.
    best = max(share_on(music, lambda v, t, j=j: j) for j in range(CFG.objects))
    assert best < 0.6


# ------------------------------------------------------------------ STAViS layout

def test_stavis_training_samples_are_aligned(synth):
    """Frame k's clip ends at frame k, and its targets are frame k's own files: the map
    and the fixations equal those read straight from ``eyeMap_{k+1:05d}.jpg`` and
    ``fixMap_{k+1:05d}.mat`` (1-based names) and brought to the training size, bit for bit
    (the same file through the same resize), and differ from the neighbouring frames'
    (so a target one frame off cannot pass)."""
    from scipy.io import loadmat

    from avrsp.data.clips import resize_fixations
    from avrsp.media import resize_map

    root, meta = synth
    videos = all_videos(root / "stavis")
    assert sorted(v.name for v in videos) == sorted(meta)
    ds = ClipDataset(videos, T, SIZE, clips_per_video=6, seed=1)
    checked_audio = relevant = 0

    def files_of(name: str, j: int) -> tuple[np.ndarray, np.ndarray]:
        ann = root / "stavis" / "annotations" / "SynthAV" / name
        density = np.asarray(Image.open(ann / "maps" / f"eyeMap_{j + 1:05d}.jpg").convert("L"), np.float32) / 255
        return resize_map(density, SIZE), resize_fixations(loadmat(ann / f"fixMap_{j + 1:05d}.mat")["eyeMap"] > 0, SIZE)

    for i in range(len(ds)):
        item = ds[i]
        m = meta[item["video"]]
        k = item["frame"]
        density, fixations = files_of(item["video"], k)
        assert np.array_equal(item["map"].numpy(), density) and np.array_equal(item["fixations"].numpy(), fixations)
        for j in (k - 1, k + 1):
            if 0 <= j < CFG.frames:
                assert not np.array_equal(files_of(item["video"], j)[0], density), (item["video"], k, j)
        assert item["clip"].shape == (3, T, *SIZE) and item["audio"].shape == (1, 22050 * T // 10)
        assert item["map"].shape == SIZE and set(np.unique(item["fixations"].numpy())) <= {0.0, 1.0}
        assert -1 <= item["clip"].min() and item["clip"].max() <= 1
        # The last frame of the clip is frame k: every disc's colour sits where the metadata says.
        last = (item["clip"][:, -1].permute(1, 2, 0).numpy() + 1) * 127.5
        pos = np.array(m["positions"][k])
        for j, c in enumerate(m["colours"]):
            if any(np.hypot(*(pos[j] - pos[j2])) < 2 * m["radius"] for j2 in range(j + 1, len(pos))):
                continue  # a disc drawn later covers it
            x, y = scaled(pos[j], (CFG.height, CFG.width), SIZE)
            # 60 of 255: JPEG and the area resize blur a disc's edge and centre little; the
            # palette's colours differ from each other and the background by far more.
            assert np.abs(last[int(y), int(x)] - PALETTE[c][0]).max() < 60, (item["video"], k, j)
        if m["kind"] != "relevant":
            continue
        relevant += 1
        s = m["sounding"][k]
        first = max(k - T + 1, 0)
        if len(set(m["sounding"][first:k + 1])) == 1:  # one disc sounds through the whole clip
            # The FFT's bins are 22050/17640 = 1.25 Hz apart and the palette's pitches at least
            # 160 Hz: 15 Hz leaves room for the window's spread and names the pitch.
            assert abs(peak_hz(item["audio"][0].numpy()) - m["pitches"][s]) < 15
            checked_audio += 1
    assert relevant >= 12 and checked_audio >= 3


def test_evaluation_access_is_full_resolution(synth):
    root, meta = synth
    v = all_videos(root / "stavis")[0]
    m = meta[v.name]
    assert len(v) == CFG.frames and v.fps == CFG.fps
    assert v.frame(3).shape == (CFG.height, CFG.width, 3)
    assert v.saliency_map(3).shape == (CFG.height, CFG.width)
    fix = v.fixations(3)
    assert fix.dtype == bool and 1 <= fix.sum() <= CFG.viewers
    gen = generate_video(CFG, int(v.name.split("_")[1]), m["kind"])
    np.testing.assert_array_equal(fix, gen.fixations[3])
    assert abs(len(v.audio) - CFG.frames / CFG.fps * 22050) < 2  # integer samples: the duration's rounding


def test_clip_samples_are_reproducible_per_epoch(synth):
    root, _ = synth
    ds = ClipDataset(all_videos(root / "stavis"), T, SIZE, clips_per_video=2, seed=5)
    a = [ds[i]["frame"] for i in range(len(ds))]
    assert a == [ds[i]["frame"] for i in range(len(ds))]
    ds.set_epoch(1)
    assert a != [ds[i]["frame"] for i in range(len(ds))]


# ------------------------------------------------------------------ DHF1K layouts

def test_dhf1k_vinet_layout_matches_the_stavis_copy(synth):
    root, meta = synth
    assert dhf1k_layout(root / "dhf1k") == "vinet"
    train, val = dhf1k_videos(root / "dhf1k", "train"), dhf1k_videos(root / "dhf1k", "val")
    assert len(train) + len(val) == CFG.videos and len(val) == sum(m["test_fold"] == 1 for m in meta.values())
    by_id = {m["dhf1k"]: m for m in meta.values()}
    v = val[0]
    m = by_id[f"val/{v.name}"]
    stavis = next(s for s in all_videos(root / "stavis") if s.name == m["name"])
    gen = generate_video(CFG, int(m["name"].split("_")[1]), m["kind"])
    np.testing.assert_array_equal(v.frame(5), gen.frames[5])  # png is lossless
    assert np.abs(stavis.frame(5).astype(int) - gen.frames[5].astype(int)).mean() < 8  # jpg is not: a few levels
    np.testing.assert_array_equal(v.fixations(5), stavis.fixations(5))
    item = ClipDataset(val, T, SIZE, audio=False)[0]
    assert "audio" not in item and item["clip"].shape == (3, T, *SIZE)


def _tased_and_release(synth, tmp_path):
    root, _ = synth
    vinet = root / "dhf1k"
    tased, release = tmp_path / "tased", tmp_path / "release"
    for d in sorted((vinet / "train").iterdir()) + sorted((vinet / "val").iterdir()):
        vid = int(d.name)
        shutil.copytree(d / "images", tased / "video" / f"{vid:04d}")
        for out in (tased, release):
            shutil.copytree(d / "maps", out / "annotation" / f"{vid:04d}" / "maps")
            shutil.copytree(d / "fixation", out / "annotation" / f"{vid:04d}" / "fixation")
        (release / "video").mkdir(parents=True, exist_ok=True)
        with av.open(str(release / "video" / f"{vid:03d}.AVI"), "w") as c:
            s = c.add_stream("mjpeg", rate=30)
            s.width, s.height, s.pix_fmt = CFG.width, CFG.height, "yuvj444p"
            s.options = {"q:v": "2"}
            for p in sorted((d / "images").iterdir()):
                for pkt in s.encode(av.VideoFrame.from_ndarray(np.asarray(Image.open(p)), format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode(None):
                c.mux(pkt)
    return tased, release


def test_dhf1k_tased_and_release_layouts(synth, tmp_path):
    tased, release = _tased_and_release(synth, tmp_path)
    assert dhf1k_layout(tased) == "tased" and dhf1k_layout(release) == "release"
    a, b = dhf1k_videos(tased, "train"), dhf1k_videos(release, "train")
    assert [v.name for v in a] == [v.name for v in b] == [f"{i:04d}" for i in range(1, CFG.videos + 1)]
    assert dhf1k_videos(tased, "val") == []  # ids 601–700
    va, vb = a[2], b[2]
    assert len(va) == len(vb) == CFG.frames
    # Frame k decoded from the .AVI is extracted frame k (closest of all, despite MJPEG's loss).
    extracted = [va.frame(j).astype(int) for j in range(len(va))]
    for k in (0, 7, CFG.frames - 1):
        decoded = vb.frame(k).astype(int)
        assert int(np.argmin([np.abs(decoded - e).mean() for e in extracted])) == k
    np.testing.assert_array_equal(va.saliency_map(9), vb.saliency_map(9))   # one PNG file, read twice
    item = ClipDataset(b, T, SIZE, audio=False, seed=2)[2]
    assert item["clip"].shape == (3, T, *SIZE)


def test_a_hole_in_the_frame_numbering_ends_the_video_in_every_layout(synth, tmp_path):
    """Maps are matched by number: a video that went on past a missing frame by counting
    files would pair every later frame with the wrong map. Every layout stops at the hole."""
    root, meta = synth
    tased, _ = _tased_and_release(synth, tmp_path)
    vinet = tmp_path / "vinet"
    shutil.copytree(root / "dhf1k", vinet)
    stavis = tmp_path / "stavis"
    shutil.copytree(root / "stavis", stavis)
    name = next(n for n, v in meta.items() if v["test_fold"] == 1)
    holes = {
        "vinet": (lambda: dhf1k_videos(vinet, "train")[0], sorted((vinet / "train").iterdir())[0] / "images"),
        "tased": (lambda: dhf1k_videos(tased, "train")[0], tased / "video" / "0001"),
        "stavis": (lambda: stavis_videos(stavis, "SynthAV", "test", 1)[0],
                   stavis / "video_frames" / "SynthAV" / name),
    }
    warnings.simplefilter("ignore", DataNote)  # the fold list still counts the frames past the hole
    for layout, (read, folder) in holes.items():
        whole = read()
        expected_maps = [whole.saliency_map(k) for k in range(9)]
        hole = sorted(folder.iterdir())[9]                       # frame 10 (1-based) goes missing
        hole.unlink()
        with pytest.warns(DataWarning, match="missing \\(first: frame 10\\); using frames 1–9"):
            video = read()
        assert len(video) == 9, layout
        for k in (0, 8):                                         # frame k still pairs with map k
            np.testing.assert_array_equal(video.saliency_map(k), expected_maps[k])
            assert video.frames.paths[k].name == sorted(folder.iterdir())[k].name


def test_dhf1k_fixations_from_mat_variable_I(tmp_path):
    fix = np.zeros((5, 7), np.uint8)
    fix[1, 2] = fix[3, 6] = 1
    savemat(tmp_path / "0001.mat", {"I": fix})
    np.testing.assert_array_equal(read_fixations(tmp_path / "0001.mat"), fix > 0)


# ------------------------------------------------------------------ the quirks of real data

def _frames_used(ds, video, epochs=15):
    used = set()
    for e in range(epochs):
        ds.set_epoch(e)
        for i in range(len(ds)):
            item = ds[i]
            if item["video"] == video:
                used.add(item["frame"])
    return used


def test_missing_corrupt_and_all_zero_maps_are_never_targets(stavis_copy):
    root, meta = stavis_copy
    name = sorted(meta)[0]
    maps = root / "annotations" / "SynthAV" / name / "maps"
    (maps / "eyeMap_00011.jpg").unlink()                                   # missing
    (maps / "eyeMap_00012.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # corrupt
    Image.fromarray(np.zeros((CFG.height, CFG.width), np.uint8)).save(maps / "eyeMap_00013.jpg")  # all zero
    video = next(v for v in all_videos(root) if v.name == name)
    assert video.maps[10] is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ClipDataset([video], T, SIZE, clips_per_video=8)
        used = _frames_used(ds, name)
    assert used and not used & {10, 11, 12}
    corrupt = [str(w.message) for w in caught if "eyeMap_00012.jpg" in str(w.message)]
    assert len(corrupt) == 1 and "cannot read map" in corrupt[0]  # reported once, with its path


def test_training_clips_are_real_consecutive_frames_with_their_own_sound(stavis_copy):
    """The paper's "32 consecutive video frames": every clip of a video of at least T frames
    is T real frames, targets spread over T−1 … n−1, and its sound is cut exactly as the
    test protocol cuts it (a click at a known frame lands where that frame's sound
    belongs). Padding with frame 0 is left to videos shorter than T."""
    from test_evaluate import click_position

    root, meta = stavis_copy
    name = sorted(meta)[2]
    wav = root / "video_audio" / "SynthAV" / name / f"{name}.wav"
    k_click = 15
    audio = np.zeros(int(CFG.frames / CFG.fps * 22050), np.int16)
    audio[round(k_click / CFG.fps * 22050)] = 32767
    wavfile.write(wav, 22050, audio)
    video = next(v for v in all_videos(root) if v.name == name)
    ds = ClipDataset([video], T, SIZE, clips_per_video=6)
    targets, heard = set(), 0
    for e in range(12):
        ds.set_epoch(e)
        for i in range(len(ds)):
            item = ds[i]
            k = item["frame"]
            targets.add(k)
            frames = video.frames.read(list(range(k - T + 1, k + 1)))   # the real frames, in order
            expected = to_model_frames(frames, SIZE)
            assert torch.equal(item["clip"], expected), k   # the same files through the same conversion
            buf = item["audio"][0].numpy()
            if k - T + 1 <= k_click <= k:
                want = click_position(k_click, k - T + 1, k, CFG.fps, 17640, False)
                # one sample: where a span's end in seconds rounds to a sample
                assert abs(int(np.argmax(np.abs(buf))) - want) <= 1, k
                heard += 1
            else:  # no click: silence, but for decoding's faint ringing (1e-3 of full scale)
                assert np.abs(buf).max() < 1e-3 * 256, k
    assert min(targets) >= T - 1 and max(targets) == CFG.frames - 1 and len(targets) > CFG.frames // 2
    assert heard > 0
    # A video shorter than the window: its clips end at the target and repeat frame 0 before it.
    short = ImageFrames(video.frames.paths[:5])
    v5 = AnnotatedVideo("SynthAV", "short", CFG.fps, short, video.maps[:5], video.fixation_files[:5])
    item = ClipDataset([v5], T, SIZE, seed=1)[0]
    k = item["frame"]
    assert torch.equal(item["clip"], to_model_frames(short.read([max(j, 0) for j in range(k - T + 1, k + 1)]), SIZE))
    # Valid maps only in the first T−1 frames: the protocol's reversed window, not padding.
    early = AnnotatedVideo("SynthAV", "early", CFG.fps, video.frames, video.maps[:3] + [None] * (len(video) - 3),
                           video.fixation_files)
    item = ClipDataset([early], T, SIZE, seed=2)[0]
    k = item["frame"]
    assert k < 3 and torch.equal(item["clip"], to_model_frames(video.frames.read(list(range(k + T - 1, k - 1, -1))),
                                                               SIZE))


def test_bad_fixation_files_and_missing_frames(stavis_copy):
    root, meta = stavis_copy
    name = sorted(meta)[1]
    ann = root / "annotations" / "SynthAV" / name
    savemat(ann / "fixMap_00003.mat", {"eyeMap": np.zeros((0, 0))})   # empty .mat
    (ann / "fixMap_00004.mat").write_bytes(b"")                         # zero-byte file
    with pytest.raises(DataError, match="not a 2-D map"):
        read_fixations(ann / "fixMap_00003.mat")
    with pytest.raises(DataError, match="fixMap_00004.mat"):
        read_fixations(ann / "fixMap_00004.mat")
    video = next(v for v in all_videos(root) if v.name == name)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert video.fixations(2) is None and video.fixations(3) is None
    # Frame files missing from the end: the fold list disagrees, what is on disk wins.
    for k in (23, 24):
        (root / "video_frames" / "SynthAV" / name / f"img_{k:05d}.jpg").unlink()
    with pytest.warns(DataWarning, match="fold list says 24 frames, 22 on disk"):
        video = next(v for v in all_videos(root) if v.name == name)
    assert len(video) == 22


def test_wav_at_another_rate_is_resampled(stavis_copy):
    root, meta = stavis_copy
    name = next(n for n, m in meta.items() if m["kind"] == "relevant")
    wav = root / "video_audio" / "SynthAV" / name / f"{name}.wav"
    rate, data = wavfile.read(wav)
    wavfile.write(wav, 44100, resample_poly(data.astype(np.float32), 2, 1).astype(np.int16))
    audio = next(v for v in all_videos(root) if v.name == name).audio
    assert abs(len(audio) - len(data)) <= 2      # the resampler's filter delay, a sample or two
    first = meta[name]["sounding"][0]
    seg = audio[: int(22050 * 0.6)]
    # FFT bins of 1.7 Hz on 0.6 s; the palette's pitches lie 160 Hz or more apart.
    assert abs(peak_hz(seg) - meta[name]["pitches"][first]) < 10


def test_video_without_audio_gives_silence(stavis_copy):
    root, meta = stavis_copy
    name = sorted(meta)[2]
    shutil.rmtree(root / "video_audio" / "SynthAV" / name)
    video = next(v for v in all_videos(root) if v.name == name)
    assert video.audio is None
    item = ClipDataset([video], T, SIZE)[0]
    assert item["audio"].abs().max() == 0


def test_missing_video_folder_is_skipped_with_a_warning(stavis_copy):
    root, meta = stavis_copy
    name = sorted(meta)[3]
    shutil.rmtree(root / "video_frames" / "SynthAV" / name)
    with pytest.warns(DataWarning, match=f"skipping video {name}"):
        names = [v.name for v in all_videos(root)]
    assert name not in names and len(names) == CFG.videos - 1


def test_synth_mp4_has_frames_and_sound(synth):
    root, meta = synth
    name = next(n for n, m in meta.items() if m["kind"] == "relevant")
    frames = list(iter_frames(root / "videos" / f"{name}.mp4", size=SIZE))
    assert len(frames) == CFG.frames
    audio = read_audio(root / "videos" / f"{name}.mp4")
    s = meta[name]["sounding"][0]
    assert abs(peak_hz(audio[: int(22050 * 0.6)]) - meta[name]["pitches"][s]) < 10


def test_load_split_names_datasets(synth):
    root, _ = synth
    assert len(load_split(root / "dhf1k", "DHF1K", "train")) + len(load_split(root / "dhf1k", "dhf1k", "val")) == 6
    assert len(load_split(root / "stavis", "SynthAV", "test", 2)) == 2
    with pytest.raises(DataError, match="fold list not found"):
        load_split(root / "stavis", "AVAD", "test", 1)


# ------------------------------------------------------------------ the CLI end to end

def test_synth_then_data_check(tmp_path, capsys):
    root = tmp_path / "ds"
    assert main(["synth", str(root), "--videos", "3", "--frames", "12", "--height", "48", "--width", "64"]) == 0
    meta = json.loads((root / "synth.json").read_text())
    assert len(meta["videos"]) == 3 and meta["config"]["frames"] == 12
    assert main(["synth", str(root)]) == 2  # refuses to overwrite silently
    # --overwrite replaces the whole dataset: no video of a larger earlier run survives.
    assert main(["synth", str(root), "--videos", "4", "--frames", "12", "--height", "48", "--width", "64",
                 "--overwrite"]) == 0
    assert main(["synth", str(root), "--videos", "3", "--frames", "12", "--height", "48", "--width", "64",
                 "--overwrite"]) == 0
    assert len(list((root / "videos").glob("*.mp4"))) == 3
    assert len(list((root / "dhf1k").glob("*/*/images"))) == 3
    other = tmp_path / "mine"
    (other / "keep.txt").parent.mkdir()
    (other / "keep.txt").write_text("user data")
    assert main(["synth", str(other), "--overwrite"]) == 2 and (other / "keep.txt").exists()
    capsys.readouterr()
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "STAViS" in out and "DHF1K (vinet)" in out and "22050 Hz" in out
    # Damage it: a fold list naming only videos that do not exist is unusable.
    (root / "stavis" / "fold_lists" / "SynthAV_list_test_1_fps.txt").write_text("nowhere 10 15\n")
    (root / "stavis" / "annotations" / "SynthAV" / meta["videos"][0]["name"] / "maps" / "eyeMap_00002.jpg").unlink()
    assert main(["data", "check", str(root)]) == 1
    captured = capsys.readouterr()
    assert "no usable video" in captured.err and "skipping video nowhere" in captured.out
    # Every list that names the damaged video counts its missing map; nothing else does.
    damaged = meta["videos"][0]["name"]
    lists = sorted((root / "stavis" / "fold_lists").glob("*.txt"))
    expected = sum(damaged in p.read_text().split() for p in lists)
    rows = [line.split() for line in captured.out.splitlines() if line.startswith("SynthAV ")]
    assert len(rows) == 6 and expected >= 1
    assert sum(int(r[5]) for r in rows) == expected
    assert main(["data", "check", str(tmp_path / "empty")]) == 1


def test_data_check_names_every_problem_file_and_fails(tmp_path, capsys):
    root = tmp_path / "ds"
    write_dataset(root, SynthConfig(videos=3, frames=12, height=48, width=64, seed=3))
    meta = json.loads((root / "synth.json").read_text())
    name = meta["videos"][0]["name"]
    maps = root / "stavis" / "annotations" / "SynthAV" / name / "maps"
    (maps / "eyeMap_00002.jpg").write_bytes(b"\xff\xd8 truncated")           # corrupt
    for k in (4, 5, 6, 7, 8):                                                # five all-zero maps
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(maps / f"eyeMap_{k:05d}.jpg")
    (maps / "eyeMap_00010.jpg").unlink()                                     # missing
    (maps / "eyeMap_00011.jpg").unlink()
    frame = root / "stavis" / "video_frames" / "SynthAV" / name / "img_00003.jpg"
    frame.write_bytes(b"")                                                   # zero-length frame
    capsys.readouterr()
    assert main(["data", "check", str(root / "stavis")]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(f"problem: SynthAV/{name}")]
    assert any("1 unreadable map" in line and "eyeMap_00002.jpg" in line for line in lines), lines
    assert any("1 unreadable frame" in line and "img_00003.jpg" in line for line in lines), lines
    zero = next(line for line in lines if "all-zero maps" in line)
    assert "5 all-zero maps" in zero and "eyeMap_00004.jpg" in zero and "and 2 more" in zero
    assert "eyeMap_00008.jpg" not in zero                                    # the first few, then a count
    assert any("2 missing maps: frames 10–11" in line for line in lines), lines
    assert len(lines) == 4 and "problem(s) found, in 1 video(s)" in out
    # --quiet: the table and the count, for scripts; the exit status is the same.
    assert main(["data", "check", str(root / "stavis"), "--quiet"]) == 1
    quiet = capsys.readouterr().out
    assert "problem:" not in quiet and "run without --quiet" in quiet
    # A clean dataset: exit 0.
    clean = tmp_path / "clean"
    write_dataset(clean, SynthConfig(videos=3, frames=12, height=48, width=64, seed=3))
    assert main(["data", "check", str(clean), "--quiet"]) == 0
    assert "no problems found" in capsys.readouterr().out
