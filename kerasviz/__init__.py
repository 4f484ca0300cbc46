"""kerasviz: see what a trained Keras CNN has learned."""

from kerasviz import attribution, callbacks, datasets, metrics, optimize
from kerasviz._layers import default_cam_layer, resolve_layer
from kerasviz._probe import Probe, get_probe
from kerasviz.attribution import (
    cam,
    deeplift,
    grad_cam,
    grad_cam_plus_plus,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    gradient_shap,
    guided_backprop,
    guided_grad_cam,
    input_x_gradient,
    integrated_gradients,
    layer_cam,
    layer_cam_weights,
    lrp,
    occlusion,
    saliency,
    score_cam,
    smoothgrad,
)
from kerasviz.features import (
    TopChannels,
    feature_maps,
    filter_weights,
    layer_statistics,
    top_channels,
)
from kerasviz.optimize import (
    Objective,
    OptimizationResult,
    channel,
    custom,
    deep_dream,
    direction,
    fgsm,
    filter_patterns,
    invert,
    layer_norm,
    logit,
    maximize,
    neuron,
    pgd,
    score_objectives,
)
from kerasviz.receptive_field import (
    ReceptiveField,
    backproject,
    backproject_tf,
    crop_to_receptive_field,
    receptive_field,
    resize_bilinear,
)

__version__ = "0.1.0"

# Presentation and serving are loaded on first access (`kerasviz.plot`, `kerasviz.dashboard`),
# never by `import kerasviz`. `kerasviz.dashboard(model, images)` calls the module itself.
_LAZY_SUBMODULES = ("plot", "dashboard")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"kerasviz.{name}")
    raise AttributeError(f"module 'kerasviz' has no attribute {name!r}")


__all__ = [
    "Objective",
    "OptimizationResult",
    "channel",
    "custom",
    "deep_dream",
    "direction",
    "fgsm",
    "filter_patterns",
    "invert",
    "layer_norm",
    "logit",
    "maximize",
    "neuron",
    "optimize",
    "pgd",
    "score_objectives",
    "Probe",
    "ReceptiveField",
    "TopChannels",
    "attribution",
    "cam",
    "deeplift",
    "grad_cam",
    "grad_cam_plus_plus",
    "grad_cam_plus_plus_weights",
    "grad_cam_weights",
    "guided_backprop",
    "guided_grad_cam",
    "gradient_shap",
    "input_x_gradient",
    "integrated_gradients",
    "layer_cam",
    "layer_cam_weights",
    "lrp",
    "occlusion",
    "saliency",
    "score_cam",
    "smoothgrad",
    "backproject",
    "backproject_tf",
    "crop_to_receptive_field",
    "default_cam_layer",
    "feature_maps",
    "filter_weights",
    "get_probe",
    "layer_statistics",
    "callbacks",
    "datasets",
    "metrics",
    "plot",
    "dashboard",
    "receptive_field",
    "resize_bilinear",
    "resolve_layer",
    "top_channels",
]
