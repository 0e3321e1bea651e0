"""``avrsp serve``'s application: a local web page to look at saliency, frame by frame.

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
import ipaddress
import json
import re
import secrets
import shutil
import tempfile
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import quote, unquote, urlsplit

from ..config import ConfigError
from .jobs import Job, JobCancelled, Jobs, QueueFull, one_line
from .outputs import dataset_job, frame_number, served_file, video_job

#: Uploads received at once; more are refused (HTTP 503) before their bodies are stored.
MAX_ARRIVING = 10
#: An uploaded file's name is cut to this many bytes of UTF-8, its extension kept: file
#: systems allow 255, and a download's name adds a suffix to it.
MAX_NAME_BYTES = 150


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
        from starlette.routing import Route
    except ImportError:
        raise ConfigError("avrsp serve needs its extra: pip install 'avrsp[serve]'") from None
    from ..predict import Predictor

    for flag, value in (("--max-upload-mb", max_upload_mb), ("--max-output-mb", max_output_mb),
                        ("--upload-timeout", upload_timeout)):
        if not value > 0:
            raise ConfigError(f"{flag} {value:g}: must be positive")
    predictor = Predictor(checkpoint, runtime=runtime)
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="avrsp-serve-"))
    page = Page(predictor, checkpoint, _test_videos(data), Jobs(root / "jobs", budget_mb=max_output_mb),
                root / "uploads", max_upload_mb, upload_timeout)
    routes = [Route("/", page.index), Route("/api/jobs", page.create_job, methods=["POST"]),
              Route("/api/jobs/{id}", page.job_status), Route("/api/jobs/{id}/cancel", page.cancel, methods=["POST"]),
              Route("/api/jobs/{id}/files/{name:path}", page.job_file),
              Route("/api/data", page.data_list), Route("/api/data/jobs", page.data_job, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={404: page.not_found, 405: page.not_found, 500: page.not_found},
                    middleware=[Middleware(SameOrigin, loopback=_is_loopback(host))])
    app.state.jobs, app.state.root = page.jobs, root
    return app


def _test_videos(data: Path | None) -> dict:
    """``--data``'s test videos by "<dataset>/<video>" (DHF1K's validation set, or every
    split's test videos of a STAViS layout)."""
    if data is None:
        return {}
    from ..data.datasets import DataError, dhf1k_layout
    from ..evaluate import EvalError, plan

    try:
        dataset = "DHF1K" if dhf1k_layout(data) else "stavis"
        found = plan(Path(data), dataset, "1", [None]) if dataset == "DHF1K" else \
            plan(Path(data), dataset, "all", [None, None, None])
    except (EvalError, DataError) as e:
        raise ConfigError(f"--data {data}: {one_line(e)}") from None
    items = {}
    for item in found:
        items.setdefault(f"{item.dataset}/{item.video.name}", item)
    return items


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _no_body(request):
    """POSTs without a body: refused with a type only another site's form would send."""
    media = _media_type(request)
    if media in ("", "application/json"):
        return None
    return _error(415, f"{request.url.path}: expected no body, not {media}")


