"""``avrsp serve``: a local web page to look at saliency, frame by frame.

A user uploads a video (or picks the bundled demo clip) and plays it with the predicted
saliency over it, scrubs to any frame and sees the frame, the map and RAVF's Ret_A /
Ret_V maps (Fig. 6) of that frame's window, and downloads the maps and the overlay video.
With ``--data ROOT`` the page also lists the dataset's test videos: it predicts one with
the test protocol, scores every frame as ``avrsp evaluate`` does, plots the scores along
time and jumps to the worst frames.

The stack is Starlette on uvicorn (the ``serve`` extra), with one static page of plain
HTML and JavaScript: no build step, nothing fetched from the internet, and nothing added
to the core install (docs/serve.md says why). Jobs run one at a time on one background
thread, in the order they arrive, each in its own folder under a random 128-bit id that
only its creator is told; nothing lists the jobs, so two users never see each other's
results. Every error reaches the page as one sentence, never a stack trace.

Left running, it stays bounded: uploads are streamed to disk with a size limit and an
idle timeout, at most ``MAX_ARRIVING`` at once, and one that is cut short leaves
nothing; at most ``MAX_WAITING`` jobs wait; each job's outputs have a budget;
``KEEP_RESULTS`` results are kept. Requests that another site's page makes the browser
send are refused (:class:`SameOrigin`). docs/serve.md lists these limits.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from .config import ConfigError

#: Results kept on disk; the oldest are removed beyond this. Only jobs that produced a
#: result count, so failed or cancelled jobs never push anyone's result out.
KEEP_RESULTS = 20
#: Failed and cancelled jobs whose status (one sentence; they keep no files) is still answered.
KEEP_ENDED = 100
#: Jobs that may wait behind the running one; more are refused (HTTP 503).
MAX_WAITING = 10
#: Uploads received at once; more are refused (HTTP 503) before their bodies are stored.
MAX_ARRIVING = 10
#: An uploaded file's name is cut to this many bytes of UTF-8, its extension kept: file
#: systems allow 255, and a download's name adds a suffix to it.
MAX_NAME_BYTES = 150
#: How often a running job measures its folder against the output budget.
BUDGET_CHECK_S = 0.5
#: File names a job folder may serve (everything else is refused, whatever the path says).
_SERVED = {"video.mp4", "overlay.mp4", "maps.npz", "maps.zip"}
_SERVED_DIRS = {"frames": ".jpg", "heat": ".png", "gt": ".png", "ret_a": ".png", "ret_v": ".png"}


class JobCancelled(Exception):
    """Raised inside a job when its user cancelled it."""


class OverBudget(Exception):
    """Raised inside a job whose outputs passed the server's budget per job."""


class QueueFull(Exception):
    """A job refused because the queue is full (or the server is stopping)."""


@dataclass
class Job:
    id: str
    kind: str                   # "video" (an upload or the demo) or "dataset"
    name: str
    folder: Path
    state: str = "queued"       # queued, running, done, failed, cancelled
    done: int = 0
    total: int = 0              # 0 while unknown
    message: str = ""
    result: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: float = 0.0
    budget_mb: float | None = None  # what its folder may hold
    upload: Path | None = None      # the uploaded file's folder, removed when the job ends
    checked: float = 0.0

    def status(self, position: int | None = None) -> dict:
        return {"id": self.id, "kind": self.kind, "name": self.name, "state": self.state, "done": self.done,
                "total": self.total, "message": self.message, "queue_position": position,
                "result": self.result if self.state == "done" else None}

    def tick(self, k: int) -> None:
        self.done = k + 1
        self.check()

    def check(self) -> None:
        """Stop here if the user cancelled the job or its outputs passed the budget."""
        if self.cancel.is_set():
            raise JobCancelled()
        if time.monotonic() - self.checked > BUDGET_CHECK_S:
            self.checked = time.monotonic()
            self.check_budget()

    def check_budget(self) -> None:
        if self.budget_mb is not None and _bytes_under(self.folder) > self.budget_mb * 2**20:
            raise OverBudget(f"{self.name}: its outputs passed this server's budget of {self.budget_mb:g} MB "
                             f"per job (avrsp serve --max-output-mb)")


