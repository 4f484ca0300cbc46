"""Attribution speed: kerasviz against the compute limit and against tf-keras-vis, side by side.

- grad_cam on VGG16 (weights=None), batch 8 at 224x224, against a compiled pass computing the
  logits and the gradient of the class score with respect to block5_conv3's output (the
  compute limit: Grad-CAM needs nothing more), and against tf-keras-vis Gradcam.
- smoothgrad, 20 samples, small CNN, batch 8 at 32x32 and 64x64, against tf-keras-vis
  Saliency(smooth_samples=20).
- integrated_gradients, 50 steps, small CNN, batch 8, against 50 compiled forward and backward
  passes of the batch (gradient of the class logit with respect to the input).
- score_cam, small CNN, batch 8, against tf-keras-vis Scorecam (same batch_size).

All timings are warm medians of interleaved repeats. Run:
    .venv/bin/python benchmarks/bench_attribution.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved, report  # noqa: E402
from tf_keras_vis.gradcam import Gradcam  # noqa: E402
from tf_keras_vis.saliency import Saliency  # noqa: E402
from tf_keras_vis.scorecam import Scorecam  # noqa: E402
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear  # noqa: E402
from tf_keras_vis.utils.scores import CategoricalScore  # noqa: E402

import kerasviz  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
keras.config.disable_interactive_logging()


def small_cnn(size: int) -> keras.Model:
    """A small functional CNN (functional: tf-keras-vis' ReplaceToLinear needs output_names)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (32, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    for filters in (64, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def bench_grad_cam(size: int, batch: int, repeats: int) -> None:
    model = keras.applications.VGG16(weights=None, input_shape=(size, size, 3))
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32) * 255
    targets = list(range(batch))
    conv = model.get_layer("block5_conv3")
    limit_model = keras.Model(model.inputs, [conv.output, model.get_layer("predictions").input])
    head = model.get_layer("predictions")
    xt, idx = tf.constant(x), tf.constant(targets)

    @tf.function
    def limit(images):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(images)
            features, penultimate = limit_model(images, training=False)
            logits = tf.matmul(penultimate, head.kernel) + head.bias
            scores = tf.gather(logits, idx, batch_dims=1)
        return logits, tape.gradient(scores, features)

    theirs = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
    score = CategoricalScore(targets)
    times = interleaved(
        {
            "limit": lambda: [t.numpy() for t in limit(xt)],
            "kerasviz": lambda: kerasviz.grad_cam(model, x, targets, "block5_conv3"),
            "tf-keras-vis": lambda: theirs(score, x, penultimate_layer="block5_conv3"),
        },
        repeats=repeats,
    )
    print(f"\n[grad_cam] VGG16 weights=None, batch {batch} at {size}x{size}, layer block5_conv3")
    for name, value in times.items():
        print(f"  {name:>13}: {value * 1000:9.1f} ms")
    ratio = times["kerasviz"] / times["limit"]
    print(
        report("  grad_cam / (forward + backward to block5_conv3)", ratio, "<= 1.3x", ratio <= 1.3)
    )
    speedup = times["tf-keras-vis"] / times["kerasviz"]
    print(report("  speedup vs tf-keras-vis Gradcam", speedup, ">= 2.5x", speedup >= 2.5))


def _setup_small(size: int, batch: int):
    """The small CNN, a batch, its targets, and one compiled forward+backward pass."""
    model = small_cnn(size)
    x = np.random.default_rng(1).random((batch, size, size, 3), dtype=np.float32)
    targets = [i % 10 for i in range(batch)]
    xt, idx = tf.constant(x), tf.constant(targets)
    probe = kerasviz.get_probe(model)

    @tf.function
    def one_pass(images):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(images)
            _, logits = probe([images])
            scores = tf.gather(logits, idx, batch_dims=1)
        return tape.gradient(scores, images)

    def passes(count: int, along_path: bool):
        """``count`` compiled forward+backward passes of the batch: the compute limit."""
        total = tf.zeros_like(xt)
        for k in range(count):
            scale = (k + 0.5) / count
            total += one_pass(xt * scale if along_path else xt + 0.01 * scale)
        return (total / count).numpy()

    return model, x, targets, passes


