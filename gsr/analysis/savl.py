"""SAVL's analyses (ICLR 2026, our reading, docs/SAVL.md): does the inferred per-pixel variance follow the true local
degradation, and how much image content the degradation representation carries (linear probes).
"""
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import nn

from gsr.analysis.measures import correlation, probe_accuracy
from gsr.archs.attached_arch import backbone_of
from gsr.data import spatial_protocol
from gsr.data.eval_protocol import degrade_file, lr_folder
from gsr.utils.errors import GsrError
from gsr.utils.image_io import list_images, read_image_uint8_rgb
from gsr.utils.inference import to_tensor

LEAKAGE_NOISE = (0, 10, 20, 30, 40)  # the noise-level classes of the leakage probes, sigma in 0-255 units


def savl_estimator(net: nn.Module, analysis: str) -> nn.Module:
    """The degradation estimator of a SAVL network (``gsr analyze <analysis>`` needs one)."""
    if not hasattr(backbone_of(net), 'estimator'):
        raise GsrError(f'gsr analyze {analysis} needs a network with a SAVL estimator (network_g type SAVLNet)')
    return backbone_of(net).estimator


class SpatialSample(NamedTuple):
    family: str
    name: str
    lr: np.ndarray  # uint8 RGB
    maps: Dict[str, np.ndarray]  # the true per-pixel 'noise_sigma' and 'blur_sigma'


def spatial_samples(hr: str, scale: int, seed: int, sets: Optional[str] = None) -> Iterator[SpatialSample]:
    """The spatial protocol's images: read from ``sets`` (a ``gsr degrade --protocol spatial`` folder, its maps
    checked against its images) or generated from the HR folder ``hr``."""
    for family in spatial_protocol.FAMILIES:
        if sets:
            folder = os.path.join(sets, lr_folder('spatial'), family)
            lrs = {os.path.splitext(os.path.basename(p))[0]: read_image_uint8_rgb(p) for p in list_images(folder)}
            maps = spatial_protocol.load_true_maps(os.path.join(sets, 'maps_spatial', family), list(lrs),
                                                   {n: lr.shape[:2] for n, lr in lrs.items()})
            for name, lr in lrs.items():
                yield SpatialSample(family, name, lr, maps[name])
        else:
            for path in list_images(hr):
                _, lr, maps = spatial_protocol.degrade_spatial_file(path, family, scale, seed)
                yield SpatialSample(family, os.path.splitext(os.path.basename(path))[0], lr, maps)


@dataclass
class FamilyVariance:
    """``variance_statistics`` of one map family; ``example``: its first image and the inferred variance map."""
    noise_correlations: List[float] = field(default_factory=list)
    blur_correlations: List[float] = field(default_factory=list)
    readout_r2: float = float('nan')
    example: Optional[Tuple[SpatialSample, np.ndarray]] = None


@torch.no_grad()
def variance_statistics(net: nn.Module, samples: Iterator[SpatialSample]) -> Dict[str, FamilyVariance]:
    """Per map family: the per-image Pearson correlation of the inferred variance (sigma² averaged over the latent
    dims) with the true noise and blur maps, and the in-sample R² of a least-squares linear read-out of the posterior
    mean (every pixel of the family) to the noise map."""
    estimator = savl_estimator(net, 'variance')
    stats: Dict[str, FamilyVariance] = OrderedDict()
    means: Dict[str, List[np.ndarray]] = {}
    targets: Dict[str, List[np.ndarray]] = {}
    for sample in samples:
        mean, log_var = estimator(to_tensor(sample.lr, next(net.parameters()).device))
        variance = log_var.exp().mean(1)[0].cpu().numpy()
        family = stats.setdefault(sample.family, FamilyVariance())
        family.noise_correlations.append(correlation(variance, sample.maps['noise_sigma']))
        family.blur_correlations.append(correlation(variance, sample.maps['blur_sigma']))
        family.example = family.example or (sample, variance)
        means.setdefault(sample.family, []).append(mean[0].flatten(1).t().cpu().numpy())
        targets.setdefault(sample.family, []).append(sample.maps['noise_sigma'].ravel())
    for name, family in stats.items():
        features, target = np.concatenate(means[name]), np.concatenate(targets[name])
        design = np.concatenate([features, np.ones((len(features), 1))], 1)
        fit = design @ np.linalg.lstsq(design, target, rcond=None)[0]
        family.readout_r2 = float(1 - ((target - fit)**2).sum() / max(((target - target.mean())**2).sum(), 1e-12))
    return stats


class LeakageSample(NamedTuple):
    scene: int  # which image
    level: int  # index into LEAKAGE_NOISE
    position: int  # which crop position of the image
    lr: np.ndarray  # uint8 RGB crop


def leakage_samples(hr: str, scale: int, noise_sigma: float, seed: int, crop: int,
                    crops_per_image: int) -> List[LeakageSample]:
    """``crops_per_image`` positions per image of ``hr``, the same positions under every level of ``LEAKAGE_NOISE``
    added to the bicubic LR (seeded); ``crop`` 0: the largest square."""
    rng = np.random.default_rng(seed)
    samples = []
    for scene, path in enumerate(list_images(hr)):
        clean = degrade_file(path, ['clean'], scale, noise_sigma, seed)[1]['clean'].astype(np.float32)
        h, w = clean.shape[:2]
        side = min(crop, h, w) if crop > 0 else min(h, w)
        corners = list(zip(rng.integers(0, h - side + 1, crops_per_image),
                           rng.integers(0, w - side + 1, crops_per_image)))
        for level, sigma in enumerate(LEAKAGE_NOISE):
            noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
            samples += [LeakageSample(scene, level, i, noisy[y:y + side, x:x + side])
                        for i, (y, x) in enumerate(corners)]
    if len({s.scene for s in samples}) < 2 or len({s.position for s in samples}) < 2:
        raise GsrError('gsr analyze leakage needs at least 2 images in --hr and --crops-per-image >= 2')
    return samples


@torch.no_grad()
def leakage_probes(net: nn.Module, samples: List[LeakageSample]) -> Tuple[float, float]:
    """SAVL's Scene-ID and noise-level accuracies of linear probes on the posterior mean, average-pooled per crop:
    the scene tested on crop positions it was not trained on (content leakage, lower is better), the noise level on
    images it was not trained on (higher is better)."""
    estimator = savl_estimator(net, 'leakage')
    device = next(net.parameters()).device
    features = torch.stack([estimator(to_tensor(s.lr, device))[0].mean((2, 3))[0] for s in samples]).cpu().numpy()
    scenes, levels, positions = (np.array([s[i] for s in samples]) for i in range(3))
    return probe_accuracy(features, scenes, positions), probe_accuracy(features, levels, scenes)
