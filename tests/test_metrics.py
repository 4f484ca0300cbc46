"""Metrics: SSIM/PSNR, localization scores, deletion/insertion and the randomization check."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from kerasviz import metrics

# ---------------------------------------------------------------- ssim / psnr


def test_ssim_and_psnr_of_identical_images():
    x = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(metrics.ssim(x, x), np.ones(3), atol=1e-6)
    assert np.all(np.isinf(metrics.psnr(x, x)))
    assert metrics.ssim(x[0], x[0]) == pytest.approx(1.0, abs=1e-6)
    assert isinstance(metrics.psnr(x[0], x[0]), float)


def test_psnr_of_a_constant_offset():
    x = np.random.default_rng(1).random((2, 8, 8, 3)) * 0.5
    # MSE = 0.1**2 = 0.01, so PSNR = 10 log10(1 / 0.01) = 20 dB.
    np.testing.assert_allclose(metrics.psnr(x + 0.1, x), [20.0, 20.0], atol=1e-9)
    # With max_val=255 and an offset of 5: 10 log10(255**2 / 25) = 20 log10(51).
    got = metrics.psnr(x[0] * 255 + 5, x[0] * 255, max_val=255)
    assert got == pytest.approx(20 * np.log10(51), abs=1e-9)


def test_ssim_agrees_with_scikit_image():
    rng = np.random.default_rng(2)
    x = rng.random((2, 32, 32, 3), dtype=np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    reference = [
        structural_similarity(
            x[i],
            y[i],
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for i in range(2)
    ]
    got = metrics.ssim(x, y)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    assert got.shape == (2,) and np.all(got < 0.99)


def test_ssim_psnr_bad_input():
    x = np.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(x, x[:1])
    with pytest.raises(ValueError, match="max_val"):
        metrics.psnr(x, x, max_val=0)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        metrics.psnr(bad, x)
