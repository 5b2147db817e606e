"""How much noise the training LR images carry, by pipeline: the measurement behind docs/SCALING.md's noise check.

Each batch of HR crops (PairedDegradationDataset, Real-ESRGAN kernels) is degraded twice with the same draws, with
and without noise (``SecondOrderDegrader.apply(add_noise=False)``, the noise-free twin); the standard deviation of
their difference (0-255 units, per image, at the LR resolution) is the noise the network sees. JPEG is left out
(``jpeg_prob: 0``) so the difference is the noise alone. Printed per pipeline: median, mean, 90th percentile and the
share of images at or above 15 and 20 (the protocol's noise setting adds white Gaussian noise of sigma 20 at the LR
resolution).

    python benchmarks/lr_noise_level.py --hr ../shared/data/SunHays80 [--batches 40] [--batch 16]
"""
import argparse
import os
import random
import sys
from typing import Dict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gsr  # noqa: F401,E402  isort: skip  (its torchvision shim before basicsr imports)
from gsr.data.paired_degradation_dataset import PairedDegradationDataset  # noqa: E402
from gsr.data.second_order_degrader import DegradationOptions, SecondOrderDegrader  # noqa: E402

PIPELINES = {
    'second order (Real-ESRGAN)': {},
    'first order, noise at the stage (onedegra)': {'second_order_prob': 0.0},
    'first order, noise at the LR (first_order_noise: lr)': {'second_order_prob': 0.0, 'first_order_noise': 'lr'},
}
KERNEL_KEYS = ('kernel1', 'kernel2', 'sinc_kernel', 'kernel1_info', 'kernel2_info', 'sinc_info')


def lr_noise_stds(hr: str, options: Dict, batches: int, batch: int) -> np.ndarray:
    """Per LR image, the std (0-255) of the difference between the noisy and the noise-free degradation."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    dataset = PairedDegradationDataset({'name': 'noise', 'dataroot_gt': hr, 'crop_pad_size': 160, 'kernel_sets': 1,
                                        'use_hflip': False})
    degrader = SecondOrderDegrader(DegradationOptions(jpeg_prob=0.0, **options), scale=4)
    stds = []
    for b in range(batches):
        items = [dataset[(b * batch + i) % len(dataset)] for i in range(batch)]
        gt = torch.stack([item['gt'] for item in items])
        kernels = [torch.stack([item[k][0] for item in items]) for k in KERNEL_KEYS]
        draws = degrader.sample(gt, *kernels)
        difference = degrader.apply(gt, draws) - degrader.apply(gt, draws, add_noise=False)
        stds += (difference * 255).flatten(1).std(1).tolist()
    return np.array(stds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--hr', required=True, help='training photographs (../shared/data/SunHays80)')
    parser.add_argument('--batches', type=int, default=40)
    parser.add_argument('--batch', type=int, default=16)
    args = parser.parse_args()
    print(f'{"pipeline":<54} {"median":>7} {"mean":>6} {"p90":>6} {">=15":>6} {">=20":>6}')
    for name, options in PIPELINES.items():
        s = lr_noise_stds(args.hr, options, args.batches, args.batch)
        print(f'{name:<54} {np.median(s):7.1f} {s.mean():6.1f} {np.percentile(s, 90):6.1f} '
              f'{(s >= 15).mean():6.2f} {(s >= 20).mean():6.2f}')


if __name__ == '__main__':
    main()
