"""The ``kerasviz`` command: ``demo``, ``report``, ``layers`` and ``serve``.

``kerasviz demo --out DIR`` writes the HTML report of the two demo models (shipped with the
package) on synthetic shapes images. ``kerasviz report MODEL IMAGES... --out DIR`` writes the
same report for a saved model and images: files, folders (their images, sorted by name) or
quoted glob patterns such as ``'imgs/*.png'``. Both plan their work to a time budget
(``--budget SECONDS``, 120 s on a CPU; the full settings with a GPU or ``--full``), show a
progress bar on a terminal (``--quiet`` for none) and choose sections with ``--sections``.
``kerasviz layers MODEL`` prints every layer with its output shape and its receptive field.

User errors (a wrong path, an unreadable image, a model without an image input, a report that
already exists, a bad budget) end with one line on stderr and exit status 1, never a traceback.
TensorFlow is imported only when a command runs, without its start-up log lines unless
``--verbose``: ``kerasviz --help`` answers at once.

A new subcommand is a ``_cmd_x(args)`` function plus an ``_add_x(sub)`` that adds its parser
(with ``parents=[_common()]`` for ``--quiet``/``--verbose``) and calls
``set_defaults(func=_cmd_x)``; ``main`` calls ``args.check(args)`` first when a command sets
one (checks that need no TensorFlow), then starts TensorFlow quietly, then runs ``func``.
"""

from __future__ import annotations

import argparse
import glob
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PREPROCESS = (
    "none",
    "scale01",
    "convnext",
    "densenet",
    "efficientnet",
    "efficientnet_v2",
    "inception_resnet_v2",
    "inception_v3",
    "mobilenet",
    "mobilenet_v2",
    "mobilenet_v3",
    "nasnet",
    "resnet",
    "resnet50",
    "resnet_v2",
    "vgg16",
    "vgg19",
    "xception",
)
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEMO_MODELS = ("shapes_cnn.keras", "shapes_nested.keras")
TRAIN_SCRIPT = "examples/train_demo_models.py"


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit status 1."""


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(f"[kerasviz] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- loading


def demo_models_dir() -> Path:
    """The demo models' folder: ``kerasviz/demo_models``, package data of the installed package."""
    return Path(__file__).resolve().parent / "demo_models"


# ----------------------------------------------------------------------------- TensorFlow

#: Set by :func:`start_tensorflow`: whether TensorFlow sees a GPU.
_GPU: list[bool] = []


def start_tensorflow(verbose: bool = False) -> bool:
    """Imports TensorFlow, without its start-up log lines unless ``verbose``; True with a GPU.

    ``TF_CPP_MIN_LOG_LEVEL`` and absl's verbosity are set first, and while TensorFlow loads its
    libraries and probes its devices, file descriptor 2 goes to a temporary file: some of its
    lines are written before logging is configured and ignore both. Should the import fail,
    what it wrote is shown.
    """
    if verbose or "tensorflow" in sys.modules:
        import tensorflow as tf

        if not _GPU:
            _GPU.append(bool(tf.config.list_physical_devices("GPU")))
        if not verbose:
            _quiet_python_logs()
        return _GPU[0]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; without it the import below fails anyway
        pass
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            _GPU.append(bool(tf.config.list_physical_devices("GPU")))
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    _quiet_python_logs()
    return _GPU[0]


def _quiet_python_logs() -> None:
    # TensorFlow's and Keras' Python warnings (retracing notices, op converters) are noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    for module in ("keras", "tensorflow", "absl"):
        warnings.filterwarnings("ignore", module=module)


def load_model(path: str | Path, *, unsafe: bool = False):
    """Loads a ``.keras`` or ``.h5`` model with ``safe_mode=True`` unless ``unsafe``.

    Raises:
        CLIError: the file is missing or not a model, or it needs unsafe deserialization.
    """
    path = Path(path)
    if not path.exists():
        raise CLIError(f"model file not found: {path}")
    if path.is_dir() or path.suffix.lower() not in MODEL_SUFFIXES:
        raise CLIError(f"expected a saved Keras model ({', '.join(MODEL_SUFFIXES)}), got: {path}")
    import keras

    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # noqa: BLE001 - any loading failure is a user-facing error
        message = str(error)
        if "safe_mode" in message or "unsafe deserialization" in message:
            raise CLIError(
                f"{path} needs unsafe deserialization (it holds Python code such as a Lambda "
                "layer); if you trust this file, run again with --unsafe"
            ) from None
        raise CLIError(f"cannot load model {path}: {_one_line(message, 300)}") from None


