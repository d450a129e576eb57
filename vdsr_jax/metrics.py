"""PSNR and SSIM under the VDSR evaluation protocol.

The protocol (Kim et al.'s MATLAB code) compares the Y channel scaled to
[0, 255] as float64, after shaving ``scale`` pixels off every border, so
both metrics take 2-D float arrays, a ``shave`` and a ``peak``.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

SSIM_WINDOW = 11  # the side of SSIM's Gaussian window: a shaved image must be at least this large


def shave_border(img, n: int) -> np.ndarray:
    """Drop ``n`` pixels from each border of axes 0 and 1 (boundary pixels
    of a super-resolved image are unreliable, so the protocol ignores them)."""
    img = np.asarray(img)
    if n < 0:
        raise ValueError(f"shave must be >= 0, got {n}")
    if 2 * n >= min(img.shape[0], img.shape[1]):
        raise ValueError(f"shave={n} leaves nothing of an image of shape {img.shape}")
    return img[n : img.shape[0] - n, n : img.shape[1] - n]


def _prepare(reference, test, shave: int) -> tuple[np.ndarray, np.ndarray]:
    """Check matching 2-D shapes, shave, cast to float64."""
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if reference.ndim != 2 or reference.shape != test.shape:
        raise ValueError(
            f"expected two 2-D arrays of the same shape, got {reference.shape} and {test.shape}"
        )
    return shave_border(reference, shave), shave_border(test, shave)


def psnr(reference, test, shave: int = 0, peak: float = 255.0) -> float:
    """``20 * log10(peak / rmse)`` over the shaved images.

    Returns ``inf`` for identical images (rmse = 0), where MATLAB would also
    give ``Inf``; callers averaging over a dataset should be aware of it.
    """
    reference, test = _prepare(reference, test, shave)
    rmse = np.sqrt(np.mean((reference - test) ** 2))
    if rmse == 0:
        return float("inf")
    return float(20 * np.log10(peak / rmse))


def ssim(reference, test, shave: int = 0, peak: float = 255.0) -> float:
    """Mean SSIM of Wang et al. (2004), as their MATLAB ``ssim_index``.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population
    statistics, mean over the 'valid' map.  scikit-image reproduces this
    exactly with these arguments: ``truncate=3.5`` gives the 11-tap normalised
    Gaussian, and it crops the 5-pixel filter radius, which leaves precisely
    the 'valid' region (verified against a direct implementation in tests).
    The shaved images must be at least 11x11.
    """
    reference, test = _prepare(reference, test, shave)
    return float(
        structural_similarity(
            reference,
            test,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=peak,
            K1=0.01,
            K2=0.03,
        )
    )
