import warnings
from fractions import Fraction

import av
import numpy as np
import pytest

from avrsp.media import (MediaError, MediaWarning, clip_audio, frame_span, iter_frames, probe, read_audio, resize_rgb,
                         write_map_png)


def write_video(path, frames, fps=25, codec="libx264", pix_fmt="yuv420p", audio=None, audio_rate=44100,
                layout="stereo", rotation=None, pts=None, container_format=None):
    """Frames: list of H×W×3 uint8; audio: C×N float32 in [-1, 1]."""
    with av.open(str(path), "w", format=container_format) as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        if rotation is not None:
            vs.set_display_rotation(rotation)
        if pts is not None:
            vs.time_base = Fraction(1, 1000)
        a_s = None
        if audio is not None:  # every stream must exist before the first packet is muxed
            a_s = out.add_stream("aac", rate=audio_rate)
            a_s.layout = layout
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], Fraction(1, 1000)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if a_s is not None:
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32), format="fltp", layout=layout)
            af.sample_rate = audio_rate
            for p in a_s.encode(af):
                out.mux(p)
            for p in a_s.encode(None):
                out.mux(p)
    return path


def coloured_frames(n, h=48, w=64):
    return [np.full((h, w, 3), (i * 23) % 256, np.uint8) for i in range(n)]


def tone(freq, seconds, rate, channels=1, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None], channels, 0).astype(np.float32)


def peak_hz(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


def test_frames_stream_in_order_with_times(tmp_path):
    path = write_video(tmp_path / "v.mp4", coloured_frames(12), fps=25)
    got = list(iter_frames(path))
    assert len(got) == 12
    levels = [int(rgb.mean().round()) for rgb, _ in got]
    # H.264 and YUV 4:2:0 keep a flat grey within a few levels; the frames are 23 levels apart.
    assert all(abs(a - b) <= 3 for a, b in zip(levels, [(i * 23) % 256 for i in range(12)]))
    assert [round(t, 3) for _, t in got] == [round(i / 25, 3) for i in range(12)]
    info = probe(path)
    assert (info.width, info.height, info.fps, info.audio_rate) == (64, 48, 25.0, None)


def test_resize_and_odd_sizes(tmp_path):
    img = np.zeros((71, 127, 3), np.uint8)
    img[:, :64] = 200  # left half bright
    path = write_video(tmp_path / "odd.avi", [img] * 3, codec="mjpeg", pix_fmt="yuvj444p")
    (rgb, _), *_ = iter_frames(path, size=(32, 64))
    assert rgb.shape == (32, 64, 3)
    assert rgb[:, :28].mean() > 150 and rgb[:, 36:].mean() < 50
    assert probe(path).width == 127 and probe(path).height == 71


def test_a_kept_swscale_context_gives_every_frame_what_a_fresh_one_gives(tmp_path):
    """The converter is kept per thread and reused: interleaving sizes and sources, one
    call after another, must still give each frame its own size and pixels."""
    rng = np.random.default_rng(0)
    path = write_video(tmp_path / "v.mp4", [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(5)])
    with av.open(str(path)) as c:
        fresh = [(f.to_ndarray(format="rgb24"),
                  f.reformat(width=40, height=24, format="rgb24", interpolation="AREA").to_ndarray())
                 for f in c.decode(video=0)]
    for (full, small), (got_small, _), (got_full, _) in zip(fresh, iter_frames(path, size=(24, 40)),
                                                            iter_frames(path), strict=True):
        # The same swscale code on the same pixels in one process: bit for bit.
        assert np.array_equal(got_small, small) and np.array_equal(got_full, full)
        expected = av.VideoFrame.from_ndarray(full, format="rgb24").reformat(
            width=20, height=12, format="rgb24", interpolation="AREA").to_ndarray()
        assert np.array_equal(resize_rgb(full, (12, 20)), expected)


def test_rotation_metadata_is_applied(tmp_path):
    img = np.zeros((32, 64, 3), np.uint8)
    img[:8, :8] = 255  # top-left corner
    path = write_video(tmp_path / "rot.mp4", [img] * 2, rotation=90)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)
    rgb, _ = next(iter_frames(path))
    assert rgb.shape == (64, 32, 3)
    # 90° counter-clockwise: the top-left corner goes to the bottom-left.
    assert rgb[-8:, :8].mean() > 200 and rgb[:8, :8].mean() < 50
    rgb, _ = next(iter_frames(path, size=(40, 20)))
    assert rgb.shape == (40, 20, 3) and rgb[-5:, :5].mean() > 150


def test_variable_frame_rate_keeps_timestamps(tmp_path):
    pts = [0, 40, 80, 200, 240, 520]  # ms, irregular gaps on the encoder's 1/25 s grid
    path = write_video(tmp_path / "vfr.mp4", coloured_frames(6), fps=25, pts=pts)
    times = [t for _, t in iter_frames(path)]
    assert len(times) == 6
    np.testing.assert_allclose(times, np.array(pts) / 1000, atol=2e-3)  # the container's time base rounds to ~1 ms


@pytest.mark.parametrize("rate, layout, channels", [(44100, "stereo", 2), (48000, "5.1", 6), (22050, "mono", 1)])
def test_audio_is_mono_22050_with_pitch_and_level_kept(tmp_path, rate, layout, channels):
    path = write_video(tmp_path / "a.mp4", coloured_frames(25), fps=25,
                       audio=tone(440, 1.0, rate, channels, amp=0.5), audio_rate=rate, layout=layout)
    audio = read_audio(path)
    assert audio.dtype == np.float32 and abs(len(audio) - 22050) < 2048
    mid = audio[5000:15000]
    assert abs(peak_hz(mid, 22050) - 440) < 5   # FFT bins of 2.2 Hz on 10 000 samples
    # Channels are averaged, so identical channels keep their level (0.5, within AAC's loss;
    # summed, two channels would give 1).
    assert 0.4 < np.abs(mid).max() < 0.6
    assert probe(path).audio_channels == channels


