"""The batched default transforms, the Fourier parametrization and total variation (issue 12).

Transforms composed into one resampling must reproduce the transforms applied one after the
other (exactly when at most one of them interpolates), be exact linear maps with their exact
adjoint as gradient, and run as one gather for the whole batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerasviz import optimize as opt
from kerasviz.optimize.params import _COLOR, FOURIER
from kerasviz.optimize.transforms import DEFAULT_TRANSFORMS, apply_transforms


def one_by_one(transforms, images, seed, step):
    """The transforms applied one after the other with apply_transforms' seeds, then cropped."""
    h, w = images.shape[1:3]
    for k, t in enumerate(transforms):
        images = t(images, tf.stack([seed, tf.cast(step, tf.int64) * 64 + k]))
    dh, dw = images.shape[1] - h, images.shape[2] - w
    return images[:, dh // 2 : dh // 2 + h, dw // 2 : dw // 2 + w, :]


@pytest.mark.parametrize(
    "chain",
    [
        (opt.jitter(4), opt.rotate(30.0), opt.jitter(3)),
        (opt.jitter(6), opt.scale((0.6, 0.8, 1.3, 1.5)), opt.jitter(1)),
        (opt.pad(3, value=0.2), opt.jitter(2), opt.scale((0.7, 1.4)), opt.jitter(5)),
        (opt.jitter(10), opt.jitter(2)),  # shifts only: exact slices
    ],
)
def test_one_interpolation_chains_equal_one_by_one(chain):
    # At most one interpolating transform: the composed coordinate maps (reflection for the
    # jitters, clamping for the zoom/rotation) give exactly the one-by-one result, borders
    # included, for shifts up to almost the canvas size.
    rng = np.random.default_rng(1)
    images = tf.constant(rng.random((2, 11, 13, 2)), tf.float32)
    seed = tf.constant(3, tf.int64)
    for step in range(8):
        fused = apply_transforms(chain, images, seed, tf.constant(step)).numpy()
        np.testing.assert_allclose(fused, one_by_one(chain, images, seed, step), atol=2e-6)


def test_default_chain_matches_one_by_one_on_a_ramp_and_moves_pixels():
    # Bilinear interpolation is exact on a linear image, so interpolating once (fused) or twice
    # (one by one) agree wherever no border clamp is involved: the geometry and its random
    # draws are the same.
    yy, xx = np.mgrid[0:41, 0:41].astype(np.float32)
    ramp = tf.constant(np.stack([0.02 * yy + 0.01 * xx, 0.5 - 0.015 * xx], -1)[None])
    seed = tf.constant(11, tf.int64)
    moved = 0
    for step in range(12):
        fused = apply_transforms(DEFAULT_TRANSFORMS, ramp, seed, tf.constant(step)).numpy()
        ref = one_by_one(DEFAULT_TRANSFORMS, ramp, seed, step).numpy()
        np.testing.assert_allclose(fused[:, 12:-12, 12:-12], ref[:, 12:-12, 12:-12], atol=1e-5)
        moved += np.abs(fused - ramp.numpy())[:, 12:-12, 12:-12].max() > 0.01
    assert moved >= 10  # the draws really shift, zoom and turn the image


def test_fused_transforms_are_linear_with_the_adjoint_as_gradient():
    rng = np.random.default_rng(2)
    u = tf.constant(rng.random((3, 17, 15, 3)), tf.float32)
    v = tf.constant(rng.random((3, 17, 15, 3)), tf.float32)
    seed, step = tf.constant(5, tf.int64), tf.constant(4)
    tu = apply_transforms(DEFAULT_TRANSFORMS, u, seed, step)
    tv = apply_transforms(DEFAULT_TRANSFORMS, v, seed, step)
    both = apply_transforms(DEFAULT_TRANSFORMS, 2.0 * u - v, seed, step)
    np.testing.assert_allclose(both, 2.0 * tu - tv, atol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(u)
        inner = tf.reduce_sum(apply_transforms(DEFAULT_TRANSFORMS, u, seed, step) * v)
    adjoint_v = tape.gradient(inner, u)  # T^T v
    # <T u, v> = <u, T^T v>, and each row's gradient depends on that row only.
    np.testing.assert_allclose(tf.reduce_sum(u * adjoint_v), inner, rtol=1e-5)
    row = apply_transforms(DEFAULT_TRANSFORMS, u[1:2], seed, step)
    np.testing.assert_allclose(row, tu[1:2], atol=1e-6)


def test_default_chain_is_one_gather_for_the_whole_batch():
    rows, h, w, c = 16, 32, 32, 3

    @tf.function
    def step(images, i):
        return apply_transforms(DEFAULT_TRANSFORMS, images, tf.constant(0, tf.int64), i)

    graph = step.get_concrete_function(
        tf.TensorSpec([rows, h, w, c], tf.float32), tf.TensorSpec([], tf.int32)
    ).graph
    image_gathers = [
        op
        for op in graph.get_operations()
        if op.type in ("GatherV2", "GatherNd", "ResourceGather")
        and op.outputs[0].shape.num_elements() not in (None, 1)
    ]
    assert [tuple(op.outputs[0].shape) for op in image_gathers] == [(4 * h * w, rows * c)]
    assert not [op for op in graph.get_operations() if "ImageProjective" in op.type]


def test_fourier_matches_the_plain_formula_and_its_gradient():
    rng = np.random.default_rng(3)
    h, w, c = 12, 10, 3
    params = tf.constant(rng.normal(0, 0.1, (2, c, h, w // 2 + 1, 2)), tf.float32)
    weight = tf.constant(rng.random((2, h, w, c)), tf.float32)

    def plain(p):
        scale = tf.constant(FOURIER._scale(h, w))
        spectrum = tf.complex(p[..., 0] * scale, p[..., 1] * scale)
        image = tf.transpose(tf.signal.irfft2d(spectrum, fft_length=[h, w]), [0, 2, 3, 1])
        return tf.sigmoid(tf.tensordot(image / 4.0, tf.constant(_COLOR.T), axes=1))

    grads = []
    for fn in (lambda p: FOURIER.to_unit(p, h, w, c), plain):
        with tf.GradientTape() as tape:
            tape.watch(params)
            unit = fn(params)
            loss = tf.reduce_sum(unit * weight)
        grads.append((unit.numpy(), tape.gradient(loss, params).numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0], atol=1e-6)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta", [2.0, 1.0, 1.5])
def test_total_variation_equals_forward_differences(beta):
    rng = np.random.default_rng(4)
    x = rng.random((2, 7, 5, 3)).astype(np.float32)
    dy = x[:, 1:, :-1] - x[:, :-1, :-1]
    dx = x[:, :-1, 1:] - x[:, :-1, :-1]
    squared = dy**2 + dx**2
    value = squared if beta == 2.0 else (squared + 1e-8) ** (beta / 2)
    expected = 0.3 * value.mean(axis=(1, 2, 3))
    got = opt.total_variation(0.3, beta)(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
