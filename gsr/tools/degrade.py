"""``gsr degrade``: write benchmark degradation sets in the published layout, with a manifest.

``--protocol eight`` (default): the eight settings of the alignment / Dropout papers. ``--protocol blind-iso`` /
``blind-aniso``: the blind-SR protocols of DASR / KDSR / LightBSR (``gsr/data/blind_protocol.py``), written as
``<output>/LR_blind_iso/<setting>/<img>.png`` (``LR_blind_aniso``), the layout BasicSR's ``PairedImageDataset`` reads.
``--protocol spatial``: blur and noise varying smoothly across each image (``gsr/data/spatial_protocol.py``), one
folder per map family, ``<output>/LR_spatial/<family>/<img>.png`` with the true per-pixel maps in
``<output>/maps_spatial/<family>/<img>_{blur_sigma,noise_sigma}.npy``.

Layout: ``<output>/HR/x<scale>/<img>.png`` (mod-cropped HR) and ``<output>/LR_degra/<folder>/<img>.png`` with the
RDSR folder names (``bicubic``, ``blur2_bicubic``, ...); ``manifest.json`` records the protocol parameters,
the seed and the sha256 of every file. Output appears only when complete.
"""
import argparse
import json
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from gsr.data import blind_protocol
from gsr.data import eval_protocol as bd
from gsr.data import spatial_protocol
from gsr.data.classic_degrader import BORDERS
from gsr.utils.checkpoint import atomic_write_text, file_sha256
from gsr.utils.errors import check_at_least
from gsr.utils.image_io import image_size, list_images, write_image
from gsr.utils.staging import staged_folder


def write_sets(hr_folder: str, output: str, outputs_of: Callable[[str, str], Dict[str, np.ndarray]],
               manifest: Dict[str, Any], overwrite: bool = False, progress: bool = True) -> str:
    """Write, for every HR image, the files ``outputs_of(path, name)`` returns (relative path -> 8-bit RGB image,
    or a float map for ``.npy`` paths) into ``output`` (staged: it appears only when complete), then
    ``manifest.json``: ``manifest``, the source folder and the sha256 of every file. Returns the manifest path."""
    paths = list_images(hr_folder)
    with staged_folder(output, overwrite, inputs=[hr_folder]) as root:
        files = {}
        for path in tqdm(paths, desc='degrade', unit='img', disable=not progress):
            for rel, data in outputs_of(path, os.path.splitext(os.path.basename(path))[0]).items():
                full = os.path.join(root, rel)
                if rel.endswith('.npy'):
                    os.makedirs(os.path.dirname(full), exist_ok=True)
                    np.save(full, data)
                else:
                    write_image(full, data)
                files[rel] = file_sha256(full)
        content = dict(manifest, source=os.path.abspath(hr_folder), files=dict(sorted(files.items())))
        atomic_write_text(os.path.join(root, 'manifest.json'), json.dumps(content, indent=1))
    return os.path.join(output, 'manifest.json')


def write_benchmark_sets(hr_folder: str,
                         output: str,
                         settings: List[str],
                         scale: int = 4,
                         noise_sigma: float = 20,
                         seed: int = 0,
                         overwrite: bool = False,
                         progress: bool = True) -> str:
    """Write the eight-setting sets (see module docstring); returns the manifest path."""
    settings = bd.settings_list(settings)

    def outputs_of(path: str, name: str) -> Dict[str, np.ndarray]:
        hr, lrs = bd.degrade_file(path, settings, scale, noise_sigma, seed)
        outputs = {os.path.join('HR', f'x{scale}', f'{name}.png'): hr}
        outputs.update({os.path.join('LR_degra', bd.folder_name(s, noise_sigma), f'{name}.png'): lr
                        for s, lr in lrs.items()})
        return outputs

    manifest = {
        'protocol': 'Kong et al. CVPR 2022 (RDSR add_degradations.py), seeded noise',
        'scale': scale,
        'noise_sigma': noise_sigma,
        'seed': seed,
        'blur': {'ksize': bd.BLUR_KSIZE, 'sigma': bd.BLUR_SIGMA, 'impl': 'cv2.GaussianBlur on HR'},
        'downsample': 'PIL bicubic to (w/scale, h/scale)',
        'jpeg_quality': bd.JPEG_QUALITY,
        'settings': {s: bd.folder_name(s, noise_sigma) for s in settings},
    }
    return write_sets(hr_folder, output, outputs_of, manifest, overwrite, progress)


