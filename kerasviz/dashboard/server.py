"""The dashboard's web side: a Starlette app over an :class:`~kerasviz.dashboard.explorer.Explorer`,
served by uvicorn on a thread (Python, Jupyter) or in the foreground (``kerasviz serve``).

Routes: ``GET /`` the page; ``GET /static/app.js`` and ``/static/app.css`` its script and style
(from this package, nothing from a CDN); ``GET /api/info``; ``POST /api/upload`` (the file as
the raw body); ``POST /api/predict``, ``/api/features``, ``/api/unit``, ``/api/cam``,
``/api/saliency`` (JSON in, JSON out); ``POST /api/jobs`` to start a long job and ``GET
/api/jobs/{id}?after=N`` to read its new snapshots (the call waits up to ``wait`` seconds for
one, so snapshots arrive as they are taken); ``POST /api/jobs/{id}/cancel``.

Safety: the server binds 127.0.0.1 by default and then answers only requests addressed to a
local host name (no DNS rebinding). API calls must carry a JSON content type or the
``X-Kerasviz`` header, which a foreign web page cannot send without a CORS preflight that this
server never grants. Uploads are capped in bytes (checked while reading) and in pixels.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
import urllib.parse
from importlib import resources
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from kerasviz.dashboard.explorer import Explorer, RequestError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


class PortInUseError(OSError):
    """The port is taken; the message names it."""


def _asset(name: str) -> str:
    return resources.files("kerasviz.dashboard").joinpath("static", name).read_text("utf-8")


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> dict:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RequestError(f"Expected a JSON request (application/json). Received: {kind!r}.", 415)
    try:
        payload = json.loads(await request.body() or b"{}")
    except ValueError:
        raise RequestError("Expected a JSON object in the request body.") from None
    if not isinstance(payload, dict):
        raise RequestError("Expected a JSON object in the request body.")
    return payload


def _take(payload: dict, *names: str, required: tuple[str, ...] = ()) -> dict:
    unknown = sorted(set(payload) - set(names))
    if unknown:
        raise RequestError(f"Expected fields among {list(names)}. Received unknown {unknown}.")
    missing = [n for n in required if n not in payload]
    if missing:
        raise RequestError(f"Expected the fields {missing} in the request.")
    return {k: payload[k] for k in names if k in payload}


def create_app(explorer: Explorer, *, allowed_hosts: list[str] | None = None) -> Starlette:
    """The Starlette app serving ``explorer``.

    Args:
        explorer: the models and images.
        allowed_hosts: host names the app answers to (``Host`` header); None for any host.

    Returns:
        The ASGI app; ``app.state.explorer`` is ``explorer``.
    """
    page = _asset("index.html")
    assets = {name: _asset(name) for name in _STATIC}

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return _error(f"Expected one of {sorted(assets)}. Received: {name!r}.", 404)
        return Response(assets[name], media_type=_STATIC[name])

    async def info(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(explorer.info))

    async def upload(request: Request) -> Response:
        if request.headers.get("x-kerasviz") != "1":
            raise RequestError("Expected the X-Kerasviz header on an upload.", 403)
        limit = explorer.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(
                f"Expected an upload of at most {limit:,} bytes. Received: {int(declared):,} "
                "bytes.",
                413,
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(
                    f"Expected an upload of at most {limit:,} bytes. Received: more.", 413
                )
            chunks.append(chunk)
        name = urllib.parse.unquote(request.headers.get("x-filename", "upload"))
        view = await run_in_threadpool(explorer.add_upload, name, b"".join(chunks))
        return JSONResponse(view)

    def call(method, *names: str, required: tuple[str, ...] = ()):
        async def endpoint(request: Request) -> Response:
            args = _take(await _json(request), *names, required=required)
            return JSONResponse(await run_in_threadpool(method, **args))

        return endpoint

    async def start_job(request: Request) -> Response:
        payload = await _json(request)
        kind = payload.pop("kind", None)
        starters = {
            "invert": (
                explorer.start_inversion,
                ("model", "image", "layer", "steps", "every"),
                ("model", "image", "layer"),
            ),
            "gradients": (
                explorer.start_gradients,
                ("model", "image", "target", "samples", "steps"),
                ("model", "image"),
            ),
        }
        if kind not in starters:
            raise RequestError(f"Expected `kind` in {sorted(starters)}. Received: {kind!r}.")
        method, names, required = starters[kind]
        args = _take(payload, *names, required=required)
        job = await run_in_threadpool(method, **args)
        return JSONResponse({"job": job.id, "kind": job.kind, "total": job.total})

    def _job(request: Request):
        job = explorer.jobs.get(request.path_params["job"])
        if job is None:
            raise RequestError(
                f"No job {request.path_params['job']!r} (finished jobs expire).", 404
            )
        return job

    async def job_state(request: Request) -> Response:
        job = _job(request)
        try:
            after = max(0, int(request.query_params.get("after", "0")))
            wait = min(5.0, max(0.0, float(request.query_params.get("wait", "0"))))
        except ValueError:
            raise RequestError("Expected `after` (int) and `wait` (seconds).") from None
        if wait > 0:
            await run_in_threadpool(job.wait, after, wait)
        return JSONResponse(job.view(after))

    async def job_cancel(request: Request) -> Response:
        if request.headers.get("x-kerasviz") != "1":
            raise RequestError("Expected the X-Kerasviz header.", 403)
        job = _job(request)
        job.cancel()
        return JSONResponse({"job": job.id, "state": job.state})

    async def on_request_error(request: Request, exc: Exception) -> Response:
        return _error(str(exc), getattr(exc, "status", 400))

    async def on_error(request: Request, exc: Exception) -> Response:
        return _error(f"The server failed on this request: {type(exc).__name__}: {exc}", 500)

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/api/info", info),
        Route("/api/upload", upload, methods=["POST"]),
        Route(
            "/api/predict",
            call(explorer.predict, "model", "image", required=("model", "image")),
            methods=["POST"],
        ),
        Route(
            "/api/features",
            call(
                explorer.features,
                "model",
                "image",
                "layer",
                "channels",
                "k",
                required=("model", "image", "layer"),
            ),
            methods=["POST"],
        ),
        Route(
            "/api/unit",
            call(
                explorer.unit,
                "model",
                "image",
                "layer",
                "channel",
                "y",
                "x",
                "steps",
                required=("model", "image", "layer", "channel", "y", "x"),
            ),
            methods=["POST"],
        ),
        Route(
            "/api/cam",
            call(
                explorer.cams,
                "model",
                "image",
                "layer",
                "target",
                "methods",
                required=("model", "image", "layer"),
            ),
            methods=["POST"],
        ),
        Route(
            "/api/saliency",
            call(explorer.saliency, "model", "image", "target", required=("model", "image")),
            methods=["POST"],
        ),
        Route("/api/jobs", start_job, methods=["POST"]),
        Route("/api/jobs/{job}", job_state),
        Route("/api/jobs/{job}/cancel", job_cancel, methods=["POST"]),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        # ValueError covers kerasviz's own argument errors (an unknown layer lists the
        # closest names); they are the user's input, shown in the page.
        exception_handlers={ValueError: on_request_error, Exception: on_error},
    )
    app.state.explorer = explorer
    return app


# ------------------------------------------------------------------------------ serving


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        PortInUseError: the port is taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            busy = PortInUseError(f"port {port} on {host} is already in use; choose another port")
            busy.errno = errno.EADDRINUSE
            raise busy from None
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}/"


def hosts_for(host: str) -> list[str] | None:
    """The ``Host`` names a server bound to ``host`` answers: local names, or any."""
    return list(LOCAL_HOSTS) if host in LOCAL_HOSTS else None


def _server(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )
    return uvicorn.Server(config)


class Dashboard:
    """A running dashboard server: its ``url``, and ``stop()``.

    Returned by :func:`kerasviz.dashboard`. Usable as a context manager, which stops it.
    """

    def __init__(self, app: Starlette, host: str, sock: socket.socket):
        self.app = app
        self.host = host
        self.port = int(sock.getsockname()[1])
        self.url = url_for(host, self.port)
        self._sock = sock
        self._server = _server(app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="kerasviz-dashboard"
        )
        self._thread.daemon = True
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("The dashboard server did not start within 30 s.")
            time.sleep(0.01)

    @property
    def explorer(self) -> Explorer:
        return self.app.state.explorer

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the server and cancels its jobs; safe to call twice."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self.explorer.close()
        self._sock.close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<kerasviz Dashboard {self.url} ({state})>"


def serve_forever(app: Starlette, sock: socket.socket) -> None:
    """Serves in the foreground until Ctrl-C (the CLI)."""
    server = _server(app)
    try:
        server.run(sockets=[sock])
    finally:
        app.state.explorer.close(timeout=30)
        sock.close()
