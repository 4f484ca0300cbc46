"""explain_dataset: stream a data set through map methods into a chunked store, resumably, on
one device, several local devices or several machines with ``tf.distribute``.

The path of one run:

1. Every argument is checked before any work: the methods (each public function runs on the
   data's first image), the data's element spec against the model's input, the masks, the metrics,
   and ``out`` (created and written to once).
2. The settings (model fingerprint, methods, input spec, targets, metrics, dtype, batch size,
   kerasviz version) are compared with the manifest of an existing store: a difference refuses
   to resume and names the setting. In a multi-worker run the chief creates the store, and
   every worker waits for it at a collective barrier.
3. Chunks not yet complete are shared out round robin between workers; each worker's pipeline
   (``strategy.distribute_datasets_from_function``) reads its chunks, and each step runs one
   chunk: ``strategy.run`` splits it across the worker's local devices, where one compiled
   replica function computes every map with a kernel, the logits and the targets.
4. On the host, the methods without a kernel and the deletion/insertion metrics run on the
   chunk; a background thread computes the mask metrics, writes the chunk's arrays, and only
   then its completion record, while the next chunk computes.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import kerasviz.metrics as metrics_module
from kerasviz._checks import choice, positive_int
from kerasviz._graph import model_inputs
from kerasviz._targets import ARGMAX, resolve_targets
from kerasviz.dataset_scale import _methods as methods_module
from kerasviz.dataset_scale import _store as store
from kerasviz.dataset_scale._sources import FolderSource, Source, make_source

DTYPES = ("float16", "float32", "float64")

#: Per-image metrics that compare a map with the ground-truth mask.
MASK_METRICS: dict[str, Callable] = {
    "pointing_game": metrics_module.pointing_game,
    "energy_pointing_game": metrics_module.energy_pointing_game,
    "iou_at": metrics_module.iou_at,
}
#: Per-image metrics that score perturbed images with the model (no mask needed).
MODEL_METRICS: dict[str, Callable] = {
    "deletion_auc": metrics_module.deletion_auc,
    "insertion_auc": metrics_module.insertion_auc,
}
#: The settings recorded for each metric unless given: those of benchmarks/localization.py.
METRIC_DEFAULTS: dict[str, dict] = {
    "pointing_game": {"tolerance": 0},
    "energy_pointing_game": {},
    "iou_at": {},
    "deletion_auc": {"steps": 20, "baseline": 0.0, "batch_size": 256},
    "insertion_auc": {"steps": 20, "baseline": "blur", "batch_size": 256},
}
WITH_MASKS = ("pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc")


# ----------------------------------------------------------------------------- arguments


def _image_input(model: keras.Model) -> tuple:
    try:
        inputs = model_inputs(model)
    except Exception:  # noqa: BLE001 - a subclassed model without known inputs
        inputs = getattr(model, "inputs", None) or []
    shapes = [tuple(x.shape) for x in inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise ValueError(
            "Expected `model` to have one image input (batch, H, W, C) to explain a data set "
            f"of images. Received: a model with inputs of shapes {shapes}."
        )
    return shapes[0]


def _parse_targets(targets: Any, source: Source) -> tuple[str, int | None]:
    if targets is None:
        return "predicted", None
    if isinstance(targets, str):
        choice(targets, ("labels",), "targets")
        if not source.labels:
            raise ValueError(
                "Expected `data` to hold labels for `targets='labels'`. Received: elements "
                "without labels (pass (images, labels) elements, or targets=None)."
            )
        return "labels", None
    if isinstance(targets, int | np.integer) and not isinstance(targets, bool):
        return "class", int(targets)
    raise ValueError(
        "Expected `targets` to be None (the predicted class), 'labels' (the data's labels) or "
        f"one class index for every image. Received: {targets!r}."
    )


def _parse_metrics(metrics: Any, source: Source) -> dict[str, dict]:
    if metrics is None:
        metrics = WITH_MASKS if source.masks else ()
    if isinstance(metrics, str):
        metrics = [metrics]
    if isinstance(metrics, list | tuple):
        metrics = {m: {} for m in metrics}
    if not isinstance(metrics, dict):
        raise ValueError(
            "Expected `metrics` to be None, a list of metric names or a dict of names to "
            f"keyword arguments. Received: {metrics!r}."
        )
    valid = sorted(MASK_METRICS) + sorted(MODEL_METRICS)
    parsed = {}
    for name, kwargs in metrics.items():
        if name not in valid:
            raise ValueError(f"Expected the metrics to be among {valid}. Received: {name!r}.")
        if name in MASK_METRICS and not source.masks:
            raise ValueError(
                f"Expected masks for the metric {name!r}: pass `masks=`, or (image, label, "
                "mask) dataset elements. Received: data without masks."
            )
        if not isinstance(kwargs, dict):
            raise ValueError(
                f"Expected the keyword arguments of metric {name!r} to be a dict. Received: "
                f"{kwargs!r}."
            )
        parsed[name] = {**METRIC_DEFAULTS[name], **kwargs}
        store.jsonable(parsed[name], f"metrics[{name!r}]")
    return parsed


def _check_metrics(parsed: dict[str, dict], model, sample: np.ndarray, specs, output) -> None:
    """Runs each metric once on the data's first image (its own errors for bad keyword
    arguments)."""
    if not parsed:
        return
    image_shape = sample.shape[1:]
    for spec in specs:
        if spec.shape != image_shape[:2]:
            raise ValueError(
                f"Expected `methods[{spec.name!r}]` to give maps at the input's resolution "
                f"{image_shape[:2]} for the metrics {list(parsed)}. Received: maps of shape "
                f"{spec.shape}."
            )
    h, w, _ = image_shape
    maps = np.zeros((1, h, w), np.float32)
    maps[0, 0, 0] = 1.0
    mask = np.zeros((1, h, w), bool)
    mask[0, 0, 0] = True
    for name, kwargs in parsed.items():
        try:
            if name in MASK_METRICS:
                MASK_METRICS[name](maps, mask, **kwargs)
            else:
                MODEL_METRICS[name](model, sample, maps, [0], output=output, **kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metrics[{name!r}]: {error}") from None


@contextlib.contextmanager
def _quiet_tensorflow():
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


# ----------------------------------------------------------------------------- cluster


def _cluster(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """``(workers, this worker's index)``; the chief (or worker 0) has index 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1, 0
    spec = resolver.cluster_spec()
    jobs = spec.jobs
    workers = spec.num_tasks("worker") if "worker" in jobs else 0
    chiefs = spec.num_tasks("chief") if "chief" in jobs else 0
    if workers + chiefs <= 1:
        return 1, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    return workers + chiefs, task_id if task_type == "chief" else task_id + chiefs


def _barrier(strategy: tf.distribute.Strategy, flag: float = 0.0) -> float:
    """Waits until every worker gets here; returns the sum of their ``flag`` (one all-reduce)."""
    local = max(1, strategy.num_replicas_in_sync // _cluster(strategy)[0])

    def replica():
        context = tf.distribute.get_replica_context()
        mine = tf.where(context.replica_id_in_sync_group % local == 0, flag, 0.0)
        return context.all_reduce("sum", mine)

    total = tf.function(lambda: strategy.run(replica))()
    return float(strategy.experimental_local_results(total)[0])


# ----------------------------------------------------------------------------- the step

_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MAX_STEPS = 8


def _callables(value: Any) -> tuple:
    if callable(value):
        return (value,)
    if isinstance(value, dict):
        return tuple(c for v in value.values() for c in _callables(v))
    if isinstance(value, list | tuple):
        return tuple(c for v in value for c in _callables(v))
    return ()


def _compiled_step(model, strategy, specs, source: Source, plan: dict) -> Callable:
    """The compiled per-chunk step, cached per model and settings (so a second call on the same
    model and strategy does not trace again)."""
    key = (
        strategy,
        json.dumps({s.name: s.settings() for s in specs}, sort_keys=True),
        _callables([s.kwargs for s in specs]),
        json.dumps(plan, sort_keys=True),
        source.labels,
        source.masks,
        source.image_shape,
    )
    cache = _STEPS.setdefault(model, OrderedDict())
    step = cache.get(key)
    if step is None:
        step = cache[key] = _build_step(model, strategy, specs, source, plan)
        while len(cache) > _MAX_STEPS:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return step


def _build_step(model, strategy, specs, source: Source, plan: dict) -> Callable:
    output = plan["output"]
    kernels = [(spec.name, spec.kernel) for spec in specs if spec.kernel is not None]
    kernels.sort(key=lambda item: not item[1].clean)  # clean passes first: they give logits
    probe = methods_module.plain_probe(model, output)
    rule = resolve_targets(None, 1, probe.logits_size([]), sigmoid=probe.sigmoid).rule
    classes = plan["classes"]
    mode, target_class = plan["targets"], plan["target_class"]

    def replica(element):
        x = element["image"]
        n = tf.shape(x)[0]
        if mode == "labels":
            label = element["label"]
            indices = tf.where((label >= 0) & (label < classes), label, ARGMAX)
        elif mode == "class":
            indices = tf.fill([n], tf.constant(target_class, tf.int32))
        else:
            indices = tf.fill([n], tf.constant(ARGMAX, tf.int32))
        resolved = mode == "class"
        logits, maps = None, {}
        for name, kernel in kernels:
            if not kernel.clean and not resolved:
                if logits is None:
                    logits = probe([x])[1]
                indices, resolved = rule.choose(logits, indices), True
            maps[name], found = kernel.fn(rule, x, indices)
            logits = found if logits is None else logits
        if logits is None:
            logits = probe([x])[1]
        result = {
            "index": element["index"],
            "ok": element["ok"],
            "logits": tf.reshape(logits, [n, -1]),
            "predictions": rule.predicted(logits),
            "targets": rule.choose(logits, indices),
            # Without metrics the maps leave the device in the store's dtype (half the bytes).
            "maps": {k: tf.cast(v, plan["map_dtype"]) for k, v in maps.items()},
        }
        for extra in ("label", "mask"):
            if extra in element:
                result[extra] = element[extra]
        if plan["images"]:
            result["image"] = x
        return result

    def step(element):
        return strategy.run(replica, args=(element,))

    return tf.function(step, reduce_retracing=True)


def _to_host(strategy, value, local: int) -> dict:
    """Per-replica results of one step as numpy, concatenated in replica order."""
    parts = strategy.experimental_local_results(value)
    if len(parts) != local:
        raise RuntimeError(f"expected {local} local replica results, got {len(parts)}")
    if len(parts) == 1:
        return keras.tree.map_structure(np.asarray, parts[0])
    return keras.tree.map_structure(
        lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=0), *parts
    )


# ----------------------------------------------------------------------------- host work


def _mask_metric(fn: Callable, kwargs: dict, maps: np.ndarray, masks: np.ndarray, ok):
    out = np.full(len(maps), np.nan, np.float32)
    rows = ok & masks.reshape(len(masks), -1).any(axis=1)
    rows &= np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
    if rows.any():
        out[rows] = fn(maps[rows], masks[rows], **kwargs)
    return out


class _Background:
    """One background thread fed through a bounded queue (a fixed number of chunks in flight)."""

    def __init__(self, work: Callable, size: int = 2):
        self._work = work
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kerasviz-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self._work(*item)
                except BaseException as error:  # noqa: BLE001 - re-raised in the caller
                    self.error = error

    def put(self, *item) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


class ProgressLine:
    """A progress line on stderr: images done, images/s (this run) and the ETA."""

    def __init__(self, done: int = 0, stream=None, every: float = 0.5):
        self.stream = stream or sys.stderr
        self.every = every
        self._start = time.perf_counter()
        self._first = done
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < self.every:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        rate = (done - self._first) / elapsed
        eta = (total - done) / rate if rate > 0 else math.inf
        eta_text = (
            "--:--" if not math.isfinite(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
        )
        end = "\n" if done >= total else ""
        self.stream.write(
            f"\r[kerasviz] explain {done}/{total} images | {rate:.1f} images/s | ETA {eta_text}"
            + end
        )
        self.stream.flush()


# ----------------------------------------------------------------------------- the function


def explain_dataset(
    model: keras.Model,
    data: Any,
    methods: Any,
    out: str | Path,
    *,
    masks: Any = None,
    batch_size: int = 64,
    strategy: tf.distribute.Strategy | None = None,
    resume: bool = True,
    overwrite: bool = False,
    dtype: str = "float16",
    targets: int | str | None = None,
    output: int | str | None = None,
    preprocess: Callable | None = None,
    metrics: Any = None,
    progress: bool | Callable[[int, int], None] | None = None,
) -> store.Explanations:
    """Explains every image of a data set with several map methods into a chunked store on disk.

    Streams the data (memory does not grow with the number of images), writes each batch as
    its own chunk of a Zarr store with a manifest, resumes where a killed run stopped, and runs
    on several local devices (``tf.distribute.MirroredStrategy``) or machines
    (``MultiWorkerMirroredStrategy`` with ``TF_CONFIG``: each worker writes its own chunks into
    one shared store). Read it back with :func:`kerasviz.open_explanations`.

    Args:
        model: a Keras model with one image input ``(batch, H, W, C)``.
        data: a ``tf.data.Dataset`` of images ``x``, ``(x, label)`` or ``(x, label, mask)``,
            batched or not (labels as class indices or one-hot vectors, masks ``(H, W)``); or a
            folder of image files (sorted by name; each converted to the model's channels,
            resized bilinearly to its input size, then passed to ``preprocess``). A file that
            cannot be read is skipped (NaN maps, ``ok`` False) and recorded with its reason.
        methods: ``{name: kwargs}``, ``{name: (method, kwargs)}`` or a list of method names;
            methods are the public map functions (``grad_cam``, ``integrated_gradients``, ...)
            with their keyword arguments, e.g. ``{"grad_cam": {}, "ig":
            ("integrated_gradients", {"steps": 32})}``. Per-channel results are reduced to one
            map per image by max ``|value|`` over channels.
        out: the store's folder (created).
        masks: ground-truth masks when ``data`` holds none: an array ``(n, H, W)`` or a dataset
            for a dataset ``data``; a folder of mask images with the same names for a folder.
        batch_size: images per step and per chunk of the store (split across the local
            devices, so a multiple of their number).
        strategy: a ``tf.distribute`` strategy; None for the current one (the default: one
            device). Build or load the model under ``strategy.scope()`` to copy its weights to
            every device once.
        resume: continue a store with the same settings; False requires a new ``out``.
        overwrite: delete an existing store at ``out`` first.
        dtype: the maps' dtype on disk: ``"float16"`` (default), ``"float32"`` or
            ``"float64"``. Metrics are computed on the float32 maps.
        targets: None for the predicted class, ``"labels"`` for the data's labels, or one class
            index for all images.
        output: which model output to explain, for models with several.
        preprocess: for a folder, ``preprocess(image) -> model input``, with ``image`` float32
            ``(H, W, C)`` of 0..255 values (default: divide by 255).
        metrics: per-image metrics: None for pointing game (tolerance 0 px), energy pointing
            game, deletion AUC (baseline 0) and insertion AUC (blurred baseline), 20 steps, when
            there are masks (none without); or names / ``{name: kwargs}`` of
            :mod:`kerasviz.metrics` functions (``pointing_game``, ``energy_pointing_game``,
            ``iou_at``, ``deletion_auc``, ``insertion_auc``). The settings used are recorded.
        progress: True for a progress line on stderr (images/s, ETA), or ``fn(done, total)``,
            called from a background thread after each chunk is recorded.

    Returns:
        The store, opened for reading (:class:`kerasviz.dataset_scale.Explanations`).

    Raises:
        ValueError: before any work, for an unknown method (listing the valid ones), a
            method's bad keyword arguments, a data spec that does not fit the model's input
            (naming both), an unwritable ``out``, or settings that differ from the store's
            manifest (naming the setting).

    Reference: the metrics are those of :mod:`kerasviz.metrics` (Zhang et al., 2016; Wang et
    al., 2020; Petsiuk et al., 2018).

    Example:
        >>> store = kerasviz.explain_dataset(
        ...     model, val_ds, {"grad_cam": {}, "ig": ("integrated_gradients", {"steps": 32})},
        ...     "runs/val", targets="labels", batch_size=64)
        >>> store.table()["grad_cam/pointing_game"].mean()
    """
    from kerasviz import __version__

    store.zarr_module()
    dtype = choice(dtype, DTYPES, "dtype")
    batch_size = positive_int(batch_size, "batch_size")
    for flag, name in ((resume, "resume"), (overwrite, "overwrite")):
        if not isinstance(flag, bool):
            raise ValueError(f"Expected `{name}` to be True or False. Received: {flag!r}.")
    strategy = strategy if strategy is not None else tf.distribute.get_strategy()
    workers, worker = _cluster(strategy)
    local = max(1, strategy.num_replicas_in_sync // workers)
    if batch_size % local:
        raise ValueError(
            f"Expected `batch_size` to be a multiple of the {local} local devices of "
            f"`strategy`, so each chunk splits evenly. Received: batch_size={batch_size}."
        )
    model_shape = _image_input(model)
    specs = methods_module.parse_methods(methods)
    source = make_source(data, model_shape, preprocess, masks)
    mode, target_class = _parse_targets(targets, source)
    parsed_metrics = _parse_metrics(metrics, source)
    path = store.check_out(out)
    probe = methods_module.plain_probe(model, output)
    classes = int(probe.logits_size([np.zeros((1, *source.image_shape), np.float32)]))
    if mode == "class":
        resolve_targets(target_class, 1, classes, sigmoid=probe.sigmoid)  # range check
    with _quiet_tensorflow():
        # The data's first image through every method and metric: each traces its compiled
        # step once more, which TensorFlow would report as excessive retracing.
        sample = source.sample()
        for spec in specs:
            methods_module.check_method(spec, model, sample, output)
        _check_metrics(parsed_metrics, model, sample, specs, output)

    settings = {
        "kerasviz_version": __version__,
        "model": {
            "fingerprint": store.model_fingerprint(model),
            "input_shape": [d for d in model_shape],
            "logits": classes,
        },
        "input": source.settings(),
        "n": source.n,
        "batch_size": batch_size,
        "methods": {spec.name: spec.settings() for spec in specs},
        "map_shapes": {spec.name: list(spec.shape) for spec in specs},
        "targets": mode if mode != "class" else target_class,
        "output": store.jsonable(output, "output"),
        "dtype": dtype,
        "metrics": parsed_metrics,
    }
    layout = store.Layout(
        n=source.n,
        batch_size=batch_size,
        map_shapes={spec.name: spec.shape for spec in specs},
        classes=classes,
        dtype=dtype,
        labels=source.labels,
        files=source.files,
        metrics=list(parsed_metrics),
    )

    error = None
    if worker == 0:
        try:
            _prepare_store(path, settings, layout, resume, overwrite, __version__)
        except ValueError as failure:
            error = failure
    # Every worker learns whether the chief could prepare the store, so none is left waiting.
    failed = workers > 1 and _barrier(strategy, float(error is not None)) > 0
    if error is not None:
        raise error
    if failed:
        raise ValueError(
            f"Expected the chief worker to create or resume the store at `out`={str(path)!r}. "
            "Received: an error there (see the chief's output)."
        )
    if worker != 0:
        _check_settings(path, settings, resume=True)

    started = time.perf_counter()
    writer = store.Writer(path, layout, worker)
    complete = writer.complete()
    todo = [int(c) for c in np.flatnonzero(~complete)]
    if todo:
        rows = max(batch_size // local, methods_module.DEFAULT_ROWS)
        for spec in specs:
            spec.kernel = methods_module.build_kernel(spec, model, source.image_shape, output, rows)
        plan = {
            "output": store.jsonable(output, "output"),
            "rows": rows,
            "classes": classes,
            "targets": mode,
            "target_class": target_class,
            "images": any(s.kernel is None for s in specs)
            or bool(set(parsed_metrics) & set(MODEL_METRICS)),
            "map_dtype": "float32" if parsed_metrics else dtype,
        }
        step = _compiled_step(model, strategy, specs, source, plan)
        mine: list[int] = []

        def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
            count = context.num_input_pipelines
            mine[:] = todo[context.input_pipeline_id :: count]
            steps = -(-len(todo) // count)
            return source.pipeline(mine, steps, batch_size, batch_size // local)

        distributed = strategy.distribute_datasets_from_function(per_worker)
        sizes = np.minimum(batch_size, source.n - np.arange(layout.chunks) * batch_size)
        before = int(sizes[complete].sum())
        total = before + int(sizes[mine].sum())
        report = ProgressLine(before) if progress is True else (progress or None)
        _loop(
            model,
            strategy,
            step,
            distributed,
            specs,
            source,
            parsed_metrics,
            plan,
            writer,
            layout,
            report,
            (before, total),
            output,
            local,
        )
    if workers > 1:
        _barrier(strategy)
    if worker == 0:
        run = {
            "strategy": type(strategy).__name__,
            "replicas": int(strategy.num_replicas_in_sync),
            "workers": workers,
            "chunks": len(todo),
            "seconds": round(time.perf_counter() - started, 3),
        }
        store.finish_manifest(path, run)
    return store.open_explanations(path)


def _check_settings(path: Path, settings: dict, resume: bool) -> None:
    manifest = store.read_manifest(path)
    if manifest is None:
        raise ValueError(
            f"Expected a kerasviz store at `out`={str(path)!r} (made by the chief worker). "
            "Received: none."
        )
    if not resume:
        raise ValueError(
            f"Expected `out` to be a new folder with resume=False. Received: {str(path)!r}, "
            "which holds a kerasviz store; pass resume=True to continue it, a new `out`, or "
            "overwrite=True to replace it."
        )
    found = store.first_difference(manifest["settings"], settings)
    if found is not None:
        setting, stored, wanted = found
        raise ValueError(
            f"Expected the settings of this call to match the store at `out`={str(path)!r} to "
            f"resume it. Received: {setting} = {wanted!r}, where the store has {stored!r}. "
            "Pass a new `out` with resume=False, or overwrite=True to replace the store."
        )


def _prepare_store(path: Path, settings, layout, resume: bool, overwrite: bool, version) -> None:
    if overwrite:
        store.remove_store(path)
    manifest = store.read_manifest(path)
    if manifest is None:
        if path.exists() and not store.is_empty_dir(path):
            raise ValueError(
                f"Expected `out` to be a new or empty folder, or a kerasviz store. Received: "
                f"{str(path)!r}, a non-empty folder without a kerasviz manifest."
            )
        store.create_store(path, layout, settings, version)
        return
    _check_settings(path, settings, resume)


def _loop(
    model,
    strategy,
    step,
    distributed,
    specs,
    source,
    parsed_metrics,
    plan,
    writer,
    layout,
    report,
    counts,
    output,
    local,
) -> None:
    batch_size, n = layout.batch_size, layout.n
    counter = {"done": counts[0]}
    mask_metrics = {k: v for k, v in parsed_metrics.items() if k in MASK_METRICS}
    model_metrics = {k: v for k, v in parsed_metrics.items() if k in MODEL_METRICS}

    def write(chunk: int, values: dict, masks, seconds: float) -> None:
        ok = values["ok"]
        for spec in specs:
            maps = values[f"maps/{spec.name}"]
            for name, kwargs in mask_metrics.items():
                values[f"metrics/{spec.name}/{name}"] = _mask_metric(
                    MASK_METRICS[name], kwargs, maps, masks, ok
                )
            values[f"maps/{spec.name}"] = maps.astype(layout.dtype, copy=False)
        writer.write(chunk, values, seconds)
        counter["done"] += len(ok)
        if report is not None:
            report(counter["done"], counts[1])

    background = _Background(write)
    try:
        for element in distributed:
            start = time.perf_counter()
            host = _to_host(strategy, step(element), local)
            real = host["index"] >= 0
            if not real.any():
                continue
            if real.all():
                real = slice(None)  # views, not copies
            index = host["index"][real]
            chunk = int(index[0] // batch_size)
            if not (index // batch_size == chunk).all() or len(index) != min(
                batch_size, n - chunk * batch_size
            ):
                raise RuntimeError(f"a step did not hold exactly chunk {chunk}: {index}")
            ok = host["ok"][real]
            targets = host["targets"][real].astype(np.int32)
            values = {
                "ok": ok,
                "logits": host["logits"][real],
                "predictions": host["predictions"][real],
                "targets": targets,
            }
            if not ok.all():  # skipped files: no logits, no classes
                values["logits"] = np.where(ok[:, None], values["logits"], np.nan)
                values["predictions"] = np.where(ok, values["predictions"], -1)
                values["targets"] = np.where(ok, targets, -1)
            if source.labels:
                labels = host["label"][real].astype(np.int32)
                bad = ok & ((labels < 0) | (labels >= layout.classes))
                if plan["targets"] == "labels" and bad.any():
                    raise ValueError(
                        f"Expected the labels of `data` to be class indices in [0, "
                        f"{layout.classes - 1}]. Received: {labels[bad][:5].tolist()} at "
                        f"indices {index[bad][:5].tolist()}."
                    )
                values["labels"] = labels
            if isinstance(source, FolderSource):
                failures = source.take_failures(index)
                values["paths"] = np.array([source.paths[i].name for i in index])
                values["reasons"] = np.array([failures.get(int(i), "") for i in index])
            images = host["image"][real] if plan["images"] else None
            for spec in specs:
                if spec.kernel is not None:
                    maps = host["maps"][spec.name][real]
                else:
                    maps = np.zeros((len(index), *spec.shape), np.float32)
                    if ok.any():
                        maps[ok] = methods_module.host_maps(
                            spec, model, images[ok], targets[ok], output
                        )
                if not ok.all():
                    maps = np.where(ok.reshape(-1, *[1] * len(spec.shape)), maps, np.nan)
                values[f"maps/{spec.name}"] = maps
                for name, kwargs in model_metrics.items():
                    scores = np.full(len(index), np.nan, np.float32)
                    if ok.any():
                        scores[ok] = MODEL_METRICS[name](
                            model, images[ok], maps[ok], targets[ok], output=output, **kwargs
                        )
                    values[f"metrics/{spec.name}/{name}"] = scores
            masks = host["mask"][real] if source.masks else None
            background.put(chunk, values, masks, time.perf_counter() - start)
    finally:
        background.close()
