"""LPIPS (Zhang et al., CVPR 2018) as a BasicSR metric, through the ``lpips`` package with its real backbones.

The AlexNet/VGG ImageNet weights come from the torch hub cache (``$TORCH_HOME/hub/checkpoints``); nothing is
downloaded here. Where they are absent the metric says so once and yields NaN (the benchmark drops the
column): a number computed with a random backbone is never reported. ``random_backbone=True`` exists for
testing the plumbing only.
"""
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from basicsr.metrics.metric_util import reorder_image
from basicsr.utils import get_root_logger
from basicsr.utils.registry import METRIC_REGISTRY

from gsr.utils.errors import GsrError

BACKBONE_FILES = {'alex': 'alexnet-owt-7be5be79.pth', 'vgg': 'vgg16-397923af.pth'}
_MODELS: Dict[Tuple[str, bool], torch.nn.Module] = {}
_WARNED = set()


def backbone_path(net: str) -> str:
    if net not in BACKBONE_FILES:
        raise GsrError(f'LPIPS net must be one of {", ".join(BACKBONE_FILES)}, got {net!r}')
    return os.path.join(torch.hub.get_dir(), 'checkpoints', BACKBONE_FILES[net])


def lpips_available(net: str = 'alex') -> bool:
    return os.path.isfile(backbone_path(net))


def build_lpips(net: str = 'alex', random_backbone: bool = False) -> torch.nn.Module:
    """The LPIPS model; raises GsrError when the real backbone is not available locally."""
    key = (net, random_backbone)
    if key not in _MODELS:
        if not random_backbone and not lpips_available(net):
            raise GsrError(f'LPIPS-{net} needs the ImageNet backbone at {backbone_path(net)} (not downloadable here)')
        import lpips
        _MODELS[key] = lpips.LPIPS(net=net, pnet_rand=random_backbone, verbose=False).eval()
    return _MODELS[key]


@torch.no_grad()
def lpips_distance(model: torch.nn.Module, img: np.ndarray, img2: np.ndarray) -> float:
    """LPIPS between two uint8 RGB HWC images (lower is more similar)."""
    device = next(model.parameters()).device

    def prep(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)

    return float(model(prep(img), prep(img2)).item())


@METRIC_REGISTRY.register()
def calculate_lpips(img: np.ndarray,
                    img2: np.ndarray,
                    crop_border: int = 0,
                    input_order: str = 'HWC',
                    net: str = 'alex',
                    random_backbone: bool = False,
                    **kwargs) -> float:
    """LPIPS for BasicSR's validation (uint8 BGR images, as ``tensor2img`` gives them); NaN when unavailable."""
    try:
        model = build_lpips(net, random_backbone)
    except GsrError as e:
        if net not in _WARNED:
            get_root_logger().warning(f'LPIPS skipped: {e}')
            _WARNED.add(net)
        return float('nan')
    img, img2 = reorder_image(img, input_order), reorder_image(img2, input_order)
    if crop_border:
        inner = (slice(crop_border, -crop_border), ) * 2
        img, img2 = img[inner], img2[inner]
    return lpips_distance(model, img[..., ::-1], img2[..., ::-1])


def maybe_lpips(net: str = 'alex') -> Optional[torch.nn.Module]:
    """The real LPIPS model, or None (with one log line) where its backbone is not available."""
    try:
        return build_lpips(net)
    except GsrError as e:
        get_root_logger().warning(f'LPIPS skipped: {e}')
        return None
