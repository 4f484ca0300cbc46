"""``kerasviz serve``: the dashboard in the foreground, for a saved model or the demo models.

The port is bound before anything heavy loads, so a port in use is reported at once, in one
line. The URL goes to stdout; progress and warnings to stderr.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kerasviz.cli import (
    DEMO_MODELS,
    PREPROCESS,
    TRAIN_SCRIPT,
    CLIError,
    demo_models_dir,
    expand_images,
    load_model,
    progress,
)
from kerasviz.dashboard import DEFAULT_PORT, EXTRA_HINT, read_image_files, warn_public

DEMO_IMAGES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options."""
    parser.add_argument("model", nargs="?", help="a saved model (.keras or .h5)")
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMAGES",
        help="image files, folders of images, or quoted glob patterns (more can be uploaded)",
    )
    parser.add_argument(
        "--demo", action="store_true", help="serve the two demo models on synthetic shapes"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1: this machine only); anyone who can reach "
        "another interface can run the model",
    )
    parser.add_argument(
        "--preprocess",
        default="scale01",
        choices=PREPROCESS,
        help="maps 0..255 pixels to the model's input (default scale01: x/255)",
    )
    parser.add_argument("--unsafe", action="store_true", help="allow Lambda layers (trusted files)")
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="skip compiling the requests at start (the first clicks are then slower)",
    )


def run(args: argparse.Namespace) -> int:
    """Serves until Ctrl-C; returns the exit status.

    Raises:
        CLIError: the extra is missing, the port is in use, or a model or image is unusable.
    """
    try:
        from kerasviz.dashboard import server
    except ImportError:
        raise CLIError(EXTRA_HINT) from None
    if args.demo and (args.model or args.images):
        raise CLIError("--demo serves the demo models; give no MODEL or IMAGES with it")
    if not args.demo and not args.model:
        raise CLIError("expected a MODEL file, or --demo")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port {args.port} is not a TCP port (0..65535)")
    paths = expand_images(args.images) if args.images else []
    try:
        sock = server.bind(args.host, args.port)
    except server.PortInUseError as error:
        raise CLIError(f"{error} (--port)") from None
    except OSError as error:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {error}") from None
    try:
        explorer = _explorer(args, paths)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    if args.host not in server.LOCAL_HOSTS:
        warn_public(args.host, port)
    app = server.create_app(explorer, allowed_hosts=server.hosts_for(args.host))
    url = server.url_for(args.host, port)
    print(f"kerasviz dashboard: {url}", flush=True)
    progress("serving; press Ctrl-C to stop")
    if args.warm_up:
        explorer.warm_up()
    try:
        server.serve_forever(app, sock)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled gracefully
        pass
    progress("stopped")
    return 0


def _explorer(args: argparse.Namespace, paths: list[Path]):
    from kerasviz.dashboard.explorer import make_explorer

    start = time.perf_counter()
    if args.demo:
        from kerasviz.datasets import CLASS_NAMES, shapes
        from kerasviz.report.demo import DEMO_SEED

        folder = demo_models_dir()
        missing = [name for name in DEMO_MODELS if not (folder / name).is_file()]
        if missing:
            raise CLIError(
                f"demo model {folder / missing[0]} not found; run `python {TRAIN_SCRIPT}` first"
            )
        models = {Path(name).stem: load_model(folder / name) for name in DEMO_MODELS}
        size = int(next(iter(models.values())).inputs[0].shape[1])
        images, labels, _ = shapes(DEMO_IMAGES, size=size, seed=DEMO_SEED)
        names = [f"#{i} {CLASS_NAMES[c]}" for i, c in enumerate(labels)]
        explorer = make_explorer(models, images, names=names, class_names=CLASS_NAMES)
    else:
        model = load_model(args.model, unsafe=args.unsafe)
        try:
            pairs = read_image_files(paths)
        except ValueError as error:
            raise CLIError(str(error)) from None
        explorer = make_explorer(
            {Path(args.model).stem: model},
            [p for _, p in pairs] or None,
            names=[n for n, _ in pairs] or None,
            preprocess=args.preprocess,
        )
    progress(f"loaded in {time.perf_counter() - start:.1f} s")
    return explorer