def image_input_shape(model) -> tuple[int | None, int | None, int]:
    """``(height, width, channels)`` of the model's single image input, or a CLIError."""
    from kerasviz._graph import check_graph_model, model_inputs

    try:
        check_graph_model(model)
    except ValueError as error:
        raise CLIError(_one_line(error)) from None
    inputs = model_inputs(model)
    shapes = [tuple(x.shape) for x in inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][-1] not in (1, 3):
        raise CLIError(
            f"model {model.name!r} has no image input: expected one input of shape "
            f"(batch, height, width, 1 or 3), got {', '.join(map(str, shapes))}"
        )
    outputs = model.outputs
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        got = ", ".join(str(tuple(o.shape)) for o in outputs)
        raise CLIError(
            f"model {model.name!r} is not an image classifier: expected one output of shape "
            f"(batch, classes), got {got}"
        )
    return shapes[0][1], shapes[0][2], shapes[0][3]


def expand_images(arguments: Sequence[str | Path]) -> list[Path]:
    """The image files that ``arguments`` name, in order: files, folders and glob patterns.

    A folder gives the files inside it (not its subfolders) with an image suffix
    (:data:`IMAGE_SUFFIXES`, any case), sorted by name. An argument that is neither a file nor a
    folder and holds ``*``, ``?`` or ``[`` is a glob pattern, expanded with :func:`glob.glob`
    (files only, sorted). Anything else is kept as a path, for :func:`read_images` to report.

    Raises:
        CLIError: a folder without images, or a pattern that matches no file.
    """
    paths: list[Path] = []
    for argument in map(str, arguments):
        path = Path(argument)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                suffixes = ", ".join(s[1:] for s in IMAGE_SUFFIXES)
                raise CLIError(f"no image files ({suffixes}) in folder {argument}")
        elif not path.exists() and any(c in argument for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(argument) if Path(p).is_file())
            if not found:
                raise CLIError(f"no files match the pattern {argument!r}")
        else:
            found = [path]
        paths += found
    return paths


def read_images(paths: Sequence[str | Path]) -> list:
    """Opens every image with PIL (fully decoded), or raises a CLIError naming the bad file."""
    from PIL import Image

    images = []
    for path in map(Path, paths):
        if not path.is_file():
            raise CLIError(f"image file not found: {path}")
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.copy())
        except Exception as error:  # noqa: BLE001 - PIL raises several types for bad files
            raise CLIError(f"cannot read image {path}: {_one_line(error, 200)}") from None
    return images


def resize_images(images: list, height: int | None, width: int | None, channels: int):
    """Converts to RGB (or L), resizes to the model's input size, returns uint8 ``(n, h, w, c)``."""
    import numpy as np
    from PIL import Image

    mode = "RGB" if channels == 3 else "L"
    if height is None or width is None:
        # A model without a fixed size gets the first image's size, capped at 512 px.
        first = images[0]
        scale = min(1.0, 512 / max(first.size))
        width = width or max(8, round(first.size[0] * scale))
        height = height or max(8, round(first.size[1] * scale))
    arrays = []
    for image in images:
        image = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[..., None] if array.ndim == 2 else array)
    return np.stack(arrays)


def preprocessor(name: str) -> Callable[[Any], Any]:
    """The function that maps uint8-range float images to the model's input space."""
    if name == "none":
        return lambda x: x
    if name == "scale01":
        return lambda x: x / 255.0
    import keras

    module = getattr(keras.applications, name, None)
    if module is None or not hasattr(module, "preprocess_input"):
        raise CLIError(f"unknown --preprocess {name!r}; choose one of {', '.join(PREPROCESS)}")
    return lambda x: module.preprocess_input(x.copy())


def _check_layer_and_target(model, layer: str | None, target: int | None) -> None:
    from kerasviz._layers import require_spatial, resolve_layer

    if layer is not None:
        path, obj = resolve_layer(model, layer, "--layer")
        require_spatial(path, obj, "--layer", rank=4)
    classes = int(model.outputs[0].shape[-1])
    if target is not None and not 0 <= target < classes:
        raise CLIError(f"--target {target} is out of range: the model has {classes} classes")


def _check_out(out: Path, force: bool) -> None:
    from kerasviz.report import REPORT_NAME  # the report, TensorFlow included, loads lazily

    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a folder")
    if (out / REPORT_NAME).exists() and not force:
        raise CLIError(f"{out / REPORT_NAME} already exists; pass --force to overwrite it")


# ----------------------------------------------------------------------------- commands


def _cmd_layers(args) -> int:
    from kerasviz.report import layer_table

    model = load_model(args.model, unsafe=args.unsafe)
    image_input_shape(model)
    header, rows = layer_table(model)
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def parse_budget(text: str | None, full: bool = False) -> float | None:
    """The ``--budget`` in seconds: None for the default, 0 for the full settings.

    Raises:
        CLIError: not a number, negative or not finite, or given with ``--full``.
    """
    if text is None:
        return 0.0 if full else None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise CLIError(
            f"--budget expects a number of seconds >= 0 (0 for the full settings), got {text!r}"
        )
    if full and seconds > 0:
        raise CLIError(f"--full runs the full settings; it cannot be combined with --budget {text}")
    return seconds