class Page:
    """The page's routes (one method each) and what they share: the model, the jobs, the
    test videos of ``--data``, where uploads arrive and their limits. The handlers share
    one event loop, so ``arriving`` needs no lock."""

    def __init__(self, predictor, checkpoint: Path | None, items: dict, jobs: Jobs, uploads: Path,
                 max_upload_mb: float, upload_timeout: float):
        from ..predict import built_in_notice

        self.predictor, self.items, self.jobs, self.uploads = predictor, items, jobs, uploads
        self.max_upload_mb, self.limit, self.upload_timeout = max_upload_mb, int(max_upload_mb * 2**20), upload_timeout
        self.model_line = (built_in_notice() if checkpoint is None
                           else f"model: {Path(checkpoint).name} ({predictor.config.name})")
        self.html = (resources.files("avrsp") / "web" / "index.html").read_text()
        self.arriving = 0  # uploads whose bodies are being received
        uploads.mkdir(parents=True, exist_ok=True)

    async def index(self, request):
        from starlette.responses import HTMLResponse

        from ..models import has_relevance

        config = {"model": self.model_line, "max_upload_mb": self.max_upload_mb, "data": bool(self.items),
                  "relevance": has_relevance(self.predictor.config)}
        return HTMLResponse(self.html.replace("/*AVRSP_CONFIG*/{}", json.dumps(config)))

    async def create_job(self, request):
        demo = request.query_params.get("demo")
        if demo is not None:
            return self._demo_job(request, demo)
        media = _media_type(request)
        if media != "application/octet-stream" and not media.startswith("video/"):
            return _error(415, f"a video is sent as the body with Content-Type application/octet-stream, "
                               f"not {media or 'none'}")
        try:
            name = _upload_name(request.headers.get("x-filename"))
        except ValueError as e:
            return _error(400, str(e))
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > self.limit:
            return _error(413, f"{name}: {int(declared) / 2**20:.0f} MB is over this server's limit of "
                               f"{self.max_upload_mb:g} MB (avrsp serve --max-upload-mb)")
        refused = self.jobs.full()
        if refused:  # before a byte is stored
            return _error(503, refused)
        if self.arriving >= MAX_ARRIVING:
            return _error(503, f"{self.arriving} uploads are arriving already, the most this server receives at "
                               f"once; try again when one has finished")
        self.arriving += 1
        folder = self.uploads / secrets.token_urlsafe(16)
        folder.mkdir()
        kept = False
        try:
            refused = await self._receive(request, folder / name, name)
            if refused:
                return refused
            try:
                run = _upload(folder / name, name, video_job(self.predictor, folder / name, name))
                job = self.jobs.submit("video", name, run, upload=folder)
            except QueueFull as e:
                return _error(503, str(e))
            kept = True
            return _created(job)
        finally:
            self.arriving -= 1
            if not kept:  # a refused, stalled, cut or cancelled upload leaves nothing behind
                shutil.rmtree(folder, ignore_errors=True)

    def _demo_job(self, request, demo: str):
        from ..predict import demo_video

        if demo != "1":
            return _error(400, f"demo={demo}: expected demo=1 (the demo clip), or a video as the body")
        refused = _no_body(request)
        if refused:
            return refused
        try:
            job = self.jobs.submit("video", demo_video().name, video_job(self.predictor, demo_video(),
                                                                         demo_video().name))
        except QueueFull as e:
            return _error(503, str(e))
        return _created(job)

    async def _receive(self, request, path: Path, name: str):
        """The request's body streamed into ``path``; an error response when it is cut,
        stalls, grows over the limit or is empty, else None."""
        from starlette.requests import ClientDisconnect

        size = 0
        chunks = request.stream()
        try:
            with open(path, "wb") as f:
                while True:
                    try:
                        chunk = await asyncio.wait_for(anext(chunks), self.upload_timeout)
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:  # not the built-in TimeoutError before Python 3.11
                        return _error(408, f"{name}: the upload stalled, nothing arrived for "
                                           f"{self.upload_timeout:g} s (avrsp serve --upload-timeout)")
                    size += len(chunk)
                    if size > self.limit:
                        return _error(413, f"{name}: over this server's limit of {self.max_upload_mb:g} MB "
                                           f"(avrsp serve --max-upload-mb)")
                    f.write(chunk)
        except ClientDisconnect:  # nobody is left to read the answer
            return _error(400, f"{name}: the upload was interrupted")
        return _error(400, f"{name}: the file is empty") if size == 0 else None

    async def data_list(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"videos": [{"key": key, "frames": len(item.video), "fps": item.video.fps}
                                        for key, item in sorted(self.items.items())]})

    async def data_job(self, request):
        from ..evaluate import default_postprocess

        if _media_type(request) != "application/json":
            return _error(415, f"expected {{\"key\": \"<dataset>/<video>\"}} as application/json, "
                               f"not {_media_type(request) or 'no type'}")
        try:
            body = await request.json()
        except ValueError:
            body = None
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str):
            return _error(400, "expected {\"key\": \"<dataset>/<video>\"}, the key a string")
        if key not in self.items:
            return _error(404, f"{key}: not a test video of --data")
        item = self.items[key]
        try:
            job = self.jobs.submit("dataset", key, dataset_job(self.predictor, item, default_postprocess(item.dataset)))
        except QueueFull as e:
            return _error(503, str(e))
        return _created(job)

    async def job_status(self, request):
        from starlette.responses import JSONResponse

        found = self.jobs.get(request.path_params["id"])
        if found is None:
            return _error(404, "no such job (it may have expired)")
        return JSONResponse(found[0].status(found[1]))

    async def cancel(self, request):
        from starlette.responses import JSONResponse

        refused = _no_body(request)
        if refused:
            return refused
        found = self.jobs.get(request.path_params["id"])
        if found is None:
            return _error(404, "no such job (it may have expired)")
        self.jobs.cancel(found[0])
        return JSONResponse({"id": found[0].id, "cancelling": True})

    async def job_file(self, request):
        from starlette.responses import FileResponse, Response, StreamingResponse

        found = self.jobs.get(request.path_params["id"])
        name = request.path_params["name"]
        if found is None or found[0].state != "done":
            return _error(404, "no such job, or it has not finished")
        job = found[0]
        try:
            k = frame_number(name)
        except FileNotFoundError:
            return _error(404, f"{name}: no such file")
        n = job.result["frames"]
        if k is not None and not 1 <= k <= n:
            return _error(404, f"{name}: no such frame; this video's frames are 1 to {n}")
        try:
            content, media = served_file(job, name)
        except (FileNotFoundError, KeyError, ValueError):
            return _error(404, f"{name}: no such file")
        download = name in ("overlay.mp4", "maps.zip", "maps.npz")
        headers = {"Content-Disposition": attachment(f"{Path(job.name).stem}_{name}")} if download else {}
        if isinstance(content, Path):
            if not content.is_file():
                return _error(404, f"{name}: no such file")
            return FileResponse(content, media_type=media, headers=headers)
        if isinstance(content, bytes):
            return Response(content, media_type=media, headers=headers)
        return StreamingResponse(content, media_type=media, headers=headers)

    async def not_found(self, request, exc):
        return _error(getattr(exc, "status_code", 500), getattr(exc, "detail", "server error"))


def _created(job: Job):
    from starlette.responses import JSONResponse

    return JSONResponse({"id": job.id}, status_code=201)


def _upload(path: Path, name: str, run: Callable[[Job], dict]) -> Callable[[Job], dict]:
    """``run`` on an uploaded file, its errors naming the file as the user named it (not
    our folder). The upload itself is removed by :class:`Jobs` when the job ends."""
    def wrapped(job: Job) -> dict:
        try:
            return run(job)
        except JobCancelled:
            raise
        except Exception as e:  # noqa: BLE001 - reworded, then handled by Jobs like any failure
            raise RuntimeError(one_line(e).replace(str(path), name)) from None
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
