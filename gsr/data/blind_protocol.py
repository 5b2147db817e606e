"""The blind-SR test protocols of the DASR / KDSR / LightBSR line (``shared/research/lightbsr_and_savl.md`` A.6).

``blind-iso``: isotropic Gaussian blur with sigma 1.2, 2.4 and 3.6 (Set5, Set14, B100, Urban100; no noise).
``blind-aniso``: the nine anisotropic kernels below, each at noise 5 and 10 (B100). Each LR image is
``ClassicDegrader.apply`` of the mod-cropped HR image with the setting's fixed draws; the noise is seeded by
(seed, image, setting) like the eight-setting protocol's. Folders are named after their setting (``sigma1.2``,
``k3_theta30_l3.5_1.5_n5``).
"""
import os
from typing import Dict, List, Tuple

import numpy as np
import torch

from gsr.data.classic_degrader import ClassicDegradationOptions, ClassicDegrader, fixed_draws
from gsr.data.eval_protocol import mod_crop, noise_seed
from gsr.utils.errors import GsrError
from gsr.utils.image_io import read_image_uint8_rgb

ISO_SIGMAS = (1.2, 2.4, 3.6)
ANISO_KERNELS = ((0, 2.0, 0.5), (10, 2.0, 1.0), (30, 3.5, 1.5), (45, 3.5, 2.0), (90, 3.5, 2.0), (120, 4.0, 1.5),
                 (135, 4.0, 2.0), (165, 4.0, 3.0), (180, 4.0, 4.0))  # (theta in degrees, lambda_1, lambda_2)
ANISO_NOISES = (5, 10)
PROTOCOLS = ('blind-iso', 'blind-aniso')


def protocol_settings(protocol: str) -> Dict[str, Tuple[float, float, float, float]]:
    """Setting name -> (sigma_x, sigma_y, theta in degrees, noise sigma in 0-255 units)."""
    if protocol == 'blind-iso':
        return {f'sigma{s}': (s, s, 0.0, 0.0) for s in ISO_SIGMAS}
    if protocol == 'blind-aniso':
        return {f'k{i + 1}_theta{t}_l{a}_{b}_n{n}': (a, b, float(t), float(n))
                for n in ANISO_NOISES for i, (t, a, b) in enumerate(ANISO_KERNELS)}
    raise GsrError(f'--protocol must be one of eight, {", ".join(PROTOCOLS)}; got {protocol!r}')


def degrade_blind(hr: np.ndarray, setting: Tuple[float, float, float, float], scale: int, seed: int,
                  border: str = 'replicate') -> np.ndarray:
    """One 8-bit RGB LR image of a mod-cropped 8-bit RGB HR image under ``setting`` (``protocol_settings``), the
    bicubic border as the code's (``replicate``) or MATLAB's (``symmetric``)."""
    sigma_x, sigma_y, theta, noise = setting
    degrader = ClassicDegrader(ClassicDegradationOptions(kernel='aniso', noise=noise, bicubic_border=border), scale)
    gt = torch.from_numpy(hr).permute(2, 0, 1)[None].double().div(255).float()
    torch.manual_seed(seed)
    lr = degrader.apply(gt, fixed_draws([sigma_x], [sigma_y], [theta], [noise]))
    return (lr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def degrade_blind_file(hr_path: str, protocol: str, scale: int = 4, seed: int = 0,
                       border: str = 'replicate') -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """HR (mod-cropped) and its LR under every setting of ``protocol``."""
    hr = mod_crop(read_image_uint8_rgb(hr_path), scale)
    name = os.path.splitext(os.path.basename(hr_path))[0]
    return hr, {s: degrade_blind(hr, v, scale, noise_seed(seed, name, s), border)
                for s, v in protocol_settings(protocol).items()}


def settings_of(protocol: str) -> List[str]:
    return list(protocol_settings(protocol))
