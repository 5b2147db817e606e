"""Measures computed from arrays: clustering, frequency-band errors, DCT band entropy, probes and correlations.

The choices where the papers are silent (band edges, pooling) are our reading (``gsr analyze``'s docstring).
"""
from typing import List, Tuple

import numpy as np
import torch
from scipy.fft import dctn
from sklearn.manifold import TSNE
from sklearn.metrics import calinski_harabasz_score


def calinski_harabasz(features: np.ndarray, labels: List[str]) -> float:
    """CHI = [tr(B)/(k−1)] / [tr(W)/(n−k)] (Caliński & Harabasz 1974): between- over within-cluster dispersion."""
    return float(calinski_harabasz_score(features, labels))


def radial_bands(shape: Tuple[int, int], bands: int) -> np.ndarray:
    """Band index (0 = lowest) of every FFT bin of an ``fftshift``-ed spectrum: equal-width radial rings up to
    the Nyquist radius; corners beyond it belong to the last band."""
    h, w = shape
    y, x = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing='ij')
    radius = np.sqrt(x**2 + y**2) / 0.5
    return np.minimum((radius * bands).astype(int), bands - 1)


def band_mape(sr: np.ndarray, gt: np.ndarray, bands: int = 8, eps: float = 1e-8) -> np.ndarray:
    """Per radial band: mean over its bins of |A_sr − A_gt| / |A_gt| × 100, with A the FFT amplitude of the
    grey image (mean over channels)."""

    def amplitude(img: np.ndarray) -> np.ndarray:
        grey = img.astype(np.float64).mean(axis=2) if img.ndim == 3 else img.astype(np.float64)
        return np.abs(np.fft.fftshift(np.fft.fft2(grey)))

    a_sr, a_gt = amplitude(sr), amplitude(gt)
    index = radial_bands(a_gt.shape, bands)
    ape = np.abs(a_sr - a_gt) / (a_gt + eps) * 100
    return np.array([ape[index == b].mean() for b in range(bands)])


def dominant_dct_bands(features: np.ndarray, bands: int = 8) -> np.ndarray:
    """For (C, H, W) features: each channel's band of largest DCT-II energy, bands split by (u/H + v/W).

    The DC coefficient (the channel mean) is left out: with it nearly every channel is dominated by band 1.
    """
    c, h, w = features.shape
    energy = dctn(features, axes=(1, 2), norm='ortho')**2
    energy[:, 0, 0] = 0
    u, v = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing='ij')
    index = np.minimum(((u + v) / 2 * bands).astype(int), bands - 1)
    per_band = np.stack([energy[:, index == b].sum(1) for b in range(bands)], axis=1)
    return per_band.argmax(1)


def entropy_bits(values: np.ndarray, bins: int) -> float:
    """Shannon entropy (bits) of the histogram of integer ``values`` in [0, bins)."""
    p = np.bincount(values, minlength=bins) / len(values)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


# ------------------------------------------------------------------------------------------- inputs


def tsne_embedding(feats: np.ndarray, seed: int) -> np.ndarray:
    return TSNE(2, perplexity=min(30., (len(feats) - 1) / 3), init='pca', random_state=seed).fit_transform(feats)


def feature_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> / (‖a‖ ‖b‖) of two flattened feature maps."""
    return float(torch.nn.functional.cosine_similarity(a.flatten()[None], b.flatten()[None]).item())


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


def probe_accuracy(features: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Held-out accuracy of a linear probe (standardised features, logistic regression), cross-validated with
    every group held out in turn (at most 5 folds), so that the test rows share no group with the training rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = GroupKFold(n_splits=min(5, len(np.unique(groups))))
    return float(cross_val_score(probe, features, labels, groups=groups, cv=folds).mean())


def radial_power(residual: np.ndarray, bands: int) -> np.ndarray:
    """Mean power |FFT|² of the grey residual in each radial band (``radial_bands``), DC left out."""
    grey = residual.astype(np.float64).mean(axis=2)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey)))**2 / grey.size
    index = radial_bands(power.shape, bands)
    power[power.shape[0] // 2, power.shape[1] // 2] = np.nan
    return np.array([np.nanmean(power[index == b]) for b in range(bands)])
