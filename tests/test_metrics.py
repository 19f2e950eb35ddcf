"""PSNR and SSIM against an independent implementation: scikit-image's
``peak_signal_noise_ratio`` and ``structural_similarity`` on the same images (Wang et al.
2004 settings: Gaussian window with sigma 1.5, population covariance, data range 1,
channels averaged)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from switchnerf.train.metrics import psnr, ssim


def _pair(h, w, noise, seed):
    """A structured image in [0, 1] [H, W, 3] (float32) and a noisy, shifted copy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(7 * xx + 3 * yy), np.cos(5 * yy - 2 * xx), xx * yy], -1)
    target = (0.5 + 0.4 * base + 0.05 * rng.standard_normal((h, w, 3))).clip(0, 1)
    pred = (np.roll(target, 1, axis=1) + noise * rng.standard_normal((h, w, 3))).clip(0, 1)
    return pred.astype(np.float32), target.astype(np.float32)


def _skimage_ssim(pred, target):
    return structural_similarity(target, pred, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0, channel_axis=-1)


CASES = [(48, 64, 0.02, 0), (37, 53, 0.1, 1), (11, 11, 0.05, 2), (96, 80, 0.3, 3)]


@pytest.mark.parametrize("h, w, noise, seed", CASES)
def test_psnr_matches_skimage(h, w, noise, seed):
    pred, target = _pair(h, w, noise, seed)
    want = peak_signal_noise_ratio(target.astype(np.float64), pred.astype(np.float64),
                                   data_range=1.0)
    got = psnr(torch.from_numpy(pred), torch.from_numpy(target))
    assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("h, w, noise, seed", CASES)
def test_ssim_matches_skimage(h, w, noise, seed):
    pred, target = _pair(h, w, noise, seed)
    want = _skimage_ssim(pred.astype(np.float64), target.astype(np.float64))
    got = ssim(torch.from_numpy(pred), torch.from_numpy(target))
    assert got == pytest.approx(want, abs=1e-6)
    assert 0.0 < got < 1.0


def test_ssim_is_one_and_psnr_infinite_for_equal_images():
    _pred, target = _pair(24, 24, 0.0, 4)
    t = torch.from_numpy(target)
    assert ssim(t, t.clone()) == pytest.approx(1.0, abs=1e-12)
    assert _skimage_ssim(target, target) == pytest.approx(1.0, abs=1e-12)
    assert psnr(t, t.clone()) == math.inf


def test_ssim_settings_matter():
    """The comparison can fail: another sigma gives another value."""
    pred, target = _pair(48, 64, 0.1, 5)
    other = structural_similarity(target, pred, gaussian_weights=True, sigma=3.0,
                                  use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    got = ssim(torch.from_numpy(pred), torch.from_numpy(target))
    assert abs(got - other) > 1e-3
