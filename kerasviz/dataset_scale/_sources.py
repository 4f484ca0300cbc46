"""Where the images come from: a ``tf.data.Dataset`` or a folder of image files.

A :class:`Source` knows the number of images ``n``, the image shape, whether there are labels
and masks, and builds each worker's input pipeline: the images of the chunks that worker
writes, in order, as dict elements ``{"index", "image", "ok", ["label"], ["mask"]}`` batched per
replica, and prefetched so reading and decoding overlap with compute.

Every chunk holds exactly ``batch_size`` rows: the last, partial chunk and the steps a worker
has no chunk for are filled with blank rows of index -1 (skipped after the step). So every step
of every worker has the same static shape (one trace), and workers of a
``MultiWorkerMirroredStrategy`` take the same number of steps.

A folder's files are shared out before decoding, so a worker reads only its own files. A
``tf.data.Dataset`` is read whole by every worker, which keeps its own chunks (tf.data's
``DATA`` sharding), because a dataset's elements cannot be skipped without producing them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PREFETCH = 2  # per-replica batches buffered ahead of the compute; a fixed bound on memory


def _describe(spec: Any) -> str:
    return str(keras.tree.map_structure(lambda s: s, spec))


def _parts(element: Any) -> tuple[Any, Any, Any]:
    """``(image, label, mask)`` of an element ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, mask)``."""
    if isinstance(element, tuple | list):
        padded = list(element) + [None] * (3 - len(element))
        return padded[0], padded[1], padded[2]
    return element, None, None


def function_name(fn: Callable | None) -> str | None:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class Source:
    """Base class: ``n``, ``image_shape``, ``labels``, ``masks`` and the per-worker pipeline."""

    kind = ""
    n: int
    image_shape: tuple[int, ...]
    labels: bool
    masks: bool
    files: bool = False

    def settings(self) -> dict:
        raise NotImplementedError

    def rows(self, batch_size: int, **kwargs) -> tf.data.Dataset:
        """Unbatched dict elements of the chunks ``chunks``, padded; see :meth:`pipeline`."""
        raise NotImplementedError

    def sample(self) -> np.ndarray:
        """One image of the data ``(1, H, W, C)``, to check methods and metrics on before work."""
        raise NotImplementedError

    def blank(self) -> dict:
        h, w, c = self.image_shape
        element = {
            "index": tf.constant(-1, tf.int64),
            "image": tf.zeros((h, w, c), tf.float32),
            "ok": tf.constant(False),
        }
        if self.labels:
            element["label"] = tf.constant(-1, tf.int32)
        if self.masks:
            element["mask"] = tf.zeros((h, w), tf.bool)
        return element

    def pipeline(
        self, chunks: list[int], steps: int, batch_size: int, per_replica: int
    ) -> tf.data.Dataset:
        """The elements of ``chunks`` (increasing), padded to ``steps`` chunks of ``batch_size``
        rows, in per-replica batches of ``per_replica`` rows."""
        total_chunks = -(-self.n // batch_size)
        padding = batch_size * (steps - len(chunks))
        if chunks and chunks[-1] == total_chunks - 1:
            padding += total_chunks * batch_size - self.n
        data = self.rows(batch_size, chunks=chunks, total_chunks=total_chunks)
        if padding:
            blank = self.blank()
            data = data.concatenate(tf.data.Dataset.range(padding).map(lambda _: blank))
        data = data.batch(per_replica, drop_remainder=True)
        return data.with_options(_options()).prefetch(PREFETCH)


# ----------------------------------------------------------------------------- tf.data


def _check_image_spec(spec: Any, model_shape: tuple, what: str) -> tuple[bool, tuple]:
    """``(batched, (H, W, C))`` of an image spec fitting the model input, or a ValueError."""
    ok = isinstance(spec, tf.TensorSpec) and spec.shape.rank in (3, 4)
    ok = ok and (spec.dtype.is_floating or spec.dtype.is_integer or spec.dtype == tf.bool)
    batched = ok and spec.shape.rank == 4
    dims = list(spec.shape[1:] if batched else spec.shape) if ok else []
    if ok:
        for k, (got, want) in enumerate(zip(dims, model_shape[1:], strict=True)):
            if got is not None and want is not None and got != want:
                ok = False
            elif got is None:
                dims[k] = want
        ok = ok and all(d is not None for d in dims)
    if not ok:
        raise ValueError(
            f"Expected `data` to yield numeric images (H, W, C), or batches of them, that fit "
            f"the model's input shape {tuple(model_shape)} (fixed sizes). Received: {what} "
            f"whose element spec is {_describe(spec)}."
        )
    return batched, tuple(int(d) for d in dims)


class DatasetSource(Source):
    """Images from a ``tf.data.Dataset`` of ``x``, ``(x, y)`` or ``(x, y, mask)``."""

    kind = "dataset"

    def __init__(self, data: tf.data.Dataset, model_shape: tuple, masks: Any):
        self.element_spec = _describe(data.element_spec)
        image_spec, label_spec, mask_spec = _parts(data.element_spec)
        batched, self.image_shape = _check_image_spec(image_spec, model_shape, "a dataset")
        if batched:
            data = data.unbatch()
            image_spec, label_spec, mask_spec = _parts(data.element_spec)
        self._separate_masks = masks is not None
        if masks is not None:
            if mask_spec is not None:
                raise ValueError(
                    "Expected masks either in the dataset's elements or in `masks`, not both. "
                    f"Received: elements {self.element_spec} and masks={type(masks).__name__}."
                )
            mask_data = self._mask_dataset(masks)
            mask_spec = mask_data.element_spec
            data = tf.data.Dataset.zip((data, mask_data))
        self.labels = label_spec is not None
        if self.labels and not _label_ok(label_spec):
            raise ValueError(
                "Expected the labels of `data` to be class indices (integers, shape () or (1,)) "
                f"or one-hot vectors (classes,). Received: {_describe(label_spec)}."
            )
        self.masks = mask_spec is not None
        if self.masks:
            h, w, _ = self.image_shape
            shape = mask_spec.shape
            fits = shape.rank == 2 or (shape.rank == 3 and shape[-1] == 1)
            fits = fits and all(
                g in (None, want) for g, want in zip(shape[:2], (h, w), strict=True)
            )
            if not fits:
                raise ValueError(
                    f"Expected masks of shape ({h}, {w}) or ({h}, {w}, 1). Received: "
                    f"{_describe(mask_spec)}."
                )
        self._data = data
        cardinality = int(data.cardinality())
        if cardinality == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "Expected `data` to be finite. Received: an infinite dataset (remove `repeat()` "
                "or add `take(n)`)."
            )
        if cardinality == tf.data.UNKNOWN_CARDINALITY:
            # One pass to count: the store's arrays are sized before any work. Apply
            # `tf.data.experimental.assert_cardinality(n)` to the dataset to skip it.
            cardinality = int(data.batch(256).reduce(np.int64(0), _count_batch))
        if cardinality == 0:
            raise ValueError("Expected `data` to hold at least one image. Received: none.")
        self.n = cardinality

    def sample(self) -> np.ndarray:
        # One op, not an iterator: a new iterator copies the tensors the dataset was made from
        # (`from_tensor_slices`: all the images). The cardinality is known to be at least 1.
        element = self._data.take(1).get_single_element()
        if self._separate_masks:
            element = element[0]
        image, _, _ = _parts(element)
        return np.asarray(image, np.float32)[None]

    def _mask_dataset(self, masks: Any) -> tf.data.Dataset:
        h, w, _ = self.image_shape
        if isinstance(masks, tf.data.Dataset):
            shape = masks.element_spec.shape
            one = shape.rank == 2 or (shape.rank == 3 and shape[-1] == 1 and shape[0] == h)
            return masks if one else masks.unbatch()
        if isinstance(masks, str | Path):
            raise ValueError(
                "Expected `masks` to be an array (n, H, W) or a tf.data.Dataset for a dataset "
                f"`data`; a folder of masks goes with a folder of images. Received: {str(masks)!r}."
            )
        array = np.asarray(masks)
        if array.ndim == 4 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 3 or array.shape[1:] != (h, w):
            raise ValueError(
                f"Expected `masks` to have shape (n, {h}, {w}). Received: shape {array.shape}."
            )
        return tf.data.Dataset.from_tensor_slices(array)

    def _normalize(self, first, rows: int, *args) -> dict:
        """A batch of user elements as a padded dict batch of exactly ``rows`` rows."""
        if len(args) == 1 and isinstance(args[0], tuple):
            args = args[0]  # enumerate() gives (k, element): the element arrives packed
        if self._separate_masks:
            element, mask = args
            image, label, _ = _parts(element)
        else:
            image, label, mask = _parts(args if len(args) > 1 else args[0])
        n = tf.shape(image)[0]
        pad = rows - n
        h, w, c = self.image_shape

        def padded(value, fill):
            spec = [[0, pad]] + [[0, 0]] * (value.shape.rank - 1)
            # Only the last batch is short: the others pass without a copy.
            return tf.cond(
                pad > 0, lambda: tf.pad(value, spec, constant_values=fill), lambda: value
            )

        index = tf.range(first, first + tf.cast(n, tf.int64))
        out = {
            "index": tf.ensure_shape(padded(index, -1), (rows,)),
            "image": tf.ensure_shape(padded(tf.cast(image, tf.float32), 0.0), (rows, h, w, c)),
            "ok": tf.ensure_shape(padded(tf.ones([n], tf.bool), False), (rows,)),
        }
        if self.labels:
            label = tf.convert_to_tensor(label)
            if label.shape.rank == 2 and label.shape[-1] != 1:
                label = tf.argmax(label, axis=-1, output_type=tf.int32)
            label = tf.reshape(tf.cast(label, tf.int32), [-1])
            out["label"] = tf.ensure_shape(padded(label, -1), (rows,))
        if self.masks:
            mask = tf.convert_to_tensor(mask)
            if mask.shape.rank == 4:
                mask = mask[..., 0]
            out["mask"] = tf.ensure_shape(padded(tf.cast(mask, tf.bool), False), (rows, h, w))
        return out

    def settings(self) -> dict:
        return {"kind": "dataset", "element_spec": self.element_spec, "n": self.n}

    def pipeline(
        self, chunks: list[int], steps: int, batch_size: int, per_replica: int
    ) -> tf.data.Dataset:
        """Batch-level: the user's elements are batched per replica first, so every later
        operation (filtering chunks, casting, padding) runs once per batch, not per image.
        Per-replica batches never straddle chunks, since ``per_replica`` divides a chunk."""
        per_chunk = batch_size // per_replica
        data = self._data.batch(per_replica).enumerate()
        total_chunks = -(-self.n // batch_size)
        if list(chunks) != list(range(total_chunks)):
            keep = np.zeros(total_chunks, bool)
            keep[np.asarray(chunks, int)] = True
            table = tf.constant(keep)
            data = data.filter(lambda k, *_: tf.gather(table, k // per_chunk))
        # No Python control flow on tensors in `_normalize`: skip autograph's conversion.
        normalize = tf.autograph.experimental.do_not_convert(
            lambda k, *e: self._normalize(k * per_replica, per_replica, *e)
        )
        data = data.map(normalize)
        batches = sum(-(-min(batch_size, self.n - c * batch_size) // per_replica) for c in chunks)
        blanks = steps * per_chunk - batches
        if blanks:
            blank = tf.data.Dataset.from_tensors(self.blank()).repeat(per_replica)
            blank = blank.batch(per_replica).repeat(blanks)
            data = data.concatenate(blank)
        return data.with_options(_options()).prefetch(PREFETCH)


def _count_batch(count, *element):
    image, _, _ = _parts(element if len(element) > 1 else element[0])
    return count + tf.cast(tf.shape(image)[0], tf.int64)


def _options() -> tf.data.Options:
    """Fixed buffers, no autotuning: the pipeline's memory is bounded and known."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _label_ok(spec: Any) -> bool:
    if not isinstance(spec, tf.TensorSpec):
        return False
    if spec.shape.rank == 0 or (spec.shape.rank == 1 and spec.shape[0] == 1):
        return spec.dtype.is_integer
    return spec.shape.rank == 1 and spec.shape[0] is not None


