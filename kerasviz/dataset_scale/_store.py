"""The explanation store on disk: a Zarr group, its manifest, and reading it back.

Layout of a store at ``out`` (Zarr v3, one folder; every array is chunked along the image axis
with ``batch_size`` images per chunk, so each batch is a separate set of files and separate
processes write separate chunks without locks):

- ``maps/<name>``: ``(n, H, W)`` maps, ``dtype`` (float16 by default), NaN where not computed.
- ``logits``: ``(n, classes)`` float32; ``predictions`` and ``targets``: ``(n,)`` int32 (the
  predicted class, and the class each map explains); ``labels``: ``(n,)`` int32 when the data
  has labels; ``ok``: ``(n,)`` bool, False for images that were skipped (a corrupt file).
- ``paths`` and ``reasons``: ``(n,)`` strings for a folder of files (the file name, and why a
  file was skipped).
- ``metrics/<name>/<metric>``: ``(n,)`` float32 per-image metrics.
- ``progress``: ``(chunks, 3)`` float64, one row and one file per chunk: ``complete`` (1.0),
  the compute ``seconds`` and the ``worker`` that wrote it. A chunk's row is written after the
  chunk's data, in one file write (LocalStore writes each file to a temporary name and renames
  it, so a killed run leaves either no row or the whole row).

The group's attributes hold the manifest under ``"kerasviz"``: ``settings`` (model
fingerprint, methods and their keyword arguments, input spec, targets, metrics, dtype, batch
size, kerasviz version) and, rewritten at the end of each run, ``complete`` (index ranges) and
``skipped`` (index, path and reason of every skipped file). The ``progress`` rows are the
record that counts while a run is in flight.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

FORMAT = 1
KEY = "kerasviz"
#: The columns of the ``progress`` array, one row per chunk.
PROGRESS_COLUMNS = ("complete", "seconds", "worker")


def zarr_module():
    """The ``zarr`` package (v3), or an ImportError that says how to install it."""
    try:
        import zarr
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "kerasviz.explain_dataset writes a Zarr store; install it with "
            "`pip install 'kerasviz[store]'` (zarr>=3)."
        ) from None
    if int(zarr.__version__.split(".")[0]) < 3:  # pragma: no cover
        raise ImportError(f"Expected zarr>=3. Received: zarr {zarr.__version__}.")
    return zarr


# ----------------------------------------------------------------------------- settings


def jsonable(value: Any, name: str) -> Any:
    """A JSON value standing for ``value`` in the manifest (arrays by digest, functions by name).

    Raises:
        ValueError: naming ``name`` for a value that has no stable description.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {
            "array_sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "shape": list(array.shape),
            "dtype": str(array.dtype),
        }
    if isinstance(value, list | tuple):
        return [jsonable(v, f"{name}[{k}]") for k, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{name}[{k!r}]") for k, v in value.items()}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    raise ValueError(
        f"Expected `{name}` to be a number, string, bool, None, list, dict, array or function "
        f"(it is recorded in the store's manifest). Received: {type(value).__name__}."
    )