def _bytes_under(folder: Path) -> int:
    total, todo = 0, [folder]
    while todo:
        try:
            entries = os.scandir(todo.pop())
        except FileNotFoundError:
            continue
        with entries:
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
                    else:
                        total += e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # a temporary file renamed meanwhile
                    pass
    return total


class Jobs:
    """Jobs run one at a time on a background thread, first come first served; at most
    ``max_waiting`` wait."""

    def __init__(self, root: Path, budget_mb: float | None = None, max_waiting: int = MAX_WAITING):
        self.root, self.budget_mb, self.max_waiting = root, budget_mb, max_waiting
        self.jobs: dict[str, Job] = {}
        self.waiting: list[tuple[Job, Callable[[Job], dict]]] = []
        self.lock = threading.Condition()
        self.stopping = False
        self.worker = threading.Thread(target=self._work, name="avrsp-serve-jobs", daemon=True)
        self.worker.start()

    def full(self) -> str | None:
        """Why no job can be queued now, or None."""
        with self.lock:
            if self.stopping:
                return "the server is shutting down"
            if len(self.waiting) >= self.max_waiting:
                return (f"{len(self.waiting)} jobs are waiting already, the most this server queues; "
                        f"try again when one has finished")
        return None

    def submit(self, kind: str, name: str, run: Callable[[Job], dict], upload: Path | None = None) -> Job:
        with self.lock:
            refused = self.full()
            if refused:
                raise QueueFull(refused)
            job_id = secrets.token_urlsafe(16)
            folder = self.root / job_id
            folder.mkdir(parents=True)
            job = Job(job_id, kind, name, folder, budget_mb=self.budget_mb, upload=upload)
            self.jobs[job_id] = job
            self.waiting.append((job, run))
            self.lock.notify()
        return job

    def get(self, job_id: str) -> tuple[Job, int | None] | None:
        with self.lock:
            job = self.jobs.get(job_id)
            position = next((i + 1 for i, (j, _) in enumerate(self.waiting) if j.id == job_id), None)
        return (job, position) if job is not None else None

    def cancel(self, job: Job) -> None:
        """A queued job ends at once (its place is free again); a running one at its next frame."""
        with self.lock:
            job.cancel.set()
            queued = next((i for i, (j, _) in enumerate(self.waiting) if j is job), None)
            if queued is None:
                return
            del self.waiting[queued]
            gone = self._end(job, "cancelled", "cancelled")
        _remove(gone)

    def stop(self, seconds: float) -> None:
        """Cancel every job, and wait up to ``seconds`` for the running one to stop."""
        gone = []
        with self.lock:
            self.stopping = True
            for job in self.jobs.values():
                job.cancel.set()
            for job, _ in self.waiting:
                gone += self._end(job, "cancelled", "cancelled")
            self.waiting.clear()
            self.lock.notify_all()
        _remove(gone)
        self.worker.join(seconds)

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.stopping:
                    self.lock.wait()
                if self.stopping:
                    return
                job, run = self.waiting.pop(0)
                job.state = "running"
            result, message = {}, ""
            try:
                result, state = run(job), "done"
            except JobCancelled:
                state, message = "cancelled", "cancelled"
            except Exception as e:  # noqa: BLE001 - any failure is the job's, told to its page
                state, message = "failed", _one_line(e)
            with self.lock:
                gone = self._end(job, state, message, result)
            _remove(gone)

    def _end(self, job: Job, state: str, message: str, result: dict | None = None) -> list[Path]:
        """Record how ``job`` ended and forget what is beyond the limits; under the lock.
        Returns the folders to remove (outside the lock: a large one takes a while)."""
        job.result, job.message, job.finished = result or {}, message, time.time()
        job.state = state
        gone = [job.upload] if job.upload is not None else []
        if state != "done":
            gone.append(job.folder)
        results = sorted((j for j in self.jobs.values() if j.state == "done"), key=lambda j: j.finished)
        for old in results[:-KEEP_RESULTS]:
            gone.append(old.folder)
            del self.jobs[old.id]
        ended = sorted((j for j in self.jobs.values() if j.state in ("failed", "cancelled")), key=lambda j: j.finished)
        for old in ended[:-KEEP_ENDED]:
            del self.jobs[old.id]
        return gone


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ------------------------------------------------------------------ what a job computes