def _check_budget(args) -> None:
    args.budget = parse_budget(args.budget, args.full)


def _plan(args, start: float):
    """The report's budget, sections, settings and progress from the common report options."""
    from kerasviz import report as rep

    try:
        sections = rep.select_sections(args.sections.split(",") if args.sections else None)
    except ValueError as error:
        names = ",".join(spec.name for spec in rep.SECTIONS)
        raise CLIError(f"--sections {args.sections!r}: unknown section; valid: {names}") from (
            error
        )
    seconds = args.budget
    if seconds is None:
        seconds = 0.0 if start_tensorflow(args.verbose) else rep.CPU_BUDGET
    budget = rep.Budget(seconds, start=start)
    echo = None if args.quiet else progress
    bar = not args.quiet and rep.Progress.terminal()
    settings = rep.Settings.fast() if args.fast else rep.Settings.full()
    return budget, sections, settings, rep.Progress(echo, bar=bar)


def _cmd_report(args) -> int:
    import numpy as np

    from kerasviz import report as rep

    out = Path(args.out)
    paths = expand_images(args.images)
    _check_out(out, args.force)
    budget, sections, settings, prog = _plan(args, args.started)
    pil_images = read_images(paths)
    pre = preprocessor(args.preprocess)
    model = load_model(args.model, unsafe=args.unsafe)
    height, width, channels = image_input_shape(model)
    _check_layer_and_target(model, args.layer, args.target)
    raw = resize_images(pil_images, height, width, channels)
    inputs = np.asarray(pre(raw.astype(np.float32)), dtype=np.float32)
    try:
        space = rep.InputSpace.from_preprocess(pre, channels)
    except Exception as error:  # noqa: BLE001 - e.g. a 3-channel preprocessing of grey images
        raise CLIError(f"--preprocess {args.preprocess}: {_one_line(error)}") from None
    subject = rep.Subject(
        name=Path(args.model).stem,
        model=model,
        inputs=inputs,
        display=raw.astype(np.float32) / 255.0,
        names=[p.name for p in paths],
        space=space,
    )
    path = rep.build_report(
        out,
        subject,
        settings=settings,
        layer=args.layer,
        target=args.target,
        title=f"kerasviz report: {Path(args.model).name}",
        progress=prog,
        budget=budget,
        sections=sections,
    )
    if not args.quiet:
        progress(rep.elapsed_line(path, budget))
    return 0


def _cmd_demo(args) -> int:
    from kerasviz import report as rep

    out = Path(args.out)
    _check_out(out, args.force)
    budget, sections, settings, prog = _plan(args, args.started)
    folder = Path(args.models) if args.models else demo_models_dir()
    missing = [name for name in DEMO_MODELS if not (folder / name).is_file()]
    if missing:
        raise CLIError(
            f"demo model {folder / missing[0]} not found; run `python {TRAIN_SCRIPT}` first"
        )
    models = [load_model(folder / name) for name in DEMO_MODELS]
    path = rep.build_demo_report(
        out, models, settings=settings, progress=prog, budget=budget, sections=sections
    )
    if not args.quiet:
        progress(rep.elapsed_line(path, budget))
    return 0


# ----------------------------------------------------------------------------- parsers


