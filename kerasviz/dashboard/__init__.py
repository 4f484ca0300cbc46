"""An interactive dashboard to explore a model in the browser: ``kerasviz.dashboard(model, images)``.

The page lets you pick or upload an image and a layer (with output shapes and receptive
fields), see feature maps, top channels and filter weights, click a unit to see its exact
receptive field and a pattern that maximizes it, compare every CAM method under both
projections with saliency, SmoothGrad and integrated gradients, watch a feature inversion
converge with SSIM and PSNR, and compare two images or two layers side by side.

- :mod:`~kerasviz.dashboard.explorer`: the model work, one method per request kind (no web
  framework);
- :mod:`~kerasviz.dashboard.jobs`: the fair model lock and the background job thread;
- :mod:`~kerasviz.dashboard.images`: upload decoding with limits, fitting, PNG data URLs;
- :mod:`~kerasviz.dashboard.server`: the Starlette app and the uvicorn runner;
- ``static/``: the page (one HTML file, vanilla JavaScript and CSS, served locally).

Serving is an optional extra: ``pip install 'kerasviz[dashboard]'`` (Starlette and uvicorn).
``import kerasviz`` and this package's import never load them; :func:`dashboard` does.
The module itself is callable: ``kerasviz.dashboard(model, images)`` is :func:`dashboard`.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8765
EXTRA_HINT = "the dashboard needs its optional extra: pip install 'kerasviz[dashboard]'"


def _server_module():
    try:
        from kerasviz.dashboard import server
    except ImportError as error:
        raise ImportError(f"{EXTRA_HINT} ({error})") from error
    return server


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def dashboard(
    model: Any,
    images: Any = None,
    *,
    names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Any = "scale01",
    size: tuple[int, int] = (224, 224),
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    warm_up: bool = True,
    display: bool | None = None,
    height: int = 900,
    max_upload_bytes: int | None = None,
    max_pixels: int | None = None,
) -> Any:
    """Serves the interactive dashboard for ``model`` on ``images`` from a background thread.

    In Jupyter the page is shown inline (an IFrame). Stop the server with ``.stop()``, or use
    the returned object as a context manager.

    Args:
        model: a Keras image classifier (Sequential or functional, nested models included),
            a list of them, or a ``{name: model}`` mapping. Never modified.
        images: images to pick from: uint8 ``(n, h, w, c)`` or floats in [0, 1], one image,
            a list of arrays of any sizes, or image file paths (PNG, JPEG, ...). Each is
            centre-cropped to the model's aspect ratio and resized to its input. None: upload
            them in the page.
        names: one label per image (default: file names or ``image 0``, ...).
        class_names: one name per class (the same for every model).
        preprocess: how 0..255 pixels become model inputs: ``"scale01"`` (x / 255, default),
            ``"none"``, a ``keras.applications`` module name (``"resnet50"``) or an affine
            function of float images.
        size: ``(height, width)`` for models whose input size is not fixed.
        host: the interface to bind; anything but 127.0.0.1/localhost lets anyone who can
            reach the port run the model (a warning is printed).
        port: the TCP port; 0 picks a free one.
        warm_up: trace the quick requests in the background right away, so the first clicks
            answer fast.
        display: show the page inline (None: when running in a Jupyter kernel).
        height: the inline frame's height in pixels.
        max_upload_bytes: upload size limit (default 20 MB).
        max_pixels: decoded pixel limit of an upload (default 40 million).

    Returns:
        A running :class:`~kerasviz.dashboard.server.Dashboard` with ``url`` and ``stop()``.

    Raises:
        ImportError: the ``dashboard`` extra is not installed.
        OSError: the port is in use (the message names it).
        ValueError: a model without one image input and one class output, or a bad image.

    Example:
        >>> board = kerasviz.dashboard(model, images, class_names=["cat", "dog"])
        >>> board.url
        'http://127.0.0.1:8765/'
        >>> board.stop()
    """
    server = _server_module()
    from kerasviz.dashboard.explorer import make_explorer

    sock = server.bind(host, port)  # first: a busy port fails before any model work
    try:
        explorer = make_explorer(
            model,
            images,
            names=names,
            class_names=class_names,
            preprocess=preprocess,
            size=size,
            max_upload_bytes=max_upload_bytes,
            max_pixels=max_pixels,
        )
    except BaseException:
        sock.close()
        raise
    if host not in server.LOCAL_HOSTS:
        warn_public(host, sock.getsockname()[1])
    app = server.create_app(explorer, allowed_hosts=server.hosts_for(host))
    board = server.Dashboard(app, host, sock)
    if warm_up:
        explorer.warm_up()
    if display if display is not None else _in_notebook():
        from IPython.display import IFrame
        from IPython.display import display as show

        show(IFrame(board.url, width="100%", height=height))
    return board


def warn_public(host: str, port: int) -> None:
    """The warning printed when the server listens beyond this machine."""
    print(
        f"kerasviz: warning: serving on {host}:{port}: anyone who can reach this port can run "
        "the model, upload images and use this machine's CPU/GPU. Bind 127.0.0.1 (the default) "
        "unless you trust the network.",
        file=sys.stderr,
        flush=True,
    )


def read_image_files(paths: Sequence[str | Path]) -> list[tuple[str, Any]]:
    """``(file name, uint8 pixels)`` of image files, decoded by PIL (any format it reads).

    Raises:
        ValueError: a missing or unreadable file, named.
    """
    import numpy as np
    from PIL import Image

    out = []
    for path in map(Path, paths):
        try:
            with Image.open(path) as image:
                image.draft("RGB", (1024, 1024))
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Expected a readable image file. Received: {path} ({error})."
            ) from None
        out.append((path.name, pixels))
    return out


def as_models(model: Any) -> list[tuple[str, Any]]:
    """``(name, model)`` pairs from one model, a list, or a mapping."""
    if isinstance(model, Mapping):
        return [(str(k), v) for k, v in model.items()]
    if isinstance(model, list | tuple):
        return [(getattr(m, "name", f"model {i}"), m) for i, m in enumerate(model)]
    return [(getattr(model, "name", "model"), model)]


class _CallableModule(types.ModuleType):
    """Makes ``kerasviz.dashboard(...)`` call :func:`dashboard` (the module is also a namespace)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return dashboard(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def __getattr__(name: str) -> Any:
    if name == "Dashboard":
        return _server_module().Dashboard
    raise AttributeError(f"module 'kerasviz.dashboard' has no attribute {name!r}")


__all__ = ["Dashboard", "dashboard"]
