"""`avrsp serve` (issue 20): the page in a real browser (Debian's headless Chromium through
its ChromeDriver), checked as a person sees it, and the server's rules over HTTP: bad
input is one sentence, uploads have limits and leave nothing behind, the queue and each
job's outputs are bounded, other sites cannot send it requests, and nobody reaches a job
without its id."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from fractions import Fraction
from http.client import HTTPConnection
from io import BytesIO
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import numpy as np
import pytest

pytest.importorskip("starlette", reason="avrsp serve needs the serve extra: pip install 'avrsp[serve]'")

import av  # noqa: E402
from PIL import Image  # noqa: E402

import avrsp  # noqa: E402
from avrsp.data.synth import SynthConfig, write_dataset  # noqa: E402
from avrsp.predict import demo_video  # noqa: E402
from avrsp.serve import KEEP_RESULTS, MAX_ARRIVING, MAX_NAME_BYTES, MAX_WAITING  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"
UPLOAD_TIMEOUT = 3  # the test server's --upload-timeout, seconds
#: A name fetch cannot put in a header as it is, with what breaks a quoted header value.
ODD_NAME = 'видео "日本"; filename=x.mp4'
PANELS = ("p-frame", "p-map", "p-ret-a", "p-ret-v")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`avrsp serve` as a user starts it, on a free port of 127.0.0.1."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "avrsp", "serve", "--port", str(port), "--precision", "fp32", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"avrsp serve exited: {proc.stdout.read()}")
            time.sleep(0.2)
    proc.kill()
    pytest.fail("avrsp serve did not answer within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with a synthetic dataset to browse, a 2 MB upload limit and a short upload timeout."""
    root = tmp_path_factory.mktemp("serve")
    write_dataset(root / "synth", SynthConfig(videos=3, frames=20, height=72, width=128, seed=6))
    proc, url = start_server("--data", str(root / "synth" / "stavis"), "--max-upload-mb", "2",
                             "--upload-timeout", str(UPLOAD_TIMEOUT), "--workdir", str(root / "work"))
    yield url, root
    stop_server(proc)


