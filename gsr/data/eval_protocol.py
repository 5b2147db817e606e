"""The evaluation protocol: the eight test degradations of Kong et al. (Reflash Dropout, CVPR 2022), used by the
alignment paper.

Protocol (RDSR ``dataset/add_degradations.py``), on 8-bit RGB HR whose size is a multiple of the scale:
blur = OpenCV Gaussian 21x21, sigma 2 on HR; downsampling = PIL bicubic to (w/s, h/s); noise = colour
Gaussian, sigma/255 on [0, 1], clipped and truncated to 8-bit; JPEG = PIL quality 50; in that order.
Unlike the original script the noise is seeded: deterministic per image and setting.
"""
import io
import os
import zlib
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Tuple

import cv2
import numpy as np
from PIL import Image

from gsr.utils.errors import GsrError
from gsr.utils.image_io import read_image_uint8_rgb


class Setting(NamedTuple):
    blur: bool
    noise: bool
    jpeg: bool


SETTINGS: Dict[str, Setting] = OrderedDict([
    ('clean', Setting(False, False, False)),
    ('blur', Setting(True, False, False)),
    ('noise', Setting(False, True, False)),
    ('jpeg', Setting(False, False, True)),
    ('b+n', Setting(True, True, False)),
    ('b+j', Setting(True, False, True)),
    ('n+j', Setting(False, True, True)),
    ('b+n+j', Setting(True, True, True)),
])
BLUR_KSIZE, BLUR_SIGMA, JPEG_QUALITY = 21, 2.0, 50


def lr_folder(protocol: str) -> str:
    """The folder of a set-writing protocol's LR images under ``gsr degrade --output`` (``LR_blind_iso``,
    ``LR_blind_aniso``, ``LR_spatial``): where the analyses and the generated test files look for them."""
    return 'LR_' + protocol.replace('-', '_')


def check_setting(name: str) -> Setting:
    if name not in SETTINGS:
        raise GsrError(f'unknown degradation setting {name!r}; choose from {", ".join(SETTINGS)}')
    return SETTINGS[name]


def folder_name(name: str, noise_sigma: float = 20) -> str:
    """The published folder name under ``LR_degra/`` (their spelling 'jepg' kept), e.g. ``blur2_bicubic_noise20``."""
    s = check_setting(name)
    parts = (['blur2'] if s.blur else []) + ['bicubic'] + ([f'noise{noise_sigma:g}'] if s.noise else [])
    return '_'.join(parts + ([f'jepg{JPEG_QUALITY}'] if s.jpeg else []))


def noise_seed(seed: int, image_name: str, setting: str) -> int:
    """A seed that depends only on (seed, image, setting): stable across runs, processes and machines."""
    return zlib.crc32(f'{seed}:{image_name}:{setting}'.encode())


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def degrade(hr: np.ndarray, setting: str, scale: int = 4, noise_sigma: float = 20, seed: int = 0) -> np.ndarray:
    """Degrade an 8-bit RGB HR image (HWC, multiple of ``scale``) under ``setting``; returns 8-bit RGB LR."""
    s = check_setting(setting)
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
        raise GsrError(f'benchmark degradation needs uint8 RGB HWC, got {hr.dtype} {hr.shape}')
    img = cv2.GaussianBlur(hr, (BLUR_KSIZE, BLUR_KSIZE), BLUR_SIGMA) if s.blur else hr
    h, w = img.shape[:2]
    img = np.asarray(Image.fromarray(img).resize((int(w / scale), int(h / scale)), Image.BICUBIC))
    if s.noise:
        rng = np.random.default_rng(seed)
        noisy = img / 255. + rng.normal(0, noise_sigma / 255., img.shape)
        img = (np.clip(noisy, 0, 1) * 255.).astype(np.uint8)
    if s.jpeg:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format='JPEG', quality=JPEG_QUALITY)
        img = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))
    return np.ascontiguousarray(img)


def degrade_file(hr_path: str, settings: List[str], scale: int = 4, noise_sigma: float = 20,
                 seed: int = 0) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """HR and its LR under each of ``settings`` for one HR file: read as uint8 RGB, mod-cropped to ``scale``, the
    noise seeded by (``seed``, image name, setting). Every command and dataset of the protocol makes its pairs here."""
    hr = mod_crop(read_image_uint8_rgb(hr_path), scale)
    name = os.path.splitext(os.path.basename(hr_path))[0]
    return hr, {s: degrade(hr, s, scale, noise_sigma, noise_seed(seed, name, s)) for s in settings}


def settings_list(names: List[str]) -> List[str]:
    """Validate a list of setting names; ``all`` expands to the eight."""
    if names == ['all'] or names == 'all':
        return list(SETTINGS)
    for n in names:
        check_setting(n)
    return list(names)