def first_difference(stored: Any, wanted: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first setting (a dotted path) where two manifests differ, with both values."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted)):
            sub = f"{path}.{key}" if path else key
            if key not in stored or key not in wanted:
                return sub, stored.get(key, "<absent>"), wanted.get(key, "<absent>")
            found = first_difference(stored[key], wanted[key], sub)
            if found:
                return found
        return None
    if isinstance(stored, list) and isinstance(wanted, list) and len(stored) == len(wanted):
        for k, (a, b) in enumerate(zip(stored, wanted, strict=True)):
            found = first_difference(a, b, f"{path}[{k}]")
            if found:
                return found
        return None
    return None if stored == wanted else (path, stored, wanted)


def _walk_names(obj: Any, names: set[str], order: dict[str, str]) -> Any:
    """``obj`` with every layer or model name replaced by its order of appearance."""
    if isinstance(obj, dict):
        return {k: _walk_names(v, names, order) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_walk_names(v, names, order) for v in obj]
    if isinstance(obj, str) and obj in names:
        return order.setdefault(obj, f"#{len(order)}")
    return obj


def _all_names(model) -> set[str]:
    names = {model.name}
    for layer in getattr(model, "layers", []):
        names.add(layer.name)
        if hasattr(layer, "layers"):
            names |= _all_names(layer)
    return names


def model_fingerprint(model) -> str:
    """SHA-256 of the model's architecture and weights, independent of its layer names.

    Layer names are replaced by their order of appearance in the config, so rebuilding the
    same model in another Python session (where Keras numbers the names differently) gives the
    same fingerprint; any change of a weight, a shape, a layer type or a setting changes it.
    """
    digest = hashlib.sha256()
    try:
        config = model.get_config()
    except Exception:  # noqa: BLE001 - subclassed models may not implement get_config
        config = {"class": type(model).__qualname__}
    canon = _walk_names(config, _all_names(model), {})
    text = json.dumps(canon, sort_keys=True, default=lambda o: type(o).__name__)
    digest.update(text.encode())
    for weight in model.weights:
        # The variable's own buffer, hashed in place: no host copy of the weights (552 MB on
        # VGG16, where copying took as long as hashing).
        array = np.ascontiguousarray(np.asarray(tf.convert_to_tensor(weight.value)))
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


# ----------------------------------------------------------------------------- ranges


def ranges(flags: np.ndarray, batch_size: int, n: int) -> list[list[int]]:
    """Merged ``[start, stop)`` image ranges of the chunks whose flag is set."""
    out: list[list[int]] = []
    for chunk in np.flatnonzero(flags):
        start, stop = int(chunk) * batch_size, min((int(chunk) + 1) * batch_size, n)
        if out and out[-1][1] == start:
            out[-1][1] = stop
        else:
            out.append([start, stop])
    return out


# ----------------------------------------------------------------------------- the store


def check_out(out: Any) -> Path:
    """``out`` as a Path whose folder can be created and written, or a ValueError (before work)."""
    if not isinstance(out, str | Path):
        raise ValueError(f"Expected `out` to be a folder path. Received: {type(out).__name__}.")
    path = Path(out).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"Expected `out` to be a folder. Received: {str(out)!r}, a file.")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(
            f"Expected `out` to be a folder that can be created. Received: {str(out)!r}, "
            f"below {str(parent)!r}, which is a file."
        )
    probe = parent / f".kerasviz-write-test-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"Expected `out` to be a writable folder. Received: {str(out)!r}, where "
            f"{str(parent)!r} cannot be written ({error.strerror or error})."
        ) from None
    return path


def read_manifest(path: Path) -> dict | None:
    """The manifest of the store at ``path``; None when there is no kerasviz store there."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        attributes = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    manifest = attributes.get(KEY)
    return manifest if isinstance(manifest, dict) and "settings" in manifest else None


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def remove_store(path: Path) -> None:
    """Deletes a kerasviz store (never a folder that is not one)."""
    if read_manifest(path) is None and path.exists() and not is_empty_dir(path):
        raise ValueError(
            f"Expected `out` to be a kerasviz store to overwrite. Received: {str(path)!r}, a "
            "non-empty folder without a kerasviz manifest; it is left untouched."
        )
    if path.exists():
        shutil.rmtree(path)


class Layout:
    """The shapes and names of a store's arrays, from the run's settings."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        map_shapes: dict[str, tuple[int, ...]],
        classes: int,
        dtype: str,
        labels: bool,
        files: bool,
        metrics: list[str],
    ):
        self.n, self.batch_size = n, batch_size
        self.map_shapes, self.classes, self.dtype = map_shapes, classes, dtype
        self.labels, self.files, self.metrics = labels, files, metrics

    @property
    def chunks(self) -> int:
        return -(-self.n // self.batch_size)

    def arrays(self) -> Iterator[tuple[str, tuple, tuple, Any, Any]]:
        """``(name, shape, chunks, dtype, fill)`` of every array."""
        n, b = self.n, self.batch_size
        for name, shape in self.map_shapes.items():
            yield f"maps/{name}", (n, *shape), (b, *shape), self.dtype, np.nan
        yield "logits", (n, self.classes), (b, self.classes), "float32", np.nan
        yield "predictions", (n,), (b,), "int32", -1
        yield "targets", (n,), (b,), "int32", -1
        yield "ok", (n,), (b,), "bool", False
        if self.labels:
            yield "labels", (n,), (b,), "int32", -1
        if self.files:
            yield "paths", (n,), (b,), str, ""
            yield "reasons", (n,), (b,), str, ""
        for name in self.map_shapes:
            for metric in self.metrics:
                yield f"metrics/{name}/{metric}", (n,), (b,), "float32", np.nan
        yield "progress", (self.chunks, len(PROGRESS_COLUMNS)), (1, 3), "float64", np.nan


def create_store(path: Path, layout: Layout, settings: dict, version: str) -> None:
    """Creates the store's group, manifest and (empty) arrays."""
    zarr = zarr_module()
    from zarr.codecs import BloscCodec

    group = zarr.open_group(str(path), mode="w")
    fast = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    for name, shape, chunks, dtype, fill in layout.arrays():
        # Maps are most of the bytes: LZ4 with byte shuffling compresses float16 CAMs about
        # 3x for about 1 ms of CPU per 2 MB chunk (zstd: 4x for 3-5 ms), and the host shares
        # the CPU with the model on a machine without an accelerator.
        compressors = [fast] if name.startswith("maps/") else "auto"
        group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill,
            compressors=compressors,
        )
    group.attrs[KEY] = {
        "format": FORMAT,
        "kerasviz_version": version,
        "settings": settings,
        "complete": [],
        "skipped": [],
        "runs": [],
    }


