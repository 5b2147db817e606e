"""Where in frequency the error and the features sit (Wang et al., CVPR 2024, Figs. 2 and 3) and why noise differs
from blur and JPEG (TFD, arXiv 2509.14841): per-setting curves over radial or DCT bands.

Band edges and averaging are our reading (``gsr analyze``'s docstring).
"""
from collections import OrderedDict
from typing import Dict, List, Tuple

import numpy as np
from torch import nn

from gsr.analysis.measures import band_mape, dominant_dct_bands, entropy_bits, radial_power
from gsr.analysis.representation import SINGLE, ImageSet, tapped_features
from gsr.archs.feature_tap import FeatureTap
from gsr.data.eval_protocol import degrade_file
from gsr.utils.image_io import list_images
from gsr.utils.inference import super_resolve


def frequency_band_errors(net: nn.Module, images: ImageSet, bands: int, tile: int = 0) -> Dict[str, np.ndarray]:
    """Per setting, the FFT-amplitude error of SR against HR per radial band (``band_mape``), averaged over images."""
    per_setting: Dict[str, List[np.ndarray]] = OrderedDict()
    for _, setting, lr, hr in images.degraded():
        sr = super_resolve(net, lr, images.scale, tile)
        per_setting.setdefault(setting, []).append(band_mape(sr, hr, bands))
    return OrderedDict((s, np.mean(v, axis=0)) for s, v in per_setting.items())


def dominant_band_statistics(net: nn.Module, tap: FeatureTap, images: ImageSet,
                             bands: int) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
    """Per setting: the entropy (bits) of the tapped channels' dominant DCT bands, averaged over images, and the
    share of channels whose dominant band is each band (pooled over images)."""
    per_setting: Dict[str, List[np.ndarray]] = OrderedDict()
    for _, setting, lr, _ in images.degraded():
        feats = tapped_features(net, tap, lr).cpu().numpy()
        per_setting.setdefault(setting, []).append(dominant_dct_bands(feats, bands))
    entropy = OrderedDict((s, float(np.mean([entropy_bits(d, bands) for d in v]))) for s, v in per_setting.items())
    shares = OrderedDict((s, np.bincount(np.concatenate(d), minlength=bands) / sum(map(len, d)))
                         for s, d in per_setting.items())
    return entropy, shares


def degradation_spectra(images: ImageSet, bands: int) -> Dict[str, np.ndarray]:
    """Per single degradation, the radially averaged power of (degraded LR − clean LR), averaged over images: flat
    for i.i.d. noise, band-limited for blur and JPEG. Needs no network."""
    spectra: Dict[str, List[np.ndarray]] = OrderedDict((s, []) for s in SINGLE)
    for path in list_images(images.hr):
        _, lrs = degrade_file(path, ['clean'] + list(SINGLE), images.scale, images.noise_sigma, images.seed)
        for setting in SINGLE:
            spectra[setting].append(radial_power(lrs[setting].astype(np.float64) - lrs['clean'], bands))
    return OrderedDict((s, np.mean(v, axis=0)) for s, v in spectra.items())


def spectral_spread(curve: np.ndarray) -> float:
    """std / mean of a band curve: 0 for a flat spectrum."""
    return float(curve.std() / curve.mean())
