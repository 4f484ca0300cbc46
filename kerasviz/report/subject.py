"""What a report is about: the model, its images, their input space, and the analysis sizes.

:func:`prepare` runs the model once and fixes what every section explains (the targets and the
CAM layer) before any section runs, so sections only read a :class:`Subject`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kerasviz import default_cam_layer, resolve_layer


@dataclass(frozen=True)
class InputSpace:
    """How display pixels ``p`` in [0, 1] map to model inputs: ``x = p @ matrix + offset``.

    Every ``keras.applications`` preprocessing is such a per-pixel affine map (scaling, mean
    subtraction, RGB to BGR), so optimized or attacked inputs can be mapped back for display.
    """

    matrix: np.ndarray
    offset: np.ndarray

    @classmethod
    def identity(cls, channels: int = 3) -> InputSpace:
        return cls(np.eye(channels, dtype=np.float32), np.zeros(channels, np.float32))

    @classmethod
    def from_preprocess(cls, fn: Callable[[np.ndarray], Any], channels: int) -> InputSpace:
        """Measures the affine map of ``fn``, a preprocessing of 0..255 float images."""
        probes = np.concatenate(
            [np.zeros((1, channels)), 255.0 * np.eye(channels), np.full((1, channels), 127.5)]
        ).astype(np.float32)
        out = np.asarray(fn(probes.reshape(-1, 1, 1, channels).copy()), np.float64)
        out = out.reshape(channels + 2, channels)
        offset, matrix, gray = out[0], out[1:-1] - out[0], out[-1]
        if not np.allclose(gray, offset + 0.5 * matrix.sum(axis=0), rtol=1e-4, atol=1e-4):
            raise ValueError(
                "Expected the preprocessing to be a per-pixel affine map of 0..255 images. "
                "Received: a function that is not affine."
            )
        return cls(matrix.astype(np.float32), offset.astype(np.float32))

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        return (np.asarray(pixels, np.float32) @ self.matrix + self.offset).astype(np.float32)

    def to_display(self, x: Any, *, clip: bool = True) -> np.ndarray:
        """Model inputs back to display pixels, clipped to [0, 1] unless ``clip=False``."""
        pixels = (np.asarray(x, np.float32) - self.offset) @ np.linalg.inv(self.matrix)
        return (np.clip(pixels, 0.0, 1.0) if clip else pixels).astype(np.float32)

    @property
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest model-input value any display image can produce."""
        low = self.offset + np.minimum(self.matrix, 0).sum(axis=0)
        high = self.offset + np.maximum(self.matrix, 0).sum(axis=0)
        return float(low.min()), float(high.max())

    @property
    def channel_range(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` per channel ``(c,)``: the model-input values display images reach
        (the z^B rule's bounds; tighter than :attr:`value_range` when channels differ)."""
        low = self.offset + np.minimum(self.matrix, 0).sum(axis=0)
        high = self.offset + np.maximum(self.matrix, 0).sum(axis=0)
        return low.astype(np.float32), high.astype(np.float32)

    @property
    def scale(self) -> float:
        """Model-input units per display unit (1 for images in [0, 1], 255 for VGG's)."""
        return float(np.abs(self.matrix).sum(axis=0).mean())


@dataclass
class Subject:
    """A model and the images to analyse it on.

    Attributes:
        name: shown in headings.
        model: the Keras model (never modified).
        inputs: model inputs ``(n, h, w, c)``, preprocessed.
        display: the same images in [0, 1] for display ``(n, h, w, c)``.
        names: one label per image (file names).
        space: how display pixels map to model inputs.
        class_names: names of the classes, or None for indices.
        labels: true classes ``(n,)``, when known.
        masks: ground-truth object masks ``(n, h, w)``, when known (localization scores).
        pair: ``(model_input, display, (class_a, class_b))``, an image holding two objects for the
            signed CAM; None uses the first image and its two most likely classes.
    """

    name: str
    model: Any
    inputs: np.ndarray
    display: np.ndarray
    names: list[str]
    space: InputSpace
    class_names: Sequence[str] | None = None
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    pair: tuple | None = None
    # Filled by prepare(), before any section runs.
    scores: np.ndarray | None = None
    targets: np.ndarray | None = None
    cam_layer: str | None = None

    def class_name(self, index: int) -> str:
        index = int(index)
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return f"{self.class_names[index]}"
        return f"class {index}"


@dataclass(frozen=True)
class Settings:
    """Sizes and step counts of the analyses; :meth:`fast` is for tests.

    The time budget plans a copy per section (``budgeted=True`` when it lowered anything) and
    hands the running section its progress and deadline in ``work``
    (:class:`~kerasviz.report.budget.Work`).
    """

    show: int = 3  # images in per-image figures
    cam_methods: int = 2  # Grad-CAM, then Grad-CAM++
    more_cams: int = 4  # HiResCAM, Eigen-CAM, XGrad-CAM, then Ablation-CAM
    ablation_channels: int = 256  # channels Ablation-CAM zeroes (the most active ones)
    feature_channels: int = 32  # channels per feature-map grid
    max_feature_layers: int = 12  # conv layers shown (evenly spaced beyond that)
    filters: int = 32  # filters per filter-weight figure
    depth_sections: int = 8  # filters x input channels in the depth-section figure
    pattern_channels: int = 32
    pattern_steps: int = 96
    pattern_scale: int = 100  # filter-pattern canvas side, in percent of the input's
    neurons: int = 8
    neuron_steps: int = 96
    smooth_samples: int = 20
    ig_steps: int = 50
    ig_blur: bool = True  # integrated gradients from a blurred baseline too
    lrp_composites: int = 2  # LRP EpsilonPlus, then EpsilonGammaBox
    deeplift: int = 1  # DeepLIFT (rescale rule, black baseline): 1 shown, 0 left out
    shap_samples: int = 20  # GradientSHAP draws per image (0: left out)
    segments: int = 40  # SLIC superpixels for LIME and KernelSHAP
    lime_samples: int = 500  # LIME's perturbed images per image
    kernel_shap_samples: int = 500  # KernelSHAP's coalitions per image (0: left out)
    rise_masks: int = 2000  # RISE's random masks per image
    inversion_steps: int = 150
    inversion_layers: int = 3
    epsilon: float = 0.02  # FGSM step, in display units (fraction of the pixel range)
    localization: int = 24  # images scored on masks (demo)
    localization_steps: int = 16  # IG steps and SmoothGrad samples when scoring
    budgeted: bool = False  # lowered to fit the time budget (captions say so)
    work: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def full(cls) -> Settings:
        return cls()

    @classmethod
    def fast(cls) -> Settings:
        return cls(
            show=2,
            feature_channels=8,
            max_feature_layers=4,
            filters=8,
            depth_sections=4,
            pattern_channels=8,
            pattern_steps=3,
            neurons=3,
            neuron_steps=3,
            smooth_samples=3,
            ig_steps=4,
            ablation_channels=8,
            shap_samples=3,
            segments=12,
            lime_samples=24,
            kernel_shap_samples=24,
            rise_masks=48,
            inversion_steps=3,
            localization=6,
            localization_steps=3,
        )


def forward(model: Any, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The model's outputs ``(n, classes)`` as float64, in chunks of ``batch_size`` rows."""
    parts = [
        np.asarray(model(inputs[i : i + batch_size], training=False))
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)


def prepare(subject: Subject, *, layer: Any = None, target: int | None = None) -> Subject:
    """A copy of ``subject`` with its scores, targets and CAM layer filled in, for the sections.

    ``layer`` (name, path, index or Layer) defaults to the last convolution; ``target`` (one
    class for every image) to each image's predicted class.

    Raises:
        ValueError: ``layer`` is not a layer of the model, or the model has no convolution.
    """
    model = subject.model
    scores = forward(model, subject.inputs)
    targets = scores.argmax(axis=1) if target is None else np.full(len(scores), target, np.int64)
    path = default_cam_layer(model) if layer is None else resolve_layer(model, layer, "--layer")
    return replace(subject, scores=scores, targets=targets, cam_layer=path[0])