class Writer:
    """Writes the chunks of one process into an existing store."""

    def __init__(self, path: Path, layout: Layout, worker: int = 0):
        zarr = zarr_module()
        group = zarr.open_group(str(path), mode="r+")
        self.layout, self.worker = layout, worker
        # Every chunk is written once and whole: skip zarr's check of whether it equals the
        # fill value, a pass over the chunk that costs about as much as the LZ4 itself.
        self.arrays = {
            name: group[name].with_config({"write_empty_chunks": True})
            for name, *_ in layout.arrays()
        }

    def complete(self) -> np.ndarray:
        return np.asarray(self.arrays["progress"][:, 0]) == 1.0

    def write(self, chunk: int, values: dict[str, np.ndarray], seconds: float) -> None:
        """Writes one chunk's arrays, then (only then) its completion record."""
        start = chunk * self.layout.batch_size
        for name, value in values.items():
            self.arrays[name][start : start + len(value)] = value
        record = np.array([[1.0, seconds, self.worker]], np.float64)
        self.arrays["progress"][chunk : chunk + 1] = record


def finish_manifest(path: Path, run: dict | None = None) -> dict:
    """Rewrites the manifest's ``complete`` ranges and ``skipped`` list from the arrays, and
    appends ``run`` (strategy, replicas, workers, images, seconds) to its ``runs``."""
    zarr = zarr_module()
    group = zarr.open_group(str(path), mode="r+")
    manifest = dict(group.attrs[KEY])
    summary = progress_summary(group, manifest)
    manifest.update(summary)
    if run is not None:
        manifest["runs"] = [*manifest.get("runs", []), run]
    group.attrs[KEY] = manifest
    return manifest


def progress_summary(group, manifest: dict) -> dict:
    settings = manifest["settings"]
    n, b = settings["n"], settings["batch_size"]
    flags = np.asarray(group["progress"][:, 0]) == 1.0
    skipped = []
    if "reasons" in group:
        done = np.zeros(n, bool)
        for start, stop in ranges(flags, b, n):
            done[start:stop] = True
        ok = np.asarray(group["ok"][:])
        bad = np.flatnonzero(done & ~ok)
        if bad.size:
            paths, reasons = group["paths"], group["reasons"]
            skipped = [
                {"index": int(i), "path": str(paths[int(i)]), "reason": str(reasons[int(i)])}
                for i in bad
            ]
    return {"complete": ranges(flags, b, n), "skipped": skipped}


# ----------------------------------------------------------------------------- reading


