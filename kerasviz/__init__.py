"""kerasviz: see what a trained Keras CNN has learned."""

# The public API lives in `kerasviz/_api.py` and is imported on first use, not by `import
# kerasviz`, so that the `kerasviz` command answers `--help` without loading TensorFlow. A new
# public function is imported there and listed in `__all__` below.
import importlib
import sys
import types

__version__ = "0.1.0"

# Presentation and serving are loaded on first access (`kerasviz.plot`, `kerasviz.dashboard`),
# never by `import kerasviz`. `kerasviz.dashboard(model, images)` calls the module itself.
_LAZY_SUBMODULES = ("plot", "dashboard")


# Public functions named like the submodule that holds them: importing the submodule must not
# hide the function (`kerasviz.receptive_field` is the function, as it always was).
_FUNCTION_MODULES = ("receptive_field",)
_loading = False


def _load_api() -> None:
    global _loading
    if _loading:
        return
    _loading = True
    try:
        api = importlib.import_module("kerasviz._api")
    finally:
        _loading = False
    public = {k: v for k, v in vars(api).items() if not k.startswith("_")}
    globals().update(public)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"kerasviz.{name}")
    if not name.startswith("_") and not _loading:
        _load_api()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module 'kerasviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _FUNCTION_MODULES and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
    "SuperpixelAttribution",
    "ablation_cam",
    "eigen_cam",
    "hires_cam",
    "hires_cam_weights",
    "kernel_shap",
    "lime",
    "rise",
    "xgrad_cam",
    "xgrad_cam_weights",
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
    "dataset_scale",
    "explain_dataset",
    "open_explanations",
    "metrics",
    "plot",
    "dashboard",
    "receptive_field",
    "resize_bilinear",
    "resolve_layer",
    "top_channels",
]