def test_no_audio_track_is_silence_with_one_warning(tmp_path):
    path = write_video(tmp_path / "silent.mp4", coloured_frames(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_audio(path) is None
    assert [w.category for w in caught] == [MediaWarning] and "no audio track" in str(caught[0].message)
    np.testing.assert_array_equal(clip_audio(None, 22050, 0, 1, 100), np.zeros(100, np.float32))


def test_short_and_single_frame_videos(tmp_path):
    assert len(list(iter_frames(write_video(tmp_path / "one.mp4", coloured_frames(1))))) == 1
    assert len(list(iter_frames(write_video(tmp_path / "ten.mp4", coloured_frames(10))))) == 10


def test_bad_files_give_one_line_errors(tmp_path):
    good = write_video(tmp_path / "good.mp4", coloured_frames(20), audio=tone(440, 0.8, 44100, 2))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    wav = tmp_path / "sound.wav"
    from scipy.io import wavfile
    wavfile.write(wav, 22050, (tone(440, 0.2, 22050)[0] * 32767).astype(np.int16))
    bad_wav = tmp_path / "bad.wav"  # a WAV header announcing MP3 data, then noise
    header = wav.read_bytes()[:44]
    bad_wav.write_bytes(header[:20] + (0x55).to_bytes(2, "little") + header[22:]
                        + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    cases = [
        (lambda: probe(truncated), "truncated.mp4"),
        (lambda: list(iter_frames(text)), "notes.mp4: cannot open"),
        (lambda: probe(wav), "sound.wav: no video stream"),
        (lambda: list(iter_frames(tmp_path / "missing.mp4")), "missing.mp4: no such file"),
        (lambda: read_audio(bad_wav), "bad.wav: audio decoding failed"),
    ]
    for call, message in cases:
        with pytest.raises(MediaError) as e:
            call()
        assert message in str(e.value) and "\n" not in str(e.value)


def test_clip_audio_follows_the_reference_windowing():
    rate, fps, T = 22050, 25.0, 32
    audio = np.linspace(-1, 1, rate * 4).astype(np.float32)
    start, end = frame_span(10, 10 + T - 1, fps)
    assert (start, end) == pytest.approx(((10 - 0.5) / fps, (41 + 0.5) / fps))   # float64, seconds of order 1
    out = clip_audio(audio, rate, start, end, rate // 10 * T)
    assert out.shape == (70560,)
    a, b = round(start * rate), round(end * rate)
    n = b - a
    want = np.zeros(70560, np.float32)
    off = (70560 - n) // 2
    want[off:off + n] = audio[a:b] * np.hanning(n) * 256
    # float32 samples up to SoundNet's 256: rounding ~1.5e-5, against float64 here.
    np.testing.assert_allclose(out, want, atol=1e-4)
    # Reversed windows reverse the excerpt (the test protocol's reversed windows).
    rev = clip_audio(audio, rate, start, end, 70560, reverse=True)
    np.testing.assert_allclose(rev[off:off + n], (audio[a:b][::-1] * np.hanning(n) * 256), atol=1e-4)
    # At the track's ends the excerpt is clamped to the track, not padded with silence
    # (as STAViS and AViNet cut it): shorter, and windowed over its own length.
    for first_frame, last_frame in ((0, T - 1), (-3, T - 4), (len(audio) * fps / rate - T + 2, None)):
        last_frame = first_frame + T - 1 if last_frame is None else last_frame
        start, end = frame_span(first_frame, last_frame, fps)
        a, b = max(round(start * rate), 0), min(round(end * rate), len(audio))
        assert b - a < round(T / fps * rate)                                   # cut short by the clamp
        want = np.zeros(70560, np.float32)
        off = (70560 - (b - a)) // 2
        want[off:off + b - a] = audio[a:b] * np.hanning(b - a) * 256
        np.testing.assert_allclose(clip_audio(audio, rate, start, end, 70560), want, atol=1e-4)
    assert not clip_audio(audio, rate, -2.0, -1.0, 100).any()                # wholly outside: silence
    # Below 10 fps the excerpt exceeds the buffer: its centre is kept.
    slow = clip_audio(audio, rate, *frame_span(0, T - 1, 5.0), 70560)
    assert slow.shape == (70560,) and np.abs(slow).max() <= 256


def test_a_map_png_is_the_map_scaled_to_its_maximum(tmp_path):
    """Every frame gets all 256 levels whatever its peak (a faint one at the model's own
    scale would keep a handful); an all-zero map stays zero, without dividing by it;
    negative values (none from a sigmoid, but a resize can undershoot) count as 0."""
    from PIL import Image

    faint = np.zeros((4, 6), np.float32)
    faint[1, 2], faint[2, 3], faint[3, 5] = 0.06, 0.02, -0.01
    write_map_png(tmp_path / "faint.png", faint)
    want = np.zeros((4, 6), np.uint8)
    want[1, 2], want[2, 3] = 255, 85                                      # 0.02 / 0.06 · 255
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "faint.png")), want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                    # no division by zero
        write_map_png(tmp_path / "zero.png", np.zeros((4, 6), np.float32))
    assert not np.asarray(Image.open(tmp_path / "zero.png")).any()