def bench_smoothgrad(size: int, batch: int, repeats: int) -> None:
    """SmoothGrad, 20 samples, noise 0.1 of the range, against tf-keras-vis and the limit."""
    model, x, targets, passes = _setup_small(size, batch)
    score = CategoricalScore(targets)
    saliency = Saliency(model, model_modifier=ReplaceToLinear(), clone=True)
    times = interleaved(
        {
            "20 passes": lambda: passes(20, along_path=False),
            "kerasviz": lambda: kerasviz.smoothgrad(model, x, targets, samples=20, noise=0.1),
            "tf-keras-vis": lambda: saliency(score, x, smooth_samples=20, smooth_noise=0.1),
        },
        repeats=repeats,
    )
    print(f"\n[smoothgrad] small CNN, batch {batch} at {size}x{size}, 20 samples")
    for name, value in times.items():
        print(f"  {name:>13}: {value * 1000:9.1f} ms")
    limit = times["kerasviz"] / times["20 passes"]
    print(f"  smoothgrad / 20 compiled forward+backward passes: {limit:.2f}x (for reference)")
    speedup = times["tf-keras-vis"] / times["kerasviz"]
    label = "  speedup vs tf-keras-vis Saliency(smooth_samples=20)"
    print(report(label, speedup, ">= 5x", speedup >= 5))


def bench_small(size: int, batch: int, repeats: int) -> None:
    model, x, targets, passes = _setup_small(size, batch)
    score = CategoricalScore(targets)

    # Integrated gradients, 50 steps, against 50 compiled forward+backward passes of the batch.
    times = interleaved(
        {
            "50 passes": lambda: passes(50, along_path=True),
            "kerasviz": lambda: kerasviz.integrated_gradients(model, x, targets, steps=50),
        },
        repeats=repeats,
    )
    print(f"\n[integrated_gradients] small CNN, batch {batch} at {size}x{size}, 50 steps")
    for name, value in times.items():
        print(f"  {name:>13}: {value * 1000:9.1f} ms")
    ratio = times["kerasviz"] / times["50 passes"]
    label = "  integrated_gradients / 50 forward+backward passes"
    print(report(label, ratio, "<= 1.3x", ratio <= 1.3))

    # Score-CAM on last_conv (128 channels): 128 * batch masked images, 64 rows per pass.
    scorecam = Scorecam(model, model_modifier=ReplaceToLinear(), clone=True)
    times = interleaved(
        {
            "kerasviz": lambda: kerasviz.score_cam(model, x, targets, "last_conv", batch_size=64),
            "tf-keras-vis": lambda: scorecam(
                score, x, penultimate_layer="last_conv", batch_size=64
            ),
        },
        repeats=max(1, repeats // 2),
    )
    print(f"\n[score_cam] small CNN, batch {batch} at {size}x{size}, 128 channels, 64 rows/pass")
    for name, value in times.items():
        print(f"  {name:>13}: {value * 1000:9.1f} ms")
    speedup = times["tf-keras-vis"] / times["kerasviz"]
    print(report("  speedup vs tf-keras-vis Scorecam", speedup, "> 1x", speedup > 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs for a smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices: "
        f"{[d.device_type for d in tf.config.list_logical_devices()]}"
    )
    if args.quick:
        bench_grad_cam(64, 2, args.repeats)
        bench_smoothgrad(32, 4, args.repeats)
        bench_small(32, 4, args.repeats)
    else:
        bench_grad_cam(224, 8, args.repeats)
        # SmoothGrad at a CIFAR-sized and at a larger input: on a CPU both libraries pay the
        # same convolutions, so the ratio shrinks as the per-pass compute grows.
        bench_smoothgrad(32, 8, args.repeats)
        bench_smoothgrad(64, 8, args.repeats)
        bench_small(64, 8, args.repeats)


if __name__ == "__main__":
    main()
