"""Optimization in input space: activation maximization, DeepDream, inversion, adversarials.

Where things go: a new objective kind (a :class:`Term` subclass) in ``objectives.py`` or next
to its user (feature matching lives in ``inversion.py``), a new image parametrization in
``params.py``, a new random transform in ``transforms.py``, a new penalty in
``regularizers.py``; ``loop.py`` holds :class:`OptimizationSettings` and the one compiled
optimization loop they all plug into.
"""

from kerasviz.optimize.adversarial import fgsm, pgd
from kerasviz.optimize.inversion import invert
from kerasviz.optimize.loop import (
    OptimizationResult,
    OptimizationSettings,
    deep_dream,
    filter_patterns,
    maximize,
)
from kerasviz.optimize.objectives import (
    Objective,
    Term,
    channel,
    custom,
    direction,
    layer_norm,
    logit,
    neuron,
    score_objectives,
)
from kerasviz.optimize.params import Fourier, Parametrization, Pixel
from kerasviz.optimize.regularizers import alpha_norm, blur, l2, total_variation
from kerasviz.optimize.transforms import jitter, pad, rotate, scale

__all__ = [
    "Fourier",
    "Objective",
    "OptimizationResult",
    "OptimizationSettings",
    "Parametrization",
    "Pixel",
    "Term",
    "alpha_norm",
    "blur",
    "channel",
    "custom",
    "deep_dream",
    "direction",
    "fgsm",
    "filter_patterns",
    "invert",
    "jitter",
    "l2",
    "layer_norm",
    "logit",
    "maximize",
    "neuron",
    "pad",
    "pgd",
    "rotate",
    "scale",
    "score_objectives",
    "total_variation",
]