def _common() -> argparse.ArgumentParser:
    """``--quiet`` and ``--verbose``, shared by every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quiet", action="store_true", help="no progress bar or progress lines (errors only)"
    )
    common.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's start-up log lines"
    )
    return common


def _report_options(parser: argparse.ArgumentParser, default_out: str | None) -> None:
    """Options shared by ``report`` and ``demo``."""
    if default_out is None:
        parser.add_argument("--out", required=True, help="output folder")
    else:
        parser.add_argument(
            "--out", default=default_out, help=f"output folder (default: {default_out})"
        )
    parser.add_argument("--force", action="store_true", help="overwrite an existing report")
    parser.add_argument(
        "--budget",
        metavar="SECONDS",
        help="plan the report to finish in about this many seconds (default: 120 on a CPU, "
        "the full settings with a GPU; 0 for the full settings)",
    )
    parser.add_argument(
        "--full", action="store_true", help="the full settings, however long (= --budget 0)"
    )
    parser.add_argument(
        "--sections",
        metavar="NAMES",
        help="comma-separated sections to include, e.g. grad_cam,feature_maps (default: all)",
    )
    parser.add_argument("--fast", action="store_true", help="tiny sizes and steps (for tests)")


def _add_demo(sub) -> None:
    demo = sub.add_parser(
        "demo",
        parents=[_common()],
        help="report on the bundled demo models",
        description="Writes report.html and its PNGs for the two demo models on synthetic shapes.",
    )
    _report_options(demo, "demo_output")
    demo.add_argument(
        "--models", help="folder holding the demo models (default: the installed demo models)"
    )
    demo.set_defaults(func=_cmd_demo, check=_check_budget)


def _add_report(sub) -> None:
    report = sub.add_parser(
        "report", parents=[_common()], help="report on your saved model and image files"
    )
    report.add_argument("model", help="a saved model (.keras or .h5)")
    report.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help="image files (PNG, JPEG, ...), folders of images, or quoted glob patterns",
    )
    _report_options(report, None)
    report.add_argument(
        "--layer", help="the CAM layer (name or outer/inner path); default: last conv"
    )
    report.add_argument("--target", type=int, help="the class index to explain; default: predicted")
    report.add_argument(
        "--preprocess",
        default="scale01",
        choices=PREPROCESS,
        help="maps 0..255 pixels to the model's input: none, scale01 (x/255, the default) or a "
        "keras.applications module's preprocess_input",
    )
    report.add_argument("--unsafe", action="store_true", help="allow Lambda layers (trusted files)")
    report.set_defaults(func=_cmd_report, check=_check_budget)


def _add_layers(sub) -> None:
    layers = sub.add_parser(
        "layers", parents=[_common()], help="print the layer table with receptive fields"
    )
    layers.add_argument("model", help="a saved model (.keras or .h5)")
    layers.add_argument("--unsafe", action="store_true", help="allow Lambda layers (trusted files)")
    layers.set_defaults(func=_cmd_layers)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasviz", description="See what a trained Keras CNN has learned."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_report(sub)
    _add_layers(sub)
    _add_serve(sub)
    _add_explain(sub)
    _add_summarize(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``kerasviz`` command and returns its exit status.

    Example:
        >>> main(["layers", "my_model.keras"])
        0
    """
    started = time.perf_counter()
    args = _parser().parse_args(argv)
    args.started = started
    try:
        check = getattr(args, "check", None)
        if check is not None:
            check(args)
        start_tensorflow(getattr(args, "verbose", False))
        return args.func(args)
    except CLIError as error:
        print(f"kerasviz: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except ValueError as error:
        # kerasviz raises ValueErrors that name the bad argument (an unknown --layer, a
        # --target out of range); they are user errors too.
        print(f"kerasviz: error: {_one_line(error)}", file=sys.stderr)
        return 1


def console() -> None:
    """The ``kerasviz`` console script: :func:`main`, then the process ends at once.

    Everything the command writes is written and flushed by then; the interpreter's teardown
    of TensorFlow (its graphs and traced functions) can take seconds on a busy machine, time a
    report planned to a budget has no use for.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


# ----------------------------------------------------------------------------- serve


def _add_serve(sub) -> None:
    """``kerasviz serve``: its options live with the dashboard (loaded only when it runs)."""
    serve = sub.add_parser(
        "serve",
        help="explore a model interactively in the browser",
        description="Serves the interactive dashboard on 127.0.0.1 (see kerasviz.dashboard).",
    )
    from kerasviz.dashboard.command import add_arguments  # argparse only: no TensorFlow

    add_arguments(serve)
    serve.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from kerasviz.dashboard.command import run

    return run(args)


# ----------------------------------------------------------------------------- explain, summarize
# `kerasviz explain MODEL FOLDER --method ... --out STORE` runs kerasviz.explain_dataset with a
# progress line; `kerasviz summarize STORE` prints metric means with bootstrap intervals. Their
# options and runs live in kerasviz/dataset_scale/command.py (argparse only at import).


def _add_explain(sub) -> None:
    from kerasviz.dataset_scale.command import add_explain_arguments, check_explain

    explain = sub.add_parser(
        "explain",
        parents=[_common()],
        help="explain a folder of images into a resumable store (kerasviz.explain_dataset)",
        description="Computes maps of every image with each --method into a chunked Zarr store "
        "that resumes where a killed run stopped; per-image metrics with --masks.",
    )
    add_explain_arguments(explain, PREPROCESS)
    explain.set_defaults(func=_cmd_explain, check=check_explain)


def _cmd_explain(args) -> int:
    from kerasviz.dataset_scale.command import run_explain

    return run_explain(args, load_model, preprocessor, progress)


def _add_summarize(sub) -> None:
    from kerasviz.dataset_scale.command import add_summarize_arguments

    summarize = sub.add_parser(
        "summarize",
        parents=[_common()],
        help="metric means with 95%% bootstrap intervals from an explain store",
    )
    add_summarize_arguments(summarize)
    summarize.set_defaults(func=_cmd_summarize)


def _cmd_summarize(args) -> int:
    from kerasviz.dataset_scale.command import run_summarize

    return run_summarize(args, progress)


if __name__ == "__main__":
    console()