def write_blind_sets(hr_folder: str, output: str, protocol: str, scale: int = 4, seed: int = 0,
                     overwrite: bool = False, progress: bool = True, border: str = 'replicate') -> str:
    """Write the sets of a blind protocol (module docstring); returns the manifest path."""
    settings = blind_protocol.protocol_settings(protocol)
    folder = bd.lr_folder(protocol)

    def outputs_of(path: str, name: str) -> Dict[str, np.ndarray]:
        hr, lrs = blind_protocol.degrade_blind_file(path, protocol, scale, seed, border)
        outputs = {os.path.join('HR', f'x{scale}', f'{name}.png'): hr}
        outputs.update({os.path.join(folder, s, f'{name}.png'): lr for s, lr in lrs.items()})
        return outputs

    manifest = {
        'protocol': f'{protocol} (DASR / KDSR / LightBSR test protocol), seeded noise',
        'scale': scale,
        'seed': seed,
        'degradation': '21x21 Gaussian blur (reflect padding), MATLAB bicubic, Gaussian noise, 8-bit rounding',
        'bicubic_border': border,
        'settings': {s: dict(zip(('sigma_x', 'sigma_y', 'theta_degrees', 'noise'), v), folder=f'{folder}/{s}')
                     for s, v in settings.items()},
    }
    return write_sets(hr_folder, output, outputs_of, manifest, overwrite, progress)


def write_spatial_sets(hr_folder: str, output: str, scale: int = 4, seed: int = 0, overwrite: bool = False,
                       progress: bool = True) -> str:
    """Write the spatially varying sets with their true maps (module docstring); returns the manifest path."""

    def outputs_of(path: str, name: str) -> Dict[str, np.ndarray]:
        outputs = {}
        for family in spatial_protocol.FAMILIES:
            hr, lr, maps = spatial_protocol.degrade_spatial_file(path, family, scale, seed)
            outputs[os.path.join('HR', f'x{scale}', f'{name}.png')] = hr
            outputs[os.path.join(bd.lr_folder('spatial'), family, f'{name}.png')] = lr
            outputs.update({os.path.join('maps_spatial', family, f'{name}_{k}.npy'): v for k, v in maps.items()})
        return outputs

    manifest = {
        'protocol': 'spatial: blur and noise varying across the image, with the true maps (docs/SAVL.md)',
        'scale': scale,
        'seed': seed,
        'families': list(spatial_protocol.FAMILIES),
        'blur_levels': list(spatial_protocol.BLUR_LEVELS),
        'max_noise': spatial_protocol.MAX_NOISE,
    }
    for path in list_images(hr_folder):  # every image large enough, read from its header before any work
        spatial_protocol.check_size(path, *image_size(path), scale)
    return write_sets(hr_folder, output, outputs_of, manifest, overwrite, progress)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='gsr degrade', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hr', required=True, help='folder of HR images')
    parser.add_argument('--output', required=True, help='dataset root to create, e.g. datasets/Set5')
    parser.add_argument('--protocol', default='eight', choices=['eight', *blind_protocol.PROTOCOLS, 'spatial'])
    parser.add_argument('--settings', nargs='+', default=['all'],
                        help=f'eight-setting protocol only, subset of: {" ".join(bd.SETTINGS)}')
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--noise-sigma', type=float, default=20, help='published noise-only sets before 2024-07: 40')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--bicubic-border', choices=BORDERS, default='replicate',
                        help='blind protocols: the bicubic border of DASR\'s / LightBSR\'s code (replicate, default) '
                        'or MATLAB\'s imresize (symmetric); they differ in the outer 2 LR pixels')
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    check_at_least('--scale', args.scale, 1)
    check_at_least('--noise-sigma', args.noise_sigma, 0)
    if args.protocol == 'eight':
        manifest = write_benchmark_sets(args.hr, args.output, args.settings, args.scale, args.noise_sigma, args.seed,
                                        args.overwrite)
    elif args.protocol == 'spatial':
        manifest = write_spatial_sets(args.hr, args.output, args.scale, args.seed, args.overwrite)
    else:
        manifest = write_blind_sets(args.hr, args.output, args.protocol, args.scale, args.seed, args.overwrite,
                                    border=args.bicubic_border)
    print(f'wrote {manifest}')
    return 0
