# ruff: noqa: F401 (every import here is a re-export)
"""The public API, imported by ``kerasviz/__init__.py`` on first use (not by ``import kerasviz``).

A new public function is imported here and listed in ``kerasviz.__all__``.
"""

from kerasviz import attribution, callbacks, dataset_scale, datasets, metrics, optimize
from kerasviz._layers import default_cam_layer, resolve_layer
from kerasviz._probe import Probe, get_probe
from kerasviz.attribution import (
    SuperpixelAttribution,
    ablation_cam,
    cam,
    deeplift,
    eigen_cam,
    grad_cam,
    grad_cam_plus_plus,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    gradient_shap,
    guided_backprop,
    guided_grad_cam,
    hires_cam,
    hires_cam_weights,
    input_x_gradient,
    integrated_gradients,
    kernel_shap,
    layer_cam,
    layer_cam_weights,
    lime,
    lrp,
    occlusion,
    rise,
    saliency,
    score_cam,
    smoothgrad,
    xgrad_cam,
    xgrad_cam_weights,
)
from kerasviz.dataset_scale import explain_dataset, open_explanations
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
