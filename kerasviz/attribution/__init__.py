"""Attribution: why did the model give this score?

- :mod:`~kerasviz.attribution.cams`: class activation maps, one core :func:`cam` and one small
  weighting function per method (Grad-CAM, Grad-CAM++, Layer-CAM), plus Score-CAM.
- :mod:`~kerasviz.attribution.gradients`: saliency, SmoothGrad, integrated gradients.
- :mod:`~kerasviz.attribution.guided`: guided backprop and Guided Grad-CAM.
- :mod:`~kerasviz.attribution.occlusion`: occlusion sensitivity.
- :mod:`~kerasviz.attribution.lrp`: layer-wise relevance propagation (rules and the layer
  table in :mod:`~kerasviz.attribution.lrp_rules`).
- :mod:`~kerasviz.attribution.reference`: input x gradient, DeepLIFT, GradientSHAP.

Every method has the shape ``method(model, inputs, targets=None, layer=None, *,
batch_size=None, ...)``, takes its scores on logits, and returns raw numpy arrays.
"""

from kerasviz.attribution.cams import (
    cam,
    grad_cam,
    grad_cam_plus_plus,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    layer_cam,
    layer_cam_weights,
    score_cam,
)
from kerasviz.attribution.gradients import integrated_gradients, saliency, smoothgrad
from kerasviz.attribution.guided import guided_backprop, guided_grad_cam, guided_model
from kerasviz.attribution.lrp import lrp
from kerasviz.attribution.occlusion import occlusion
from kerasviz.attribution.reference import deeplift, gradient_shap, input_x_gradient

__all__ = [
    "cam",
    "deeplift",
    "grad_cam",
    "grad_cam_plus_plus",
    "grad_cam_plus_plus_weights",
    "grad_cam_weights",
    "gradient_shap",
    "guided_backprop",
    "guided_grad_cam",
    "guided_model",
    "input_x_gradient",
    "integrated_gradients",
    "layer_cam",
    "layer_cam_weights",
    "lrp",
    "occlusion",
    "saliency",
    "score_cam",
    "smoothgrad",
]