def _scale(values: list[np.ndarray]) -> tuple[float, float]:
    """One grey scale for a whole video's Ret maps, so brightness compares across frames."""
    if not values:
        return 0.0, 1.0
    lo, hi = float(min(v.min() for v in values)), float(max(v.max() for v in values))
    return lo, hi if hi > lo else lo + 1.0


def stored_size(shape: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) at which maps.npz keeps a map of ``shape``: the video's aspect,
    scaled down until it just covers the model's input ``grid`` (never up). The model sees
    its frames at that grid, so a larger float map holds no more of what it predicted and
    only makes the file grow with the video's resolution."""
    h, w = shape
    scale = min(1.0, max(grid[0] / h, grid[1] / w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def video_job(predictor, video: Path, name: str) -> Callable[[Job], dict]:
    """Predict ``video`` (an upload or the demo clip, ``name`` as its user named it) into
    the job's folder."""
    from .media import probe, resize_map
    from .predict import NpzWriter, predict_to_folder

    def run(job: Job) -> dict:
        info = probe(video)
        # Matroska and some other containers store no frame count; their duration tells it.
        job.total = info.frames or round(info.duration * info.fps)
        out = job.folder / "out"
        grid = (predictor.config.height, predictor.config.width)
        archive = NpzWriter(job.folder / "maps.npz")

        def rows():
            for k, (m, ret_a, ret_v) in enumerate(predictor.predict_video_with_relevance(video)):
                archive.add(k, resize_map(m, stored_size(m.shape, grid)))
                yield m, ret_a, ret_v

        try:
            predict_to_folder(predictor, video, out, npz=False, overlay_video=True, progress=False, frames=True,
                              relevance=True, display_video=True, on_frame=job.tick, rows=rows())
            archive.close()
        except BaseException:
            archive.abort()
            raise
        (job.folder / "maps.npz").replace(out / "maps.npz")
        (out / f"{video.stem}_saliency.mp4").replace(out / "overlay.mp4")
        job.check_budget()
        n = len(list((out / "maps").glob("*.png")))
        return {"frames": n, "fps": info.fps or 25.0, "width": info.width, "height": info.height,
                "relevance": (out / "relevance.npz").is_file(), "ground_truth": False,
                "audio": info.audio_rate is not None, "name": name}

    return run


def dataset_job(predictor, item, postprocess: bool) -> Callable[[Job], dict]:
    """Predict one test video of ``--data`` with the test protocol and score every frame
    exactly as ``avrsp evaluate`` does. The model's maps are kept for scoring, as
    ``evaluate`` keeps them; the video-sized maps are written one frame at a time."""
    from .evaluate import score_video
    from .inference import predict_frames_with_relevance
    from .media import resize_map, write_map_png
    from .predict import OverlayWriter, NpzWriter, save_thumbnail, thumbnail_size

    def run(job: Job) -> dict:
        video = item.video
        n = len(video)
        job.total = n
        out = job.folder / "out"
        for d in ("frames", "maps", "gt"):
            (out / d).mkdir(parents=True, exist_ok=True)
        first = video.frame(0)
        h, w = first.shape[:2]
        thumb = thumbnail_size(w, h)
        model = predictor.model
        stored = stored_size((h, w), (model.config.height, model.config.width))
        preds, rets = [], []
        for k, m, ret_a, ret_v in predict_frames_with_relevance(
                model, video.frames, n, video.fps, video.audio if model.config.audio else None, batch=predictor.batch,
                streams=predictor.streams):
            preds.append(m)
            rets.append((ret_a, ret_v))
            job.tick(k)
        job.message = "scoring"
        record = score_video(video, lambda k: preds[k].astype(np.float64), postprocess=postprocess)
        job.message = "writing"
        wav = video.audio_path if video.audio is not None else None  # a broken track: no sound, as for the model
        writer = OverlayWriter(out / "video.mp4", wav, video.fps, w, h)
        archive = NpzWriter(out / "maps.npz")
        try:
            for k in range(n):
                job.check()
                frame = video.frame(k)
                writer.add(frame)
                save_thumbnail(frame, thumb, out / "frames" / f"{k + 1:05d}.jpg")
                write_map_png(out / "maps" / f"{k + 1:05d}.png", np.clip(resize_map(preds[k], (h, w)), 0, 1))
                archive.add(k, np.clip(resize_map(preds[k], stored), 0, 1))
                gt = video.saliency_map(k)
                if gt is not None:
                    write_map_png(out / "gt" / f"{k + 1:05d}.png", gt)
            writer.close()
            archive.close()
        except BaseException:
            writer.abort()
            archive.abort()
            raise
        if rets and rets[0][0] is not None:
            np.savez(out / "relevance.npz", ret_a=np.stack([a for a, _ in rets]), ret_v=np.stack([v for _, v in rets]))
        job.check_budget()
        per_frame = record["per_frame"]
        return {"frames": n, "fps": video.fps, "width": w, "height": h, "relevance": rets[0][0] is not None,
                "ground_truth": True, "audio": wav is not None, "name": f"{item.dataset}/{video.name}",
                "scores": {m: per_frame[m] for m in ("cc", "nss", "sim", "auc_j", "kld")},
                "means": record["mean"], "postprocess": postprocess}

    return run


# ------------------------------------------------------------------ files a job serves

def _job_file(job: Job, name: str) -> tuple[bytes | Path | Iterator[bytes], str]:
    """The content (bytes, a file, or chunks) and media type of ``name`` in ``job``'s outputs."""
    from PIL import Image

    from .predict import colormap

    out = job.folder / "out"
    if name in ("video.mp4", "overlay.mp4"):
        return out / name, "video/mp4"
    if name == "maps.npz":
        return out / "maps.npz", "application/octet-stream"
    if name == "maps.zip":
        return _zip_stream([(p, f"maps/{p.name}") for p in sorted((out / "maps").glob("*.png"))]), "application/zip"
    folder, _, file = name.partition("/")
    k = int(file.split(".")[0])
    if folder == "frames":
        return out / "frames" / f"{k:05d}.jpg", "image/jpeg"
    if folder in ("heat", "gt"):
        src = out / ("maps" if folder == "heat" else "gt") / f"{k:05d}.png"
        if not src.is_file():
            raise FileNotFoundError(name)
        m = np.asarray(Image.open(src), np.float32) / 255
        scaled = m / max(float(m.max()), 1e-8)
        rgba = np.dstack([colormap(scaled), np.round(scaled * 255).astype(np.uint8)])  # see-through where cool
        return _png(rgba), "image/png"
    if folder in ("ret_a", "ret_v"):
        with np.load(out / "relevance.npz") as z:
            maps = z[folder]
            lo, hi = _scale([maps])
            m = (maps[k - 1] - lo) / (hi - lo)
        return _png(np.round(np.clip(m, 0, 1) * 255).astype(np.uint8)), "image/png"
    raise FileNotFoundError(name)


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are taken as they arrive."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _zip_stream(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    """A zip of ``files`` (path, name inside) sent as it is written: a long video's maps
    never sit in memory whole."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as z:  # PNGs are compressed already
        for path, arcname in files:
            z.write(path, arcname)
            yield sink.take()
    yield sink.take()


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _frame_number(name: str) -> int | None:
    """The frame a per-frame file names (``heat/00040.png``: 40), None for other files;
    raises FileNotFoundError for names no job serves."""
    if name in _SERVED:
        return None
    folder, sep, file = name.partition("/")
    suffix = _SERVED_DIRS.get(folder)
    if not sep or suffix is None or not re.fullmatch(r"[0-9]{1,9}" + re.escape(suffix), file):
        raise FileNotFoundError(name)
    return int(file[: -len(suffix)])


# ------------------------------------------------------------------ names

def clean_name(raw: str) -> str:
    """``raw`` as a file name safe to store and to show: its last path part, without
    control or formatting characters and leading dots, cut to MAX_NAME_BYTES of UTF-8
    with its extension kept; "upload" when nothing is left."""
    name = re.split(r"[/\\]", unicodedata.normalize("NFC", raw))[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp"))
    name = name.strip().lstrip(". ")
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,10}", suffix):
        suffix = "." + suffix
    else:
        stem, suffix = name, ""
    stem = stem.encode()[: MAX_NAME_BYTES - len(suffix)].decode("utf-8", "ignore").rstrip(" .")
    return (stem or "upload") + suffix


def _upload_name(header: str | None) -> str:
    """The uploaded file's name from ``X-Filename``: percent-encoded UTF-8, as the page
    sends it (raw UTF-8 bytes are understood too), cleaned by :func:`clean_name`."""
    if header is None:
        return "upload.mp4"
    try:  # HTTP headers arrive decoded as Latin-1: back to their bytes, then UTF-8
        return clean_name(unquote(header.encode("latin-1").decode("utf-8"), errors="strict"))
    except UnicodeError:
        raise ValueError("X-Filename: the name is not UTF-8; send it percent-encoded "
                         "(JavaScript's encodeURIComponent)") from None


def attachment(filename: str) -> str:
    """Content-Disposition for a download named ``filename`` (RFC 6266): the UTF-8 name in
    ``filename*`` (RFC 5987) and an ASCII stand-in for clients that do not read it."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


# ------------------------------------------------------------------ requests from elsewhere

def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class SameOrigin:
    """Refuses what a page of another site can make the user's browser send. On a
    loopback address every request must name a loopback Host (another site's name that
    resolves to 127.0.0.1, DNS rebinding, is refused; the port is not checked, so an SSH
    tunnel on another port still works). A POST that carries an Origin must come from the
    page's own origin; clients that are not browsers send none."""

    def __init__(self, app, loopback: bool):
        self.app, self.loopback = app, loopback

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            host = headers.get("host", "")
            refused = None
            if self.loopback and host and not _is_loopback(re.sub(r":[0-9]*$", "", host)):
                refused = 400, (f"Host {host}: this server answers to localhost and 127.0.0.1 only "
                                f"(avrsp serve --host shares it on a network)")
            elif scope["method"] not in ("GET", "HEAD") and "origin" in headers:
                origin = urlsplit(headers["origin"])
                if origin.scheme not in ("http", "https") or origin.netloc.lower() != host.lower():
                    refused = 403, (f"a page of {headers['origin']} may not send requests to this server; "
                                    f"only its own page may")
            if refused:
                from starlette.responses import JSONResponse

                await JSONResponse({"error": refused[1]}, status_code=refused[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _media_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


# ------------------------------------------------------------------ the app

def create_app(checkpoint: Path | None = None, data: Path | None = None, *, workdir: Path | None = None,
               max_upload_mb: float = 500.0, max_output_mb: float = 2000.0, upload_timeout: float = 30.0,
               host: str = "127.0.0.1", runtime=None):
    """The Starlette application (also what the tests drive). ``host`` is the address it
    is served on: a loopback one makes it refuse other Host names (:class:`SameOrigin`).
    ``runtime``: where and how the model runs (:class:`avrsp.runtime.Runtime`)."""
    try:
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.requests import ClientDisconnect, Request
        from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError:
        raise ConfigError("avrsp serve needs its extra: pip install 'avrsp[serve]'") from None
    from .evaluate import EvalError, default_postprocess, plan
    from .models import has_relevance
    from .predict import Predictor, built_in_notice, demo_video

    for flag, value in (("--max-upload-mb", max_upload_mb), ("--max-output-mb", max_output_mb),
                        ("--upload-timeout", upload_timeout)):
        if not value > 0:
            raise ConfigError(f"{flag} {value:g}: must be positive")
    predictor = Predictor(checkpoint, runtime=runtime)
    model_line = (built_in_notice() if checkpoint is None
                  else f"model: {Path(checkpoint).name} ({predictor.config.name})")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="avrsp-serve-"))
    jobs = Jobs(root / "jobs", budget_mb=max_output_mb)
    uploads = root / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    limit = int(max_upload_mb * 2**20)

    items = {}
    if data is not None:
        from .data.datasets import DataError, dhf1k_layout

        try:
            dataset = "DHF1K" if dhf1k_layout(data) else "stavis"
            found = plan(Path(data), dataset, "1", [None]) if dataset == "DHF1K" else \
                plan(Path(data), dataset, "all", [None, None, None])
        except EvalError as e:
            raise ConfigError(f"--data {data}: {_one_line(e)}") from None
        except DataError as e:
            raise ConfigError(f"--data {data}: {_one_line(e)}") from None
        for item in found:
            items.setdefault(f"{item.dataset}/{item.video.name}", item)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def no_body(request: Request) -> JSONResponse | None:
        """POSTs without a body: refused with a type only another site's form would send."""
        media = _media_type(request)
        if media in ("", "application/json"):
            return None
        return error(415, f"{request.url.path}: expected no body, not {media}")

    page = (resources.files("avrsp") / "web" / "index.html").read_text()

    async def index(request: Request):
        config = {"model": model_line, "max_upload_mb": max_upload_mb, "data": bool(items),
                  "relevance": has_relevance(predictor.config)}
        return HTMLResponse(page.replace("/*AVRSP_CONFIG*/{}", json.dumps(config)))

    arriving = 0  # uploads whose bodies are being received (handlers share one event loop)

    async def create_job(request: Request):
        nonlocal arriving
        demo = request.query_params.get("demo")
        if demo is not None:
            if demo != "1":
                return error(400, f"demo={demo}: expected demo=1 (the demo clip), or a video as the body")
            refused = no_body(request)
            if refused:
                return refused
            try:
                job = jobs.submit("video", demo_video().name, video_job(predictor, demo_video(), demo_video().name))
            except QueueFull as e:
                return error(503, str(e))
            return JSONResponse({"id": job.id}, status_code=201)
        media = _media_type(request)
        if media != "application/octet-stream" and not media.startswith("video/"):
            return error(415, f"a video is sent as the body with Content-Type application/octet-stream, "
                              f"not {media or 'none'}")
        try:
            name = _upload_name(request.headers.get("x-filename"))
        except ValueError as e:
            return error(400, str(e))
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > limit:
            return error(413, f"{name}: {int(declared) / 2**20:.0f} MB is over this server's limit of "
                              f"{max_upload_mb:g} MB (avrsp serve --max-upload-mb)")
        refused = jobs.full()
        if refused:  # before a byte is stored
            return error(503, refused)
        if arriving >= MAX_ARRIVING:
            return error(503, f"{arriving} uploads are arriving already, the most this server receives at once; "
                              f"try again when one has finished")
        arriving += 1
        folder = uploads / secrets.token_urlsafe(16)
        folder.mkdir()
        kept = False
        try:
            size = 0
            chunks = request.stream()
            with open(folder / name, "wb") as f:
                while True:
                    try:
                        chunk = await asyncio.wait_for(anext(chunks), upload_timeout)
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:  # not the built-in TimeoutError before Python 3.11
                        return error(408, f"{name}: the upload stalled, nothing arrived for "
                                          f"{upload_timeout:g} s (avrsp serve --upload-timeout)")
                    size += len(chunk)
                    if size > limit:
                        return error(413, f"{name}: over this server's limit of {max_upload_mb:g} MB "
                                          f"(avrsp serve --max-upload-mb)")
                    f.write(chunk)
            if size == 0:
                return error(400, f"{name}: the file is empty")
            try:
                run = _upload(folder / name, name, video_job(predictor, folder / name, name))
                job = jobs.submit("video", name, run, upload=folder)
            except QueueFull as e:
                return error(503, str(e))
            kept = True
            return JSONResponse({"id": job.id}, status_code=201)
        except ClientDisconnect:  # nobody is left to read the answer
            return error(400, f"{name}: the upload was interrupted")
        finally:
            arriving -= 1
            if not kept:  # a refused, stalled, cut or cancelled upload leaves nothing behind
                shutil.rmtree(folder, ignore_errors=True)

    async def data_list(request: Request):
        return JSONResponse({"videos": [{"key": key, "frames": len(item.video), "fps": item.video.fps}
                                        for key, item in sorted(items.items())]})

    async def data_job(request: Request):
        if _media_type(request) != "application/json":
            return error(415, f"expected {{\"key\": \"<dataset>/<video>\"}} as application/json, "
                              f"not {_media_type(request) or 'no type'}")
        try:
            body = await request.json()
        except ValueError:
            body = None
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str):
            return error(400, "expected {\"key\": \"<dataset>/<video>\"}, the key a string")
        if key not in items:
            return error(404, f"{key}: not a test video of --data")
        item = items[key]
        try:
            job = jobs.submit("dataset", key, dataset_job(predictor, item, default_postprocess(item.dataset)))
        except QueueFull as e:
            return error(503, str(e))
        return JSONResponse({"id": job.id}, status_code=201)

    async def job_status(request: Request):
        found = jobs.get(request.path_params["id"])
        if found is None:
            return error(404, "no such job (it may have expired)")
        return JSONResponse(found[0].status(found[1]))

    async def cancel(request: Request):
        refused = no_body(request)
        if refused:
            return refused
        found = jobs.get(request.path_params["id"])
        if found is None:
            return error(404, "no such job (it may have expired)")
        jobs.cancel(found[0])
        return JSONResponse({"id": found[0].id, "cancelling": True})

    async def job_file(request: Request):
        found = jobs.get(request.path_params["id"])
        name = request.path_params["name"]
        if found is None or found[0].state != "done":
            return error(404, "no such job, or it has not finished")
        job = found[0]
        try:
            k = _frame_number(name)
        except FileNotFoundError:
            return error(404, f"{name}: no such file")
        n = job.result["frames"]
        if k is not None and not 1 <= k <= n:
            return error(404, f"{name}: no such frame; this video's frames are 1 to {n}")
        try:
            content, media = _job_file(job, name)
        except (FileNotFoundError, KeyError, ValueError):
            return error(404, f"{name}: no such file")
        download = name in ("overlay.mp4", "maps.zip", "maps.npz")
        headers = {"Content-Disposition": attachment(f"{Path(job.name).stem}_{name}")} if download else {}
        if isinstance(content, Path):
            if not content.is_file():
                return error(404, f"{name}: no such file")
            return FileResponse(content, media_type=media, headers=headers)
        if isinstance(content, bytes):
            return Response(content, media_type=media, headers=headers)
        return StreamingResponse(content, media_type=media, headers=headers)

    async def not_found(request: Request, exc):
        return error(getattr(exc, "status_code", 500), getattr(exc, "detail", "server error"))

    routes = [Route("/", index), Route("/api/jobs", create_job, methods=["POST"]),
              Route("/api/jobs/{id}", job_status), Route("/api/jobs/{id}/cancel", cancel, methods=["POST"]),
              Route("/api/jobs/{id}/files/{name:path}", job_file),
              Route("/api/data", data_list), Route("/api/data/jobs", data_job, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found, 500: not_found},
                    middleware=[Middleware(SameOrigin, loopback=_is_loopback(host))])
    app.state.jobs, app.state.root = jobs, root
    return app


def _upload(path: Path, name: str, run: Callable[[Job], dict]) -> Callable[[Job], dict]:
    """``run`` on an uploaded file, its errors naming the file as the user named it (not
    our folder). The upload itself is removed by :class:`Jobs` when the job ends."""
    def wrapped(job: Job) -> dict:
        try:
            return run(job)
        except JobCancelled:
            raise
        except Exception as e:  # noqa: BLE001 - reworded, then handled by Jobs like any failure
            raise RuntimeError(_one_line(e).replace(str(path), name)) from None
    return wrapped


def serve(host: str = "127.0.0.1", port: int = 8000, *, workdir: Path | None = None, **kwargs) -> None:
    """Run the page until Ctrl-C, SIGTERM or SIGHUP (its terminal closed); each stops the
    jobs and removes the temporary work folder (not a ``workdir`` given)."""
    import signal

    server = None

    def stop(signum, frame):
        if server is not None and not server.should_exit:
            server.handle_exit(signum, frame)  # a graceful shutdown, as uvicorn's own for SIGINT and SIGTERM
        else:
            raise SystemExit(128 + signum)

    # uvicorn answers SIGINT and SIGTERM itself while it serves, then raises the signal
    # again once it has shut down: this handler turns that into an exit that runs the
    # clean-up below (Python's own would end the process at once on SIGTERM or SIGHUP).
    ours = [getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {s: signal.signal(s, stop) for s in ours}
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="avrsp-serve-"))
    app = None
    try:
        app = create_app(workdir=root, host=host, **kwargs)
        import uvicorn

        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                               timeout_graceful_shutdown=5))
        print(f"avrsp serve: http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
        server.run()
    finally:
        if app is not None:
            app.state.jobs.stop(10.0)
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
