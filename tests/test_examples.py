"""Every example runs in fast mode and writes its figures.

The examples run in this process (each script's ``main(argv)``), so TensorFlow starts once and
the keras.applications models built by one example are reused by the next.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("[0-9][0-9]_*.py"))

# The figures each example must write (file stems).
EXPECTED = {
    "01_activations": ["input", "channel_raw", "channel_minmax", "grid_conv1", "grid_conv4",
                       "grid_conv4_global_then_max", "layer_progression"],
    "02_filter_weights": ["first_layer_rgb", "depth_sections", "channel_average", "nested_first"],
    "03_neuron_maximization": ["neurons_cropped_to_rf", "whole_input_with_rf"],
    "04_feature_map_maximization": ["shapes_cnn_conv4_patterns", "vgg16_block3_conv1_8x8"],
    "05_dreaming": ["class_dream", "class_dream_history", "deep_dream"],
    "06_gradcam_receptive_field": ["grad_cam_exact_vs_resize", "receptive_fields"],
    "07_signed_cam": ["signed_shapes_cnn", "each_class_shapes_cnn", "signed_shapes_nested"],
    "08_gradcam_layers": ["grad_cam_per_layer", "nested_grad_cam_per_layer",
                          "grad_cam_alternative_class"],
    "09_compare_attributions": ["attributions", "ig_black_signed"],
    "10_saliency_noise": ["saliency_clean_vs_noisy", "rank_correlation"],
    "11_inversion_depth": ["inversions", "ssim_vs_depth", "psnr_vs_depth"],
    "12_fgsm": ["fgsm_examples", "fgsm_saliency", "fgsm_activation_change"],
    "13_top_filters": ["top_channels_image_0", "top_channels_image_1", "top_channel_counts"],
    "14_compare_architectures": ["vgg16_grad_cam", "resnet50_grad_cam", "vgg16_progression",
                                 "resnet50_progression", "receptive_field_growth"],
}  # fmt: skip


def load(script: Path):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_one_example_per_workflow():
    assert [p.stem for p in SCRIPTS] == sorted(EXPECTED)
    for script in SCRIPTS:
        text = script.read_text()
        assert text.startswith('"""') and "--fast" in text, script.name


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_writes_its_figures(script, tmp_path, capsys):
    out = tmp_path / script.stem
    load(script).main(["--fast", "--out", str(out)])
    assert "wrote" in capsys.readouterr().out
    written = sorted(p.stem for p in out.glob("*.png"))
    missing = sorted(set(EXPECTED[script.stem]) - set(written))
    assert not missing, f"{script.stem} did not write {missing}"
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert min(image.size) >= 16, png.name
