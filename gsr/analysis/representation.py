"""What a network's features say about the degradation of its input: the deep degradation representation (DDR,
Liu et al., arXiv 2108.00406) and the clean/degraded feature cosine similarity (TFD, arXiv 2509.14841, Sec. 3).

The pooling, crop sampling, tapped layer and clean reference are our reading (``gsr analyze``'s docstring).
"""
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from gsr.analysis.measures import calinski_harabasz, feature_cosine, tsne_embedding
from gsr.archs.attached_arch import backbone_of
from gsr.archs.feature_tap import FeatureTap
from gsr.data.blind_protocol import degrade_blind_file, protocol_settings
from gsr.data.classic_degrader import ClassicDegradationOptions, fixed_draws
from gsr.data.eval_protocol import degrade_file, noise_seed
from gsr.data.kernel_pca import load_kernel_pca
from gsr.models.lightbsr_model import classic_prior
from gsr.utils.errors import GsrError
from gsr.utils.image_io import list_images
from gsr.utils.inference import to_tensor
from gsr.utils.options import options_from_dict


@dataclass(frozen=True)
class ImageSet:
    """The HR images of folder ``hr`` and how an analysis degrades them: the ``settings`` of the eight-setting
    protocol (noise sigma ``noise_sigma``, seeded per image from ``seed``) or every setting of a blind ``protocol``
    (``gsr.data.blind_protocol``)."""
    hr: str
    scale: int
    noise_sigma: float
    seed: int
    settings: Sequence[str] = ()
    protocol: str = 'eight'

    def degraded(self) -> Iterator[Tuple[str, str, np.ndarray, np.ndarray]]:
        """Yield (image name, setting, LR, HR) for every image and setting (uint8 RGB)."""
        for path in list_images(self.hr):
            name = os.path.splitext(os.path.basename(path))[0]
            if self.protocol == 'eight':
                hr, lrs = degrade_file(path, list(self.settings), self.scale, self.noise_sigma, self.seed)
            else:
                hr, lrs = degrade_blind_file(path, self.protocol, self.scale, self.seed)
            for setting, lr in lrs.items():
                yield name, setting, lr, hr


def lr_crops(lr: np.ndarray, crop: int, count: int, rng: np.random.Generator) -> List[np.ndarray]:
    if crop <= 0:
        return [lr]
    h, w = lr.shape[:2]
    if h < crop or w < crop:
        return [lr]
    return [
        lr[y:y + crop, x:x + crop]
        for y, x in zip(rng.integers(0, h - crop + 1, count), rng.integers(0, w - crop + 1, count))
    ]


@torch.no_grad()
def tapped_features(net, tap: FeatureTap, lr: np.ndarray) -> torch.Tensor:
    net(to_tensor(lr, next(net.parameters()).device))
    return tap.features[0]


@torch.no_grad()
def degradation_representation(net, tap: Optional[FeatureTap], lr: np.ndarray,
                               prior: Optional[torch.Tensor] = None) -> np.ndarray:
    """What ``ddr`` clusters: LightBSR's channel IDR (a teacher's with the setting's ``prior``), or the tapped
    features average-pooled."""
    if tap is None:
        x = to_tensor(lr, next(net.parameters()).device)
        return backbone_of(net).representations(x, prior)[1][0].cpu().numpy()
    return tapped_features(net, tap, lr).mean((1, 2)).cpu().numpy()


def teacher_priors(opt: Dict, protocol: str) -> Dict[str, torch.Tensor]:
    """A LightBSR teacher's prior for every setting of a blind protocol (the settings' kernels and noise are
    known), computed as in training from the option file's ``kernel_pca`` and ``classic_degradation``."""
    if protocol == 'eight' or not opt.get('classic_degradation'):
        raise GsrError('gsr analyze ddr: a LightBSR teacher needs its prior, known here for --protocol blind-iso or '
                       'blind-aniso and a teacher trained with classic_degradation')
    options = options_from_dict(ClassicDegradationOptions, opt['classic_degradation'], 'classic_degradation')
    basis = load_kernel_pca(opt.get('kernel_pca') or '', 'kernel_pca')['basis']
    return {name: classic_prior(fixed_draws(*([v] for v in setting)), basis, options)
            for name, setting in protocol_settings(protocol).items()}


def ddr_features(net, tap: Optional[FeatureTap], images: ImageSet, crop: int, crops_per_image: int,
                 priors: Optional[Dict[str, torch.Tensor]] = None) -> Tuple[np.ndarray, List[str]]:
    """The DDR of every crop (rows) and its setting (labels); the same crops under every setting (``crop`` 0: the
    whole LR image); ``priors``: a LightBSR teacher's prior per setting."""
    feats, labels = [], []
    priors = priors or {}
    for name, setting, lr, _ in images.degraded():
        rng = np.random.default_rng(noise_seed(images.seed, name, 'crops'))  # same crops under every setting
        for piece in lr_crops(lr, crop, crops_per_image, rng):
            feats.append(degradation_representation(net, tap, piece, priors.get(setting)))
            labels.append(setting)
    return np.stack(feats), labels


@dataclass
class DdrClustering:
    """How much the DDR clusters by setting: the Calinski-Harabasz index of the pooled features (``chi``) and of
    their 2-D t-SNE embedding (``chi_embedded``; the alignment paper's Sec. 5 does not say which it used)."""
    features: np.ndarray
    labels: List[str]
    embedded: np.ndarray
    chi: float
    chi_embedded: float


def ddr_clustering(net: nn.Module, tap: Optional[FeatureTap], images: ImageSet, crop: int, crops_per_image: int,
                   priors: Optional[Dict[str, torch.Tensor]] = None) -> DdrClustering:
    """``ddr_features`` and their clustering by setting (t-SNE seeded with ``images.seed``)."""
    feats, labels = ddr_features(net, tap, images, crop, crops_per_image, priors)
    embedded = tsne_embedding(feats, images.seed)
    return DdrClustering(feats, labels, embedded, calinski_harabasz(feats, labels),
                         calinski_harabasz(embedded, labels))


SINGLE = ('blur', 'noise', 'jpeg')


def cossim_per_image(net, tap: FeatureTap, images: List[Dict[str, np.ndarray]]) -> Dict[str, List[float]]:
    """For each single degradation, the cosine similarity of the tapped features of each image's clean LR and its
    degraded LR (``images``: setting -> LR per image, from ``degrade_file``)."""
    values: Dict[str, List[float]] = OrderedDict((s, []) for s in SINGLE)
    for lrs in images:
        clean = tapped_features(net, tap, lrs['clean'])
        for setting in SINGLE:
            values[setting].append(feature_cosine(clean, tapped_features(net, tap, lrs[setting])))
    return values


def cossim_images(images: ImageSet) -> List[Dict[str, np.ndarray]]:
    """Per image: setting -> LR for the clean setting and each single degradation."""
    return [degrade_file(path, ['clean'] + list(SINGLE), images.scale, images.noise_sigma, images.seed)[1]
            for path in list_images(images.hr)]


def cossim_curves(networks: Iterable[nn.Module], layer: str, images: ImageSet) -> Dict[str, List[float]]:
    """For each single degradation, ``cossim_per_image`` averaged over images, one value per network (e.g. the
    checkpoints of one run in training order): which degradation the features overfit to as training goes on."""
    lrs = cossim_images(images)
    curves: Dict[str, List[float]] = OrderedDict((s, []) for s in SINGLE)
    for net in networks:
        for setting, values in cossim_per_image(net, FeatureTap(net, layer), lrs).items():
            curves[setting].append(float(np.mean(values)))
    return curves
