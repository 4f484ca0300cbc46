"""kerasviz: see what a trained Keras CNN has learned."""

from kerasviz import metrics
from kerasviz._layers import default_cam_layer, resolve_layer
from kerasviz._probe import Probe, get_probe
from kerasviz.features import (
    TopChannels,
    feature_maps,
    filter_weights,
    layer_statistics,
    top_channels,
)

__version__ = "0.1.0"

__all__ = [
    "Probe",
    "TopChannels",
    "default_cam_layer",
    "feature_maps",
    "filter_weights",
    "get_probe",
    "layer_statistics",
    "metrics",
    "resolve_layer",
    "top_channels",
]