def call(url, data=None, headers=None, method=None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_video(url, data: bytes, name: str) -> tuple[int, dict]:
    """An upload as the page sends it: the bytes as the body, the name percent-encoded UTF-8."""
    code, body = call(f"{url}/api/jobs", data, {"Content-Type": "application/octet-stream",
                                                "X-Filename": quote(name, safe="")}, "POST")
    return code, json.loads(body)


def cancel(url, job):
    return call(f"{url}/api/jobs/{job}/cancel", method="POST")[0]


def wait_for(url, job, states=("done", "failed", "cancelled"), seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        status = json.loads(call(f"{url}/api/jobs/{job}")[1])
        if "state" not in status:
            pytest.fail(f"job {job}: {status}")
        if status["state"] in states:
            return status
        time.sleep(0.1)
    pytest.fail(f"job {job} did not finish: {status}")


def one_sentence(body: bytes) -> str:
    """The error of a refused request, checked to be one line that no stack trace is in."""
    message = json.loads(body)["error"]
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def write_clip(path: Path, width: int, height: int, frames: int, fps: int = 25) -> Path:
    """A small H.264 clip of moving gradients, quick to write at any size, in any container."""
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            rgb = np.dstack([(x + 4 * k) * 255 // width, y * 255 // height, np.full_like(x, 9 * k % 256)])
            for p in s.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def model_grid() -> tuple[int, int]:
    from avrsp.checkpoint import read_metadata
    from avrsp.predict import default_checkpoint

    config = read_metadata(default_checkpoint())["config"]
    return config["height"], config["width"]


@pytest.fixture(scope="module")
def uploaded(server):
    """The demo clip uploaded under ODD_NAME, predicted: (job id, its status)."""
    url, _ = server
    code, body = post_video(url, demo_video().read_bytes(), ODD_NAME)
    assert code == 201, body
    status = wait_for(url, body["id"])
    assert status["state"] == "done", status
    return body["id"], status


# ------------------------------------------------------------------ the server's rules, over HTTP

def test_bad_input_is_one_sentence_and_nothing_leaks(server):
    url, _ = server
    code, body = post_video(url, b"this is not a video", "notes.mp4")
    assert code == 201
    status = wait_for(url, body["id"])
    assert status["state"] == "failed" and status["message"].startswith("notes.mp4: cannot open")
    assert "Traceback" not in status["message"] and "/uploads/" not in status["message"]
    # Over the size limit (2 MB here): refused from the declared size, before a byte of the body is read.
    conn = HTTPConnection(urlsplit(url).netloc, timeout=30)
    conn.putrequest("POST", "/api/jobs")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("X-Filename", "big.mp4")
    conn.putheader("Content-Length", str(3 * 2**20))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "over this server's limit of 2 MB" in one_sentence(response.read())
    conn.close()
    # Nobody reaches a job without its id, and a job's folder serves only its outputs.
    assert call(f"{url}/api/jobs/not-a-job")[0] == 404
    assert call(f"{url}/api/jobs")[0] == 405  # no listing
    code, body = call(f"{url}/api/jobs?demo=1", method="POST")
    job = json.loads(body)["id"]
    wait_for(url, job)
    for name in ("../../../etc/passwd", "frames/..%2F..%2Fx.jpg", "out/maps/00001.png", "relevance.npz",
                 "frames/\u0661\u0662.jpg"):
        code, body = call(f"{url}/api/jobs/{job}/files/{quote(name, safe='/%')}")
        assert code == 404 and "Traceback" not in body.decode(), name
    code, body = call(f"{url}/api/jobs/{job}/files/maps.zip")
    assert code == 200 and len(zipfile.ZipFile(BytesIO(body)).namelist()) == 96


def test_what_gave_a_500_is_a_4xx_with_one_sentence(server, uploaded):
    url, _ = server
    job, status = uploaded
    n = status["result"]["frames"]
    # Frame numbers outside the video (0 would index the last frame from the end).
    for name in ("ret_a/00000.png", f"ret_a/{n + 1:05d}.png", f"ret_v/{n + 1:05d}.png", "heat/00000.png",
                 f"gt/{n + 1:05d}.png", f"frames/{n + 1:05d}.jpg"):
        code, body = call(f"{url}/api/jobs/{job}/files/{name}")
        assert code == 404, name
        one_sentence(body)
    assert call(f"{url}/api/jobs/{job}/files/ret_a/{n:05d}.png")[0] == 200
    # A dataset key that is not a string.
    for payload in ({"key": ["stavis/x"]}, {"key": {"a": 1}}, {"key": 3}, ["key"], "key", None):
        code, body = call(f"{url}/api/data/jobs", json.dumps(payload).encode(), {"Content-Type": "application/json"},
                          "POST")
        assert code == 400, payload
        one_sentence(body)
    # demo= anything but 1 is not a request for the demo.
    for value in ("0", "yes", ""):
        code, body = call(f"{url}/api/jobs?demo={value}", method="POST")
        assert code == 400, value
        assert f"demo={value}" in one_sentence(body)


def test_the_ret_images_of_frame_k_are_frame_ks_relevance(server, uploaded):
    """ret_a/<k>.png and ret_v/<k>.png (k from 1, as every per-frame file) show frame k's
    Ret_A and Ret_V: rendered here independently from the same clip's relevance maps
    (Predictor in fp32, as the server runs), on one grey scale for the whole video
    (docs/serve.md), they agree to one grey level, the most that the two processes'
    float32 sums, rounded in other orders, can move a pixel. The images one frame on
    differ by more, so a server showing frame k+1's (or frame k−1's) maps fails."""
    from avrsp.predict import Predictor

    url, _ = server
    job, status = uploaded
    rows = list(Predictor(device="cpu", precision="fp32").predict_video_with_relevance(demo_video()))
    n = status["result"]["frames"]
    assert n == len(rows)
    for key, column in (("ret_a", 1), ("ret_v", 2)):
        maps = np.stack([row[column] for row in rows]).astype(np.float64)
        want = np.round((maps - maps.min()) / (maps.max() - maps.min()) * 255)
        served = np.stack([np.asarray(Image.open(BytesIO(call(f"{url}/api/jobs/{job}/files/{key}/{k:05d}.png")[1])),
                                      np.float64) for k in range(1, n + 1)])
        assert served.shape == want.shape, key
        assert np.abs(served - want).max() <= 1, key
        assert np.abs(served[:-1] - want[1:]).max() > 1 and np.abs(served[1:] - want[:-1]).max() > 1, key


def test_a_long_job_can_be_cancelled(server):
    url, root = server
    from avrsp.data.synth import generate_video, write_mp4

    cfg = SynthConfig(videos=3, frames=150, height=72, width=128, seed=8)
    path = root / "long.mp4"
    write_mp4(path, generate_video(cfg, 0, "relevant"), cfg)
    job = post_video(url, path.read_bytes(), "long.mp4")[1]["id"]
    wait_for(url, job, ("running",))
    assert cancel(url, job) == 200
    status = wait_for(url, job)
    assert status["state"] == "cancelled" and status["done"] < 150
    assert call(f"{url}/api/jobs/{job}/files/video.mp4")[0] == 404


def content_disposition_name(header: str) -> str:
    """The UTF-8 name of an RFC 6266 attachment, the header checked against its grammar."""
    match = re.fullmatch(r"""attachment; filename="[^"\\]*"; filename\*=UTF-8''([A-Za-z0-9%!#$&+.^_`|~-]+)""", header)
    assert match, header
    return unquote(match[1], errors="strict")


def test_names_travel_as_utf8_and_downloads_keep_them(server, uploaded):
    url, _ = server
    job, status = uploaded
    assert status["name"] == ODD_NAME and status["result"]["name"] == ODD_NAME
    for name in ("maps.zip", "maps.npz", "overlay.mp4"):
        request = urllib.request.Request(f"{url}/api/jobs/{job}/files/{name}")
        with urllib.request.urlopen(request, timeout=30) as r:
            header = r.headers["Content-Disposition"]
        assert content_disposition_name(header) == f'видео "日本"; filename=x_{name}'


def test_odd_names_are_cleaned_not_refused(server):
    url, _ = server
    for sent, expected in (("..", "upload"), ("../../etc/passwd", "passwd"), ("a\\..\\b.mp4", "b.mp4"),
                           ("\u202egnp.exe\x07.mp4", "gnp.exe.mp4"), ("  .hidden.mkv", "hidden.mkv")):
        code, body = post_video(url, b"not a video", sent)
        assert code == 201, (sent, body)
        status = wait_for(url, body["id"])
        assert status["name"] == expected and status["message"].startswith(f"{expected}: cannot open"), status
    long = "x" * 300 + ".mp4"
    code, body = post_video(url, b"not a video", long)
    assert code == 201, body
    name = wait_for(url, body["id"])["name"]
    assert name.endswith(".mp4") and long.startswith(name[:-4]) and len(name.encode()) <= MAX_NAME_BYTES
    # Not UTF-8 once decoded: refused, with the cause.
    code, body = call(f"{url}/api/jobs", b"x", {"Content-Type": "application/octet-stream",
                                                "X-Filename": "%FF%FE.mp4"}, "POST")
    assert code == 400 and "UTF-8" in one_sentence(body)


def upload_folders(root: Path) -> set[str]:
    return {p.name for p in (root / "work" / "uploads").iterdir()}


def begin_upload(url, length: int, sent: bytes, timeout: float = UPLOAD_TIMEOUT + 20) -> HTTPConnection:
    """An upload of ``length`` bytes of which only ``sent`` are sent (so far)."""
    conn = HTTPConnection(urlsplit(url).netloc, timeout=timeout)
    conn.putrequest("POST", "/api/jobs")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("X-Filename", "cut.mp4")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    conn.send(sent)
    return conn


def test_a_cut_or_stalled_upload_leaves_nothing_behind(server):
    url, root = server
    before = upload_folders(root)

    for _ in range(3):  # the client goes away part-way
        begin_upload(url, 300_000, os.urandom(100_000)).close()
    deadline = time.time() + 10
    while upload_folders(root) - before and time.time() < deadline:
        time.sleep(0.1)
    assert not upload_folders(root) - before, "cut uploads were left in the uploads folder"
    # The client stays but sends nothing more: answered once the timeout passes, and removed.
    conn = begin_upload(url, 300_000, os.urandom(1000))
    t0 = time.time()
    try:
        response = conn.getresponse()
    except TimeoutError:
        pytest.fail("a stalled upload held its connection with no timeout")
    assert response.status == 408 and "stalled" in one_sentence(response.read())
    assert UPLOAD_TIMEOUT - 0.5 < time.time() - t0 < UPLOAD_TIMEOUT + 10
    conn.close()
    assert not upload_folders(root) - before


def test_uploads_arriving_at_once_are_bounded(server):
    url, root = server
    before = upload_folders(root)
    arriving = [begin_upload(url, 300_000, os.urandom(1000)) for _ in range(MAX_ARRIVING)]
    try:
        deadline = time.time() + 10  # each is received as far as it was sent
        while len(upload_folders(root) - before) < MAX_ARRIVING and time.time() < deadline:
            time.sleep(0.05)
        conn = begin_upload(url, 300_000, b"", timeout=UPLOAD_TIMEOUT - 1)
        try:
            response = conn.getresponse()
        except TimeoutError:
            pytest.fail("an upload beyond the bound was taken in")
        assert response.status == 503 and "arriving" in one_sentence(response.read())
        conn.close()
    finally:
        for conn in arriving:
            conn.close()
    deadline = time.time() + 10
    while upload_folders(root) - before and time.time() < deadline:
        time.sleep(0.1)
    assert not upload_folders(root) - before
    code, body = post_video(url, b"not a video", "after.mp4")  # room again
    assert code == 201, body


def test_failed_and_cancelled_jobs_do_not_push_results_out(server, uploaded):
    url, _ = server
    job, _ = uploaded
    failed = []
    for k in range(KEEP_RESULTS + 2):
        failed.append(post_video(url, b"not a video", f"junk{k}.mp4")[1]["id"])
        if len(failed) % (MAX_WAITING // 2) == 0:  # stay within the queue
            wait_for(url, failed[-1])
    cancelled = [json.loads(call(f"{url}/api/jobs?demo=1", method="POST")[1])["id"] for _ in range(2)]
    for j in cancelled:
        assert cancel(url, j) == 200
    for j in (failed[-1], *cancelled):
        wait_for(url, j)
    assert json.loads(call(f"{url}/api/jobs/{job}")[1]).get("state") == "done", "a result was pushed out"
    assert call(f"{url}/api/jobs/{job}/files/maps.npz")[0] == 200
    assert all(wait_for(url, j)["state"] == "failed" for j in failed)
    assert all(wait_for(url, j)["state"] == "cancelled" for j in cancelled)


def test_the_queue_is_bounded(server):
    url, _ = server
    accepted, refused = [], None
    try:
        for _ in range(MAX_WAITING + 3):
            code, body = call(f"{url}/api/jobs?demo=1", method="POST")
            if code == 503:
                refused = one_sentence(body)
                break
            assert code == 201, body
            accepted.append(json.loads(body)["id"])
        assert refused is not None and "waiting" in refused, "the queue took every job"
        assert MAX_WAITING <= len(accepted) <= MAX_WAITING + 1  # the first may be running already
        # An upload is refused before its body is read: none is sent here, and the answer comes at once.
        conn = HTTPConnection(urlsplit(url).netloc, timeout=UPLOAD_TIMEOUT - 1)
        conn.putrequest("POST", "/api/jobs")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", "100000")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 503 and "waiting" in one_sentence(response.read())
        conn.close()
    finally:
        for job in accepted:
            cancel(url, job)
    assert all(wait_for(url, job, seconds=30)["state"] == "cancelled" for job in accepted)
    code, body = call(f"{url}/api/jobs?demo=1", method="POST")  # room again
    assert code == 201
    cancel(url, json.loads(body)["id"])


def test_maps_npz_keeps_the_models_grid_not_the_videos_size(server, tmp_path):
    url, _ = server
    clip = write_clip(tmp_path / "hd.mp4", 1280, 720, 12)
    code, body = post_video(url, clip.read_bytes(), "hd.mp4")
    assert code == 201, body
    assert wait_for(url, body["id"])["state"] == "done"
    code, data = call(f"{url}/api/jobs/{body['id']}/files/maps.npz")
    with np.load(BytesIO(data)) as z:
        shapes = {z[k].shape for k in z.files}
        assert len(z.files) == 12 and all(z[k].dtype == np.float32 for k in z.files)
    (h, w), = shapes
    gh, gw = model_grid()
    assert h >= gh and w >= gw and (h == gh or w == gw), (h, w)  # just covers the model's grid
    assert abs(w / h - 1280 / 720) < 0.02   # whole pixels: 228/128 against 16/9
    assert len(data) < 12 * h * w * 4 + 100_000
    # The 8-bit maps stay at the video's size.
    code, data = call(f"{url}/api/jobs/{body['id']}/files/maps.zip")
    with zipfile.ZipFile(BytesIO(data)) as z:
        assert Image.open(BytesIO(z.read(z.namelist()[0]))).size == (1280, 720)


def test_requests_from_other_sites_are_refused(server):
    url, _ = server
    port = urlsplit(url).port
    demo = f"{url}/api/jobs?demo=1"
    for origin in ("http://evil.example", "null", f"http://localhost:{port}", f"http://127.0.0.1:{port + 1}"):
        code, body = call(demo, headers={"Origin": origin}, method="POST")
        assert code == 403 and origin in one_sentence(body), origin
    # What a form of another site can send without asking first: refused, even with no Origin.
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        assert call(demo, b"", {"Content-Type": media}, "POST")[0] == 415, media
        assert call(f"{url}/api/jobs", b"x", {"Content-Type": media}, "POST")[0] == 415, media
        code, body = call(f"{url}/api/data/jobs", b'{"key": "stavis/x"}', {"Content-Type": media}, "POST")
        assert code == 415, media
        one_sentence(body)
    # Another site's name for 127.0.0.1 (DNS rebinding) reaches nothing.
    for method in ("GET", "POST"):
        code, body = call(f"{url}/", headers={"Host": f"evil.example:{port}"}, method=method)
        assert code == 400 and "evil.example" in one_sentence(body), method
    # The page's own requests pass, under any loopback name and port (an SSH tunnel).
    assert call(f"{url}/", headers={"Host": "localhost:9999"})[0] == 200
    code, body = call(demo, headers={"Origin": url}, method="POST")
    assert code == 201
    assert call(f"{url}/api/jobs/{json.loads(body)['id']}/cancel", headers={"Origin": url}, method="POST")[0] == 200


def test_a_job_past_the_output_budget_fails_and_keeps_nothing(tmp_path):
    work = tmp_path / "work"
    proc, url = start_server("--max-output-mb", "1", "--workdir", str(work))
    try:
        code, body = call(f"{url}/api/jobs?demo=1", method="POST")
        job = json.loads(body)["id"]
        status = wait_for(url, job)
    finally:
        stop_server(proc)
    assert status["state"] == "failed", status
    assert status["message"] == ("demo.mp4: its outputs passed this server's budget of 1 MB per job "
                                 "(avrsp serve --max-output-mb)")
    assert not (work / "jobs" / job).exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_a_job_and_removes_the_temporary_folder(tmp_path, signum):
    proc, url = start_server(env={"TMPDIR": str(tmp_path)})
    try:
        assert len(list(tmp_path.glob("avrsp-serve-*"))) == 1
        job = json.loads(call(f"{url}/api/jobs?demo=1", method="POST")[1])["id"]
        wait_for(url, job, ("running",))
        proc.send_signal(signum)
        code = proc.wait(30)
    finally:
        stop_server(proc)
    assert not list(tmp_path.glob("avrsp-serve-*")), "the temporary folder was left behind"
    assert code == 128 + signum  # it exits as the signal asked, once clean


def test_a_dataset_job_holds_one_video_sized_map_at_a_time(tmp_path, monkeypatch):
    """Once the frames are scored, the maps at the video's size are written as they are
    made, not gathered: the job's memory stays far below one such map per frame."""
    import tracemalloc

    import avrsp.evaluate
    from avrsp.evaluate import plan
    from avrsp.predict import Predictor
    from avrsp.serve import Job, dataset_job

    frames, height, width = 24, 360, 640
    write_dataset(tmp_path / "synth", SynthConfig(videos=3, frames=frames, height=height, width=width, seed=2))
    item = plan(tmp_path / "synth" / "stavis", "stavis", "all", [None, None, None])[0]
    score_video = avrsp.evaluate.score_video

    def scored(*args, **kwargs):  # the metrics' own working memory is not what is measured
        record = score_video(*args, **kwargs)
        tracemalloc.reset_peak()
        return record

    monkeypatch.setattr(avrsp.evaluate, "score_video", scored)
    run = dataset_job(Predictor(None, device="cpu", precision="fp32"), item, postprocess=False)
    job = Job("test", "dataset", item.key, tmp_path / "job")
    tracemalloc.start()
    try:
        result = run(job)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["frames"] == frames and (job.folder / "out" / "maps.npz").is_file()
    one_map = height * width * 4
    assert peak < frames // 2 * one_map, f"{peak / one_map:.1f} maps of {height}×{width} held at once"


# ------------------------------------------------------------------ the page, in a real browser

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver; .ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No autoplay flag: the test plays the video muted, as Chromium lets any page do.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1250", "--force-device-scale-factor=1",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # no download: the given driver
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def until(driver, check, seconds=120, what="the page"):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} did not get there; status: {driver.find_element('id', 'status').text!r}, error: "
                f"{driver.find_element('id', 'error').text!r}")


def loaded(driver, element_id):
    """The image's address once it has loaded (which says nothing of whether it is seen)."""
    return driver.execute_script(f"const i = document.getElementById('{element_id}'); "
                                 "return i.complete && i.naturalWidth > 0 ? i.src : null;")


def look(driver, element_id, *, scroll=True, displayed=True) -> np.ndarray:
    """The pixels of the element on a screenshot, once it is checked to be displayed, of a
    real size and inside the window (scrolled into view first unless ``scroll`` is False)."""
    element = driver.find_element("id", element_id)
    if scroll:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});", element)
    if displayed:
        assert element.is_displayed(), f"#{element_id} is not displayed"
    x, y, w, h, width, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); "
        "return [r.left, r.top, r.width, r.height, window.innerWidth, window.innerHeight];", element)
    assert w >= 16 and h >= 16, f"#{element_id} is {w:.0f}×{h:.0f} pixels"
    assert x >= -0.5 and y >= -0.5 and x + w <= width + 0.5 and y + h <= height + 0.5, \
        f"#{element_id} at ({x:.0f}, {y:.0f}), {w:.0f}×{h:.0f}, is not inside the {width}×{height} window"
    shot = np.asarray(Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB"), np.float32)
    return shot[round(y):round(y + h), round(x):round(x + w)]


def seen(driver, element_id, **kwargs) -> np.ndarray:
    """:func:`look`, and what it shows is not one flat colour."""
    pixels = look(driver, element_id, **kwargs)
    assert pixels.std() > 4, f"#{element_id} shows a flat area (pixel std {pixels.std():.1f})"
    return pixels


def set_opacity(driver, value: float) -> None:
    driver.execute_script("const o = document.getElementById('opacity'); o.value = arguments[0]; "
                          "o.dispatchEvent(new Event('input'));", value)


def overlay_seen(driver) -> None:
    """The saliency is seen over the video: the picture changes with the opacity slider."""
    set_opacity(driver, 1.0)
    full = look(driver, "overlay")
    set_opacity(driver, 0.0)
    none = look(driver, "overlay", displayed=False)
    set_opacity(driver, 0.6)
    change = np.abs(full - none).max(axis=2)
    changed = (change > 24).mean()
    assert changed > 0.01, f"the overlay changes {changed:.1%} of the picture"


def scrub(driver, k: int) -> None:
    driver.execute_script("const s = document.getElementById('scrubber'); s.value = arguments[0]; "
                          "s.dispatchEvent(new Event('input'));", k)
    for panel in ("overlay", *PANELS):
        assert f"{k:05d}" in until(driver, lambda panel=panel: loaded(driver, panel), what=panel)


def upload_on_page(driver, path: Path) -> None:
    driver.find_element("id", "file").send_keys(str(path))
    driver.find_element("id", "upload").click()


def wait_done(driver, what: str) -> None:
    until(driver, lambda: driver.find_element("id", "status").text == "done", what=what)


def test_the_page_plays_scrubs_and_scores_in_a_browser(server, browser, tmp_path):
    url, _ = server
    d = browser
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    d.get(url)
    assert "avrsp" in d.title and "built-in avrsp_tiny" in d.find_element("id", "model").text
    # Upload the demo clip, under a name that is not Latin-1, as a user would: the file chooser, then Predict.
    clip = tmp_path / "видео 日本.mp4"
    shutil.copyfile(demo_video(), clip)
    upload_on_page(d, clip)
    wait_done(d, "the upload")
    assert d.find_element("id", "error").text == "" and d.find_element("id", "title").text == clip.name
    ready = until(d, lambda: d.execute_script("const v = document.getElementById('video'); "
                                              "return v.readyState >= 2 ? [v.duration, v.videoWidth] : null;"))
    assert ready[0] > 6 and ready[1] == 256
    # The video, the saliency over it and every panel are seen.
    set_opacity(d, 0.0)
    seen(d, "video")
    set_opacity(d, 0.6)
    overlay_seen(d)
    for panel in PANELS:
        seen(d, panel)
    # It plays (muted: what a browser lets a page start without a click): time moves and the page follows.
    assert d.execute_async_script(
        "const done = arguments[arguments.length - 1], v = document.getElementById('video'); v.muted = true; "
        "v.play().then(() => done('playing'), (e) => done(e.name + ': ' + e.message));") == "playing"
    probe = ("const v = document.getElementById('video'); return [v.currentTime, v.paused, v.webkitDecodedFrameCount, "
             "Number(document.getElementById('frame-no').textContent)];")
    t0, _, decoded0, frame0 = d.execute_script(probe)
    time.sleep(1.0)
    t1, paused, decoded1, frame1 = d.execute_script(probe)
    d.execute_script("document.getElementById('video').pause();")
    assert not paused and t1 - t0 > 0.5 and decoded1 > decoded0 and frame1 > frame0, (t0, t1, decoded1, frame1)
    # Scrub to frame 40: every panel shows frame 40, and is seen. A Ret panel is only checked
    # to be shown: on the video's one grey scale a frame's Ret map may be near uniform (the
    # model's output, not the page's); what it shows is test_the_ret_images_of_frame_k_…'s.
    scrub(d, 40)
    assert d.find_element("id", "frame-no").text == "40"
    # Frame 40 of a 15 fps clip starts at 39/15 s; 0.1 s is within that frame and a half.
    assert abs(d.execute_script("return document.getElementById('video').currentTime;") - 39 / 15) < 0.1
    for panel in PANELS:
        (look if panel.startswith("p-ret") else seen)(d, panel)
    d.save_screenshot(str(tmp_path / "upload.png"))
    # The downloads, as the browser saves them: under the file's own name, and each opens.
    links = d.find_elements("css selector", "#downloads a")
    assert len(links) == 3
    for link in links:
        link.click()
    stem = clip.stem
    names = {f"{stem}_maps.zip", f"{stem}_maps.npz", f"{stem}_overlay.mp4"}
    until(d, lambda: {p.name for p in downloads.iterdir()} == names, seconds=30, what="the downloads")
    with zipfile.ZipFile(downloads / f"{stem}_maps.zip") as z:
        assert len(z.namelist()) == 96 and Image.open(BytesIO(z.read(z.namelist()[39]))).size == (256, 144)
    with np.load(downloads / f"{stem}_maps.npz") as z:
        maps = np.stack([z[k] for k in sorted(z.files)])
    assert maps.shape[0] == 96 and maps.dtype == np.float32 and 0 <= maps.min() and maps.max() <= 1 and maps.std() > 0
    with av.open(str(downloads / f"{stem}_overlay.mp4")) as c:
        assert c.streams.audio, "the overlay video has no sound"
        assert sum(1 for _ in c.decode(video=0)) == 96
    # A dataset video: predicted, scored frame by frame, plotted; a worst frame is one click away.
    d.execute_script("document.getElementById('dataset').selectedIndex = 0;")
    d.find_element("id", "evaluate").click()
    until(d, lambda: d.find_element("id", "scores-box").is_displayed() and
          d.find_element("id", "status").text == "done", what="the dataset video")
    scores = d.find_element("id", "scores").text
    assert "CC" in scores and "NSS" in scores and "video mean" in scores
    assert d.execute_script("return document.querySelectorAll('#plot path').length;") == 2
    seen(d, "plot")
    worst = d.find_elements("css selector", "#worst button")
    assert worst
    target = worst[0].get_attribute("data-frame")
    worst[0].click()
    assert d.find_element("id", "frame-no").text == target
    assert target.zfill(5) in until(d, lambda: loaded(d, "p-gt"), what="ground truth")
    seen(d, "p-gt")
    d.execute_script("window.scrollTo(0, 0);")
    d.save_screenshot(str(tmp_path / "dataset.png"))
    if os.environ.get("AVRSP_DOCS_SCREENSHOT"):  # how docs/serve.png is made
        shutil.copyfile(tmp_path / "dataset.png", DOCS_SCREENSHOT)
    # Bad input on the page: one sentence, no stack trace, and no older result under it.
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    upload_on_page(d, bad)
    message = until(d, lambda: d.find_element("id", "error").text, what="the error")
    assert message.startswith("notes.mp4: cannot open") and "Traceback" not in message
    assert not d.find_element("id", "result").is_displayed()


def test_a_portrait_mkv_shows_its_progress_and_its_controls(server, browser, tmp_path):
    url, _ = server
    d = browser
    d.get(url)
    clip = write_clip(tmp_path / "portrait.mkv", 144, 256, 150)  # Matroska stores no frame count
    upload_on_page(d, clip)
    # The bar is not full while the frames are still being predicted.
    state = until(d, lambda: d.execute_script(
        "const p = document.getElementById('progress'), m = /^predicting: frame (\\d+)/.exec("
        "document.getElementById('status').textContent); return m && m[1] > 0 ? [p.position, m[1]] : null;"),
        what="the prediction")
    assert state[0] < 1, f"the progress bar is full at frame {state[1]}"
    wait_done(d, "the upload")
    # With the result at the top of the window, the video and its controls fit in it.
    d.execute_script("document.getElementById('result').scrollIntoView();")
    for element in ("video", "opacity", "scrubber"):
        look(d, element, scroll=False)
    set_opacity(d, 0.0)
    seen(d, "video", scroll=False)
    video, overlay = (d.find_element("id", e).rect for e in ("video", "overlay"))
    # One pixel: the layout rounds fractional CSS sizes.
    assert all(abs(video[k] - overlay[k]) <= 1 for k in ("x", "y", "width", "height")), (video, overlay)
    assert video["height"] > video["width"]


def test_the_visibility_check_fails_on_a_page_that_hides_them(browser, tmp_path):
    """A copy of the page that hides the video, the overlay and the panels by CSS, each
    in a way an earlier check let through, fails :func:`seen`."""
    d = browser
    hidden = "#video { visibility: hidden } #overlay { opacity: 0 !important } .panel img { filter: opacity(0) }"
    package = tmp_path / "copy" / "avrsp"
    shutil.copytree(Path(avrsp.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    page = package / "web" / "index.html"
    page.write_text(page.read_text().replace("</head>", f"<style>{hidden}</style>\n</head>"))
    path = os.pathsep.join([str(tmp_path / "copy"), os.environ.get("PYTHONPATH", "")])
    proc, url = start_server("--workdir", str(tmp_path / "work"), env={"PYTHONPATH": path})
    try:
        d.get(url)
        assert hidden in d.page_source
        upload_on_page(d, demo_video())
        wait_done(d, "the upload")
        scrub(d, 40)  # every image has loaded: a check of naturalWidth passes
        with pytest.raises(AssertionError, match="#video is not displayed"):
            seen(d, "video")
        with pytest.raises(AssertionError, match="#overlay is not displayed"):
            overlay_seen(d)
        for panel in PANELS:
            with pytest.raises(AssertionError, match=f"#{panel} shows a flat area"):
                seen(d, panel)
    finally:
        stop_server(proc)
