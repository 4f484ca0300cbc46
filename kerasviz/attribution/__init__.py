"""Attribution: why did the model give this score?

- :mod:`~kerasviz.attribution.cams`: class activation maps, one core :func:`cam` and one small
  weighting function per method (Grad-CAM, Grad-CAM++, Layer-CAM, HiResCAM, XGrad-CAM), plus
  Score-CAM, Eigen-CAM and Ablation-CAM; ``smooth="augment" | "eigen"`` on every one.
- :mod:`~kerasviz.attribution.blackbox`: LIME, KernelSHAP and RISE (any model; scores on
  probabilities by default, as in their papers).
- :mod:`~kerasviz.attribution.gradients`: saliency, SmoothGrad, integrated gradients.
- :mod:`~kerasviz.attribution.guided`: guided backprop and Guided Grad-CAM.
- :mod:`~kerasviz.attribution.occlusion`: occlusion sensitivity.
- :mod:`~kerasviz.attribution.lrp`: layer-wise relevance propagation (rules and the layer
  table in :mod:`~kerasviz.attribution.lrp_rules`).
- :mod:`~kerasviz.attribution.reference`: input x gradient, DeepLIFT, GradientSHAP.

Every method has the shape ``method(model, inputs, targets=None, layer=None, *,
batch_size=None, ...)``, takes its scores on logits, and returns raw numpy arrays.
"""

from kerasviz.attribution.blackbox import SuperpixelAttribution, kernel_shap, lime, rise
from kerasviz.attribution.cams import (
    ablation_cam,
    cam,
    eigen_cam,
    grad_cam,
    grad_cam_plus_plus,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    hires_cam,
    hires_cam_weights,
    layer_cam,
    layer_cam_weights,
    score_cam,
    xgrad_cam,
    xgrad_cam_weights,
)
from kerasviz.attribution.gradients import integrated_gradients, saliency, smoothgrad
from kerasviz.attribution.guided import guided_backprop, guided_grad_cam, guided_model
from kerasviz.attribution.lrp import lrp
from kerasviz.attribution.occlusion import occlusion
from kerasviz.attribution.reference import deeplift, gradient_shap, input_x_gradient

__all__ = [
    "SuperpixelAttribution",
    "ablation_cam",
    "cam",
    "deeplift",
    "eigen_cam",
    "grad_cam",
    "grad_cam_plus_plus",
    "grad_cam_plus_plus_weights",
    "grad_cam_weights",
    "gradient_shap",
    "guided_backprop",
    "guided_grad_cam",
    "guided_model",
    "hires_cam",
    "hires_cam_weights",
    "input_x_gradient",
    "integrated_gradients",
    "kernel_shap",
    "layer_cam",
    "layer_cam_weights",
    "lime",
    "lrp",
    "occlusion",
    "rise",
    "saliency",
    "score_cam",
    "smoothgrad",
    "xgrad_cam",
    "xgrad_cam_weights",
]