class Explanations:
    """A store opened for reading: arrays, the per-image table and the manifest.

    Attributes:
        path: the store's folder.
        manifest: the manifest dict (``settings``, ``complete``, ``skipped``, versions), with
            ``complete`` and ``skipped`` read from the chunk records.
        n: images in the data set.
        maps: ``{name: zarr.Array}`` of ``(n, H, W)`` maps, read lazily (index them to get
            numpy, e.g. ``maps["grad_cam"][:64]``).
        logits: ``zarr.Array`` ``(n, classes)``.
        complete: boolean ``(n,)``, True for images whose chunk is written.
    """

    def __init__(self, path: str | Path):
        zarr = zarr_module()
        self.path = Path(path)
        manifest = read_manifest(self.path)
        if manifest is None:
            raise ValueError(
                f"Expected `out` to be a kerasviz store written by explain_dataset. Received: "
                f"{str(path)!r}, which has no kerasviz manifest."
            )
        self._group = zarr.open_group(str(self.path), mode="r")
        manifest = dict(manifest)
        manifest.update(progress_summary(self._group, manifest))
        self.manifest = manifest
        settings = manifest["settings"]
        self.n = int(settings["n"])
        self.method_names = list(settings["methods"])
        self.maps = {name: self._group[f"maps/{name}"] for name in self.method_names}
        self.logits = self._group["logits"]
        self.complete = np.zeros(self.n, bool)
        for start, stop in manifest["complete"]:
            self.complete[start:stop] = True

    def progress(self) -> dict[str, np.ndarray]:
        """Per chunk: ``complete`` (bool), compute ``seconds`` and the ``worker`` that wrote it."""
        record = np.asarray(self._group["progress"][:])
        return {
            "complete": record[:, 0] == 1.0,
            "seconds": record[:, 1],
            "worker": np.where(np.isnan(record[:, 2]), -1, record[:, 2]).astype(int),
        }

    def __getitem__(self, name: str):
        """Any array of the store by its path, e.g. ``store["metrics/grad_cam/pointing_game"]``."""
        return self._group[name]

    def __repr__(self) -> str:
        done = int(self.complete.sum())
        return (
            f"Explanations({str(self.path)!r}, n={self.n}, complete={done}, "
            f"methods={self.method_names})"
        )

    def metric_names(self) -> dict[str, list[str]]:
        """``{method name: [metric names]}`` of the per-image metrics in the store."""
        metrics = self.manifest["settings"]["metrics"]
        return {name: list(metrics) for name in self.method_names}

    def table(self) -> dict[str, np.ndarray]:
        """The per-image table: one numpy column per field, ``n`` rows.

        Columns: ``index``, ``complete``, ``ok``, ``prediction``, ``target``, ``label`` (when the
        data has labels), ``path`` and ``reason`` (a folder of files), and one float column
        ``"<method>/<metric>"`` per per-image metric. ``pandas.DataFrame(table)`` turns it into
        a data frame.
        """
        g = self._group
        table = {
            "index": np.arange(self.n),
            "complete": self.complete.copy(),
            "ok": np.asarray(g["ok"][:]),
            "prediction": np.asarray(g["predictions"][:]),
            "target": np.asarray(g["targets"][:]),
        }
        if "labels" in g:
            table["label"] = np.asarray(g["labels"][:])
        if "paths" in g:
            table["path"] = np.array(np.asarray(g["paths"][:]).tolist(), dtype=str)
            table["reason"] = np.array(np.asarray(g["reasons"][:]).tolist(), dtype=str)
        for name, metrics in self.metric_names().items():
            for metric in metrics:
                table[f"{name}/{metric}"] = np.asarray(g[f"metrics/{name}/{metric}"][:])
        return table


def open_explanations(out: str | Path) -> Explanations:
    """Opens a store written by :func:`kerasviz.explain_dataset` for reading.

    Args:
        out: the store's folder.

    Returns:
        :class:`Explanations`: ``maps`` (``{name: (n, H, W) array}``, read lazily), ``logits``,
        ``table()`` (one row per image: prediction, target, label, path, per-image metrics),
        ``manifest`` and ``complete``.

    Raises:
        ValueError: when ``out`` holds no kerasviz store.

    Example:
        >>> store = kerasviz.open_explanations("runs/val")
        >>> store.maps["grad_cam"][:8].shape
        (8, 224, 224)
        >>> store.table()["grad_cam/pointing_game"].mean()
    """
    return Explanations(out)
