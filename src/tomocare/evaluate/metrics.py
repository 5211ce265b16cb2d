"""Restoration quality against a reference: PSNR, NRMSE and MSE after an optional affine fit."""

from __future__ import annotations

import numpy as np


def affine_fit(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``a * x + b`` with ``a, b`` minimising the squared error to ``reference``.

    Denoisers and references differ in scale and offset (normalisation, missing DC): the fit
    makes the comparison about structure, as in the cryo-CARE and 3-D denoising literature.
    """
    x64, r64 = x.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    xc = x64 - x64.mean()
    var = float(xc @ xc)
    a = float(xc @ (r64 - r64.mean())) / var if var > 0 else 0.0
    b = r64.mean() - a * x64.mean()
    return (a * x.astype(np.float64) + b).reshape(x.shape)


def mse(x: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean((x.astype(np.float64) - reference.astype(np.float64)) ** 2))


def psnr(x: np.ndarray, reference: np.ndarray, *, fit: bool = True) -> float:
    """Peak signal-to-noise ratio in dB; the peak is the reference's range (max - min)."""
    if fit:
        x = affine_fit(x, reference)
    peak = float(reference.max() - reference.min())
    return float(10 * np.log10(peak**2 / mse(x, reference)))


def nrmse(x: np.ndarray, reference: np.ndarray, *, fit: bool = True) -> float:
    """Root-mean-square error divided by the reference's standard deviation."""
    if fit:
        x = affine_fit(x, reference)
    return float(np.sqrt(mse(x, reference)) / reference.astype(np.float64).std())
