"""Attribution: why did the model give this score?

- :mod:`~kerasviz.attribution.cams`: class activation maps, one core :func:`cam` and one small
  weighting function per method (Grad-CAM, Grad-CAM++, Layer-CAM), plus Score-CAM.
- :mod:`~kerasviz.attribution.gradients`: saliency, SmoothGrad, integrated gradients.
- :mod:`~kerasviz.attribution.guided`: guided backprop and Guided Grad-CAM.
- :mod:`~kerasviz.attribution.occlusion`: occlusion sensitivity.

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
from kerasviz.attribution.occlusion import occlusion

__all__ = [
    "cam",
    "grad_cam",
    "grad_cam_plus_plus",
    "grad_cam_plus_plus_weights",
    "grad_cam_weights",
    "guided_backprop",
    "guided_grad_cam",
    "guided_model",
    "integrated_gradients",
    "layer_cam",
    "layer_cam_weights",
    "occlusion",
    "saliency",
    "score_cam",
    "smoothgrad",
]
