"""Spatially varying test degradations with their true per-pixel maps (for SAVL's claim that the inferred variance
follows the local degradation; our reading, ``docs/SAVL.md``).

Each image is degraded by a blur whose width and a Gaussian noise whose level vary smoothly across it, following a
seeded map family: ``gradient`` (a linear ramp at a random angle), ``blobs`` (a few Gaussian bumps) or ``halves``
(a smoothed step between two halves). With the map m(u) in [0, 1] at LR resolution:
``LR = round(bicubic_down(sum_k w_k(u) (G_{sigma_k} * HR)) + n(u))``, the blur interpolated between
``BLUR_LEVELS`` by the blur map (weights ``w_k`` linear in the map), and ``n(u) ~ N(0, (max_noise m(u))^2)`` in 0-255
units. The true maps are saved beside the images as ``.npy`` (blur sigma and noise sigma per LR pixel).
"""
import math
import os
from typing import Dict, Tuple

import numpy as np
import torch
from basicsr.utils.img_process_util import filter2D

from gsr.data.classic_degrader import bicubic_downsample, gaussian_kernels
from gsr.data.eval_protocol import mod_crop, noise_seed
from gsr.utils.errors import GsrError
from gsr.utils.image_io import read_image_uint8_rgb

FAMILIES = ('gradient', 'blobs', 'halves')
BLUR_LEVELS = (0.2, 1.0, 2.0, 3.0)  # Gaussian sigma at HR resolution, interpolated by the blur map
MAX_NOISE = 30.0
KERNEL_SIZE = 21  # the blur kernels' side


def degradation_map(family: str, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """(h, w) map in [0, 1] of ``family``, smooth, seeded by ``generator``."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing='ij')
    u = torch.rand(8, generator=generator)
    if family == 'gradient':
        angle = float(u[0]) * 2 * math.pi
        ramp = math.cos(angle) * x + math.sin(angle) * y
    elif family == 'blobs':
        ramp = sum(torch.exp(-((x - float(u[2 * i])) ** 2 + (y - float(u[2 * i + 1])) ** 2) / 0.05) for i in range(3))
    elif family == 'halves':
        vertical = float(u[0]) > 0.5
        edge = 0.3 + 0.4 * float(u[1])
        ramp = torch.sigmoid(((x if vertical else y) - edge) / 0.05)
    else:
        raise GsrError(f'spatial map family must be one of {", ".join(FAMILIES)}, got {family!r}')
    return (ramp - ramp.min()) / (ramp.max() - ramp.min()).clamp(min=1e-8)


def degrade_spatial(hr: np.ndarray, family: str, scale: int, seed: int) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """LR (uint8 RGB) of a mod-cropped uint8 HR image and its true maps ``blur_sigma`` and ``noise_sigma`` (float32,
    LR size) under the seeded maps of ``family`` (the blur and the noise maps are drawn independently)."""
    generator = torch.Generator().manual_seed(seed)
    gt = torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    blur_map, noise_map = degradation_map(family, h, w, generator), degradation_map(family, h, w, generator)
    levels = torch.tensor(BLUR_LEVELS)
    blurred = []
    for sigma in BLUR_LEVELS:
        kernel = gaussian_kernels(torch.tensor([sigma]), torch.tensor([sigma]), torch.zeros(1), KERNEL_SIZE)
        blurred.append(bicubic_downsample(filter2D(gt, kernel), scale))
    position = blur_map * (len(BLUR_LEVELS) - 1)  # blend the two nearest blur levels linearly
    lower = position.floor().clamp(max=len(BLUR_LEVELS) - 2).long()
    frac = (position - lower)[None, None]
    stack = torch.stack(blurred)  # (K, 1, 3, h, w)
    low = torch.gather(stack, 0, lower.expand(1, 1, 3, h, w))[0]
    high = torch.gather(stack, 0, (lower + 1).expand(1, 1, 3, h, w))[0]
    lr = (low * (1 - frac) + high * frac) * 255
    noise_sigma = MAX_NOISE * noise_map
    lr = lr + torch.randn(lr.shape, generator=generator) * noise_sigma[None, None]
    lr_uint8 = lr.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)
    blur_sigma = levels[lower] * (1 - frac[0, 0]) + levels[lower + 1] * frac[0, 0]
    return lr_uint8, {'blur_sigma': blur_sigma.numpy().astype(np.float32),
                      'noise_sigma': noise_sigma.numpy().astype(np.float32)}


def check_size(hr_path: str, h: int, w: int, scale: int) -> None:
    """The HR image (cropped to a multiple of ``scale``) must be larger than the blur's reflect padding."""
    h, w = h // scale * scale, w // scale * scale
    if min(h, w) <= KERNEL_SIZE // 2:
        raise GsrError(f'{hr_path}: {h}x{w} (cropped to a multiple of {scale}) is too small for the spatial '
                       f'protocol\'s {KERNEL_SIZE}x{KERNEL_SIZE} blur: at least {KERNEL_SIZE // 2 + 1} pixels a side')


def degrade_spatial_file(hr_path: str, family: str, scale: int = 4, seed: int = 0):
    """HR (mod-cropped), LR and true maps of one HR file; the seed depends on (seed, image, family)."""
    hr = mod_crop(read_image_uint8_rgb(hr_path), scale)
    check_size(hr_path, hr.shape[0], hr.shape[1], scale)
    name = os.path.splitext(os.path.basename(hr_path))[0]
    lr, maps = degrade_spatial(hr, family, scale, noise_seed(seed, name, family))
    return hr, lr, maps


def load_true_maps(map_folder: str, image_names, lr_shapes: Dict[str, Tuple[int, int]]) -> Dict[str, Dict]:
    """The true maps of ``image_names`` from ``map_folder`` (``<name>_blur_sigma.npy``, ``<name>_noise_sigma.npy``);
    a missing map or one whose size is not its LR image's is one error naming the file."""
    maps = {}
    for name in image_names:
        maps[name] = {}
        for kind in ('blur_sigma', 'noise_sigma'):
            path = os.path.join(map_folder, f'{name}_{kind}.npy')
            if not os.path.isfile(path):
                raise GsrError(f'{map_folder} does not match its images: {os.path.basename(path)} is missing')
            values = np.load(path)
            if values.shape != tuple(lr_shapes[name]):
                raise GsrError(f'{path} is {values.shape[1]}x{values.shape[0]} but its LR image is '
                               f'{lr_shapes[name][1]}x{lr_shapes[name][0]}: the map folder does not match its images')
            maps[name][kind] = values
    return maps
