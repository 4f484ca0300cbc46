"""``kerasviz explain`` and ``kerasviz summarize``: options and runs.

The option parsing here is plain Python (``kerasviz --help`` and argument errors need no
TensorFlow); the runs import the library when they start.

``--method`` takes ``[NAME=]METHOD[:KEY=VALUE,KEY=VALUE...]``: ``grad_cam``,
``integrated_gradients:steps=32``, ``ig=integrated_gradients:steps=32,baseline='blur'``. Values
are Python literals (numbers, quoted strings, tuples, True/False/None); anything else is a
string. The store name is ``NAME``, else the method's name (numbered when it repeats).
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path
from typing import Any


class MethodOptionError(ValueError):
    """A ``--method`` value that cannot be read."""


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_method_options(values: list[str]) -> dict[str, tuple[str, dict]]:
    """``--method`` values as ``{store name: (method, kwargs)}``.

    Raises:
        MethodOptionError: for an empty method or a ``KEY=VALUE`` part without ``=``.
    """
    methods: dict[str, tuple[str, dict]] = {}
    for value in values:
        head, _, options = value.partition(":")
        name, _, method = head.partition("=") if "=" in head else ("", "", head)
        method, name = method.strip(), name.strip()
        if not method:
            raise MethodOptionError(
                f"--method {value!r}: expected [NAME=]METHOD[:KEY=VALUE,...], e.g. "
                "integrated_gradients:steps=32"
            )
        kwargs = {}
        for part in _split_top_level(options) if options.strip() else []:
            key, sep, text = part.partition("=")
            if not sep or not key.strip():
                raise MethodOptionError(f"--method {value!r}: expected KEY=VALUE, got {part!r}")
            kwargs[key.strip()] = _literal(text.strip())
        if not name:
            name, k = method, 2
            while name in methods:
                name, k = f"{method}_{k}", k + 1
        methods[name] = (method, kwargs)
    return methods


def add_explain_arguments(parser: argparse.ArgumentParser, preprocess: tuple) -> None:
    parser.add_argument("model", help="a saved model (.keras or .h5)")
    parser.add_argument("data", metavar="DATA", help="a folder of image files (sorted by name)")
    parser.add_argument(
        "--method",
        action="append",
        required=True,
        metavar="[NAME=]METHOD[:KEY=VALUE,...]",
        help="a map method and its keyword arguments, e.g. grad_cam or "
        "integrated_gradients:steps=32 (repeat for several)",
    )
    parser.add_argument("--out", required=True, help="the store's folder (created or resumed)")
    parser.add_argument(
        "--masks", help="a folder of ground-truth masks named like the images (adds metrics)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch and chunk")
    parser.add_argument("--target", type=int, help="the class to explain; default: predicted")
    parser.add_argument(
        "--preprocess",
        default="scale01",
        choices=preprocess,
        help="maps 0..255 pixels to the model's input (default scale01: x/255)",
    )
    parser.add_argument(
        "--dtype", default="float16", choices=("float16", "float32"), help="maps on disk"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing store at --out"
    )
    parser.add_argument("--unsafe", action="store_true", help="allow Lambda layers (trusted files)")


def check_explain(args) -> None:
    """Checks that need no TensorFlow: the ``--method`` syntax and ``--batch-size``."""
    args.methods = parse_method_options(args.method)
    if args.batch_size < 1:
        raise MethodOptionError(f"--batch-size must be a positive int, got {args.batch_size}")


def run_explain(args, load_model, preprocessor, message) -> int:
    """Runs :func:`kerasviz.explain_dataset` with a progress line (images/s, ETA)."""
    from kerasviz.dataset_scale import explain_dataset

    model = load_model(args.model, unsafe=args.unsafe)
    start = time.perf_counter()
    store = explain_dataset(
        model,
        Path(args.data),
        args.methods,
        args.out,
        masks=args.masks,
        batch_size=args.batch_size,
        targets=args.target,
        preprocess=preprocessor(args.preprocess),
        dtype=args.dtype,
        overwrite=args.overwrite,
        progress=None if args.quiet else True,
    )
    done = int(store.complete.sum())
    skipped = len(store.manifest["skipped"])
    if not args.quiet:
        message(
            f"wrote {store.path}: {done} of {store.n} images ({skipped} skipped) in "
            f"{time.perf_counter() - start:.1f} s; `kerasviz summarize {args.out}` for the "
            "metrics"
        )
    return 0


def add_summarize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store written by `kerasviz explain` or explain_dataset")
    parser.add_argument(
        "--markdown", metavar="PATH", help="also write the localization table (markdown) here"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--confidence", type=float, default=0.95, help="the intervals' coverage (default 0.95)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")


def run_summarize(args, message) -> int:
    """Prints per-method metric means with bootstrap intervals; writes the table if asked."""
    from kerasviz.dataset_scale import (
        format_summary,
        localization_table,
        open_explanations,
        summarize,
    )

    store = open_explanations(args.store)
    options = {"confidence": args.confidence, "resamples": args.resamples, "seed": args.seed}
    done = int(store.complete.sum())
    print(f"{store.path}: {done} of {store.n} images complete, methods {store.method_names}")
    print(format_summary(summarize(store, **options), confidence=args.confidence))
    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(localization_table(store, **options) + "\n")
        if not args.quiet:
            message(f"wrote {path}")
    return 0
