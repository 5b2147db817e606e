"""Throughput of gsr's degrader against BasicSR's own Real-ESRNet ``feed_data``, in one run, same images and device.

Both pipelines get identical batches (real photographs, Real-ESRGAN kernels from PairedDegradationDataset).
Reported: LQ images per second for BasicSR's ``RealESRNetModel.feed_data`` (queue disabled, as gsr pairs
need), for gsr's batch builder (``feed_data``) with one copy (the same work) and with two copies (the pair), the ratios,
and the output distributions (mean/std of LQ pixels and of per-image std) to show the outputs agree.

The reference needs two CPU work-arounds, neither of which changes its cost: BasicSR calls ``.cuda()`` in
``RealESRNetModel.__init__`` (we set its attributes ourselves) and its ``filter2D`` raises on the
non-contiguous tensors DiffJPEG returns on the CPU (we pass ``.contiguous()`` inputs).

    python benchmarks/degradation_throughput.py [--gt-sizes 128 256] [--batch 16] [--repeats 5] [--device cpu]
"""
import argparse
import os
import random
import sys
import time
from dataclasses import asdict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gsr  # noqa: E402,F401
import basicsr.models.realesrnet_model as realesrnet  # noqa: E402
from basicsr.models.realesrnet_model import RealESRNetModel  # noqa: E402
from basicsr.utils import DiffJPEG, USMSharp  # noqa: E402
from basicsr.utils.img_process_util import filter2D  # noqa: E402

from gsr.data.paired_degradation_dataset import PairedDegradationDataset  # noqa: E402
from gsr.data.second_order_degrader import DegradationOptions  # noqa: E402
from gsr.models.generalizable_sr_model import GeneralizableSRModel  # noqa: E402

# BasicSR's feed_data reads the same keys; both pipelines get the same (Real-ESRNet x4plus) settings
REAL_ESRNET = dict(asdict(DegradationOptions()), scale=4)


def photo_folder() -> str:
    shared = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'shared', 'data', 'SunHays80')
    if os.path.isdir(shared):
        return shared
    from gsr.utils.default_data import materialize
    return materialize()['train']


def batches(gt_size: int, batch: int, count: int, kernel_sets: int):
    random.seed(0)
    np.random.seed(0)
    ds = PairedDegradationDataset({
        'name': 'bench',
        'dataroot_gt': photo_folder(),
        'crop_pad_size': gt_size,
        'kernel_sets': kernel_sets,
        'use_hflip': False
    })
    out = []
    for b in range(count):
        items = [ds[(b * batch + i) % len(ds)] for i in range(batch)]
        out.append({k: torch.stack([it[k] for it in items]) for k in items[0] if k != 'gt_path'})
    return out


def reference_model(device: torch.device, gt_size: int) -> RealESRNetModel:
    model = RealESRNetModel.__new__(RealESRNetModel)
    model.opt = dict(REAL_ESRNET, gt_size=gt_size)
    model.device, model.is_train = device, True
    model.jpeger = DiffJPEG(differentiable=False).to(device)
    model.usm_sharpener = USMSharp().to(device)
    model._dequeue_and_enqueue = lambda: None
    return model


def gsr_model(device: torch.device, gt_size: int, paired: bool) -> GeneralizableSRModel:
    opt = {
        'num_gpu': 1 if device.type == 'cuda' else 0,
        'is_train': False,
        'dist': False,
        'scale': 4,
        'paired': paired,
        'network_g': {
            'type': 'MSRResNet',
            'num_feat': 4,
            'num_block': 1
        },
        'path': {},
        'datasets': {
            'train': {
                'gt_size': gt_size
            }
        }
    }
    return GeneralizableSRModel(opt)


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def timed(run, data, device, repeats: int):
    outputs, times = [], []
    for _ in range(repeats):
        for batch in data:
            sync(device)
            start = time.perf_counter()
            outputs.append(run(batch))
            sync(device)
            times.append(time.perf_counter() - start)
    return float(np.median(times)), torch.cat([o.cpu() for o in outputs])


def stats(lq: torch.Tensor) -> str:
    return f'mean {lq.mean():.4f}, std {lq.std():.4f}, per-image std {lq.flatten(1).std(1).mean():.4f}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gt-sizes', type=int, nargs='+', default=[128, 256])
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--batches', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    realesrnet.filter2D = lambda img, kernel: filter2D(img.contiguous(), kernel)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f'device: {name}; torch {torch.__version__}; batch {args.batch}; median over '
          f'{args.batches * args.repeats} batches\n')
    print('| GT size | BasicSR feed_data (LQ/s) | gsr, 1 copy (LQ/s) | ratio | gsr paired (LQ/s) | ratio |')
    print('|---|---|---|---|---|---|')
    for gt_size in args.gt_sizes:
        torch.manual_seed(0)
        data = batches(gt_size, args.batch, args.batches, 2)
        ref = reference_model(device, gt_size)

        def run_ref(batch):
            ref.feed_data({k: v[:, 0] if k.startswith(('kernel', 'sinc')) else v for k, v in batch.items()})
            return ref.lq

        single, paired = gsr_model(device, gt_size, False), gsr_model(device, gt_size, True)

        def run_gsr(model):

            def run(batch):
                model.feed_data(batch)
                return model.lq

            return run

        t_ref, lq_ref = timed(run_ref, data, device, args.repeats)
        t_one, lq_one = timed(run_gsr(single), data, device, args.repeats)
        t_two, lq_two = timed(run_gsr(paired), data, device, args.repeats)
        b = args.batch
        print(f'| {gt_size} | {b / t_ref:.1f} | {b / t_one:.1f} | {t_ref / t_one:.1f}x | {2 * b / t_two:.1f} | '
              f'{2 * b / t_two / (b / t_ref):.1f}x |')
        print(f'|  | {stats(lq_ref)} | {stats(lq_one)} |  | {stats(lq_two)} |  |')


if __name__ == '__main__':
    main()
