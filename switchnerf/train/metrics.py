"""Image metrics: PSNR, SSIM (Wang et al. 2004, Gaussian window), LPIPS when available."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """``-10 log10(mean((pred - target)^2))`` for images in [0, 1]."""
    mse = torch.mean((pred.float() - target.float()) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _gaussian_window(size: int, sigma: float, device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of two images [H, W, C] in [0, 1] (valid-region Gaussian filtering).

    Constants K1 = 0.01, K2 = 0.03 with data range 1, channels averaged, as in the
    reference implementation used by NeRF papers (and skimage with gaussian_weights=True).
    """
    x = pred.double().permute(2, 0, 1).unsqueeze(0)
    y = target.double().permute(2, 0, 1).unsqueeze(0)
    c = x.shape[1]
    win = min(window, x.shape[2], x.shape[3])
    if win % 2 == 0:
        win -= 1
    g = _gaussian_window(win, sigma, x.device)
    kx = g.view(1, 1, 1, win).expand(c, 1, 1, win)
    ky = g.view(1, 1, win, 1).expand(c, 1, win, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


class LpipsMetric:
    """LPIPS (AlexNet) when the ``lpips`` package and its backbone weights are on disk.

    Nothing is downloaded: without local weights ``available`` is False and ``reason``
    says why; callers report null.
    """

    def __init__(self):
        self.model = None
        self.reason = ""
        try:
            import lpips
        except ImportError:
            self.reason = "the lpips package is not installed (pip install lpips)"
            return
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        if not any(hub.glob("alexnet-*.pth")):
            self.reason = f"AlexNet weights for LPIPS are not in {hub} (nothing is downloaded)"
            return
        import lpips

        self.model = lpips.LPIPS(net="alex", verbose=False).eval()

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> float | None:
        if self.model is None:
            return None
        a = pred.float().permute(2, 0, 1).unsqueeze(0) * 2 - 1
        b = target.float().permute(2, 0, 1).unsqueeze(0) * 2 - 1
        return float(self.model(a, b).item())