# ----------------------------------------------------------------------------- folders


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scale01(image: np.ndarray) -> np.ndarray:
    """The default folder preprocessing: 0..255 pixel values to [0, 1]."""
    return image / 255.0


class FolderSource(Source):
    """Image files of one folder, decoded with PIL, resized to the model's input size and
    preprocessed; masks (optional) from a folder of files with the same names (stems)."""

    kind = "folder"
    files = True

    def __init__(
        self,
        folder: Path,
        model_shape: tuple,
        preprocess: Callable | None,
        masks: Any,
    ):
        self.folder = folder.absolute()
        self.paths = image_files(folder)
        if not self.paths:
            raise ValueError(
                f"Expected `data` to be a folder with image files ({', '.join(IMAGE_SUFFIXES)}). "
                f"Received: {str(folder)!r}, which has none."
            )
        if len(model_shape) != 4 or any(d is None for d in model_shape[1:]):
            raise ValueError(
                f"Expected a model input of fixed size (batch, H, W, C) to read a folder of "
                f"images into. Received: input shape {tuple(model_shape)}; pass a "
                "tf.data.Dataset of images of one size instead."
            )
        if model_shape[-1] not in (1, 3):
            raise ValueError(
                f"Expected a model input with 1 or 3 channels to read image files into. "
                f"Received: input shape {tuple(model_shape)}."
            )
        self.image_shape = tuple(int(d) for d in model_shape[1:])
        self.n = len(self.paths)
        self.labels = False
        self.preprocess = preprocess or scale01
        if not callable(self.preprocess):
            raise ValueError(
                f"Expected `preprocess` to be a function. Received: {self.preprocess!r}."
            )
        self.mask_paths = None
        if masks is not None:
            if not isinstance(masks, str | Path) or not Path(masks).is_dir():
                raise ValueError(
                    "Expected `masks` to be a folder of mask images named like the images for "
                    f"a folder `data`. Received: {masks!r}."
                )
            by_stem = {p.stem: p for p in image_files(Path(masks))}
            missing = [p.name for p in self.paths if p.stem not in by_stem]
            if missing:
                raise ValueError(
                    f"Expected a mask in {str(masks)!r} for every image (same name, any image "
                    f"suffix). Received: none for {len(missing)} images, e.g. {missing[:3]}."
                )
            self.mask_paths = [by_stem[p.stem] for p in self.paths]
        self.masks = self.mask_paths is not None
        self.failures: dict[int, str] = {}
        self._lock = threading.Lock()
        self._sample: np.ndarray | None = None
        self._check_first()

    def settings(self) -> dict:
        listing = [f"{p.name}:{p.stat().st_size}" for p in self.paths]
        digest = hashlib.sha256("\n".join(listing).encode()).hexdigest()
        return {
            "kind": "folder",
            "folder": str(self.folder),
            "n": self.n,
            "files_sha256": digest,
            "image_shape": list(self.image_shape),
            "preprocess": function_name(self.preprocess),
            "masks": None if self.mask_paths is None else str(self.mask_paths[0].parent),
        }

    def _read(self, path: Path) -> np.ndarray:
        from PIL import Image

        h, w, c = self.image_shape
        with Image.open(path) as image:
            image.load()
            image = image.convert("RGB" if c == 3 else "L")
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        array = np.asarray(image, np.float32)
        return array[..., None] if array.ndim == 2 else array

    def _read_mask(self, path: Path) -> np.ndarray:
        from PIL import Image

        h, w, _ = self.image_shape
        with Image.open(path) as image:
            image.load()
            image = image.convert("L").resize((w, h), Image.Resampling.NEAREST)
        return np.asarray(image) != 0

    def _prepared(self, path: Path) -> np.ndarray:
        out = np.asarray(self.preprocess(self._read(path)), dtype=np.float32)
        if out.shape != self.image_shape:
            raise ValueError(
                f"preprocess returned shape {out.shape}, not the model input {self.image_shape}"
            )
        if not np.all(np.isfinite(out)):
            raise ValueError("preprocess returned NaN or Inf")
        return out

    def _check_first(self) -> None:
        """The first readable file goes through ``preprocess`` before any work."""
        for path in self.paths[:20]:
            try:
                image = self._read(path)
            except Exception:  # noqa: BLE001, S112 - an unreadable file is found again later
                continue
            try:
                out = np.asarray(self.preprocess(image), dtype=np.float32)
            except Exception as error:  # noqa: BLE001
                raise ValueError(
                    f"Expected `preprocess` to map an image (H, W, C) of 0..255 values to the "
                    f"model's input. Received: an error on {path.name}: {error}"
                ) from None
            if out.shape != self.image_shape:
                raise ValueError(
                    f"Expected `preprocess` to return images of the model's input shape "
                    f"{self.image_shape}. Received: shape {out.shape} for {path.name}."
                )
            self._sample = out[None]
            return

    def sample(self) -> np.ndarray:
        if self._sample is None:  # no readable file among the first ones: any image will do
            return np.random.default_rng(0).random((1, *self.image_shape), dtype=np.float32)
        return self._sample

    def load(self, index: int) -> tuple[np.ndarray, bool, np.ndarray]:
        """``(image, ok, mask)`` of file ``index``; a file that fails is recorded, not raised."""
        h, w, c = self.image_shape
        blank = np.zeros((h, w, c), np.float32), False, np.zeros((h, w), bool)
        if index < 0:
            return blank
        path = self.paths[index]
        try:
            image = self._prepared(path)
        except Exception as error:  # noqa: BLE001 - PIL raises many types for bad files
            self._fail(index, f"{type(error).__name__}: {error}")
            return blank
        mask = blank[2]
        if self.mask_paths is not None:
            try:
                mask = self._read_mask(self.mask_paths[index])
            except Exception as error:  # noqa: BLE001
                self._fail(index, f"mask {self.mask_paths[index].name}: {error}")
                return blank
        return image, True, mask

    def _fail(self, index: int, reason: str) -> None:
        with self._lock:
            self.failures[index] = " ".join(reason.split())[:300]

    def take_failures(self, indices: np.ndarray) -> dict[int, str]:
        with self._lock:
            return {int(i): self.failures.pop(int(i)) for i in indices if int(i) in self.failures}

    def rows(self, batch_size: int, chunks: list[int], total_chunks: int) -> tf.data.Dataset:
        index = [
            np.arange(b * batch_size, min((b + 1) * batch_size, self.n), dtype=np.int64)
            for b in chunks
        ]
        index = np.concatenate(index) if index else np.zeros(0, np.int64)
        h, w, c = self.image_shape
        masks = self.masks

        def load(i):
            image, ok, mask = self.load(int(i.numpy()))
            return (image, ok, mask) if masks else (image, ok)

        def element(i):
            types = [tf.float32, tf.bool] + ([tf.bool] if masks else [])
            values = tf.py_function(load, [i], types)
            out = {"index": i, "image": tf.ensure_shape(values[0], (h, w, c))}
            out["ok"] = tf.ensure_shape(values[1], ())
            if masks:
                out["mask"] = tf.ensure_shape(values[2], (h, w))
            return out

        # Files decode in parallel (PIL releases the GIL while decoding), in order.
        decoders = max(2, min(8, os.cpu_count() or 2))
        return tf.data.Dataset.from_tensor_slices(index).map(
            element, num_parallel_calls=decoders, deterministic=True
        )


def make_source(data: Any, model_shape: tuple, preprocess: Callable | None, masks: Any) -> Source:
    """The :class:`Source` for ``data``.

    Raises:
        ValueError: for anything but a tf.data.Dataset or a folder, an element spec that does
            not fit the model's input, or masks that do not fit.
    """
    if isinstance(data, tf.data.Dataset):
        if preprocess is not None:
            raise ValueError(
                "Expected `preprocess` only with a folder of images; map a dataset with "
                f"`data.map(...)` instead. Received: preprocess={preprocess!r}."
            )
        return DatasetSource(data, model_shape, masks)
    if isinstance(data, str | Path) and Path(data).is_dir():
        return FolderSource(Path(data), model_shape, preprocess, masks)
    raise ValueError(
        "Expected `data` to be a tf.data.Dataset of images (with labels and masks, "
        f"optionally) or a folder of image files. Received: {data!r}."
    )
