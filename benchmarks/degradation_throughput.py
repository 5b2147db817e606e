"""Throughput of gsr's degrader against BasicSR's own Real-ESRNet ``feed_data``, in one run, same images and device.

Both pipelines get identical batches (real photographs, Real-ESRGAN kernels from PairedDegradationDataset).
Reported: LQ images per second for BasicSR's ``RealESRNetModel.feed_data`` (queue disabled, as gsr pairs
need), for gsr's batch builder (``feed_data``) with one copy (the same work) and with two copies (the pair), the
ratios, and the output distributions (mean/std of LQ pixels and of per-image std) to show the outputs agree.

The reference needs two CPU work-arounds, neither of which changes its cost: BasicSR calls ``.cuda()`` in
``RealESRNetModel.__init__`` (we set its attributes ourselves) and its ``filter2D`` raises on the
non-contiguous tensors DiffJPEG returns on the CPU (we pass ``.contiguous()`` inputs).

Each pipeline draws its own random parameters per batch (resize scale and mode, Gaussian or Poisson noise —
BasicSR's Poisson noise is a per-sample Python loop — JPEG quality), so a median over a few batches measures the
luck of the draws. Here every pipeline's turn on a batch starts from the same seed of every RNG, the pipelines
alternate batch by batch, throughput is total images over total time on ``--batches`` batches, and the spread
over ``--runs`` runs is printed.

    python benchmarks/degradation_throughput.py [--gt-sizes 128 256] [--batch 16] [--batches 64] [--runs 3]
"""
import argparse
import os
import random
import sys
import time
from dataclasses import asdict
from typing import Callable, Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gsr  # noqa: E402,F401  isort: skip  (its torchvision shim before basicsr imports)
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


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def one_run(pipelines: Dict[str, Callable], data: List[Dict], device: torch.device, keep: int = 4):
    """Every batch through every pipeline in turn (round-robin), each pipeline's turn starting from the same seed,
    so both draw from the same RNG states and machine noise hits all alike. Returns total seconds and the outputs
    of the first ``keep`` batches per pipeline."""
    seconds = {name: 0. for name in pipelines}
    outputs: Dict[str, List[torch.Tensor]] = {name: [] for name in pipelines}
    for index, batch in enumerate(data):
        for name, run in pipelines.items():
            seed_all(index)
            sync(device)
            start = time.perf_counter()
            lq = run(batch)
            sync(device)
            seconds[name] += time.perf_counter() - start
            if index < keep:
                outputs[name].append(lq.cpu())
    return seconds, {name: torch.cat(out) for name, out in outputs.items()}


def stats(lq: torch.Tensor) -> str:
    return f'mean {lq.mean():.4f}, std {lq.std():.4f}, per-image std {lq.flatten(1).std(1).mean():.4f}'


def spread(values: List[float]) -> str:
    return f'{np.mean(values):.1f} ± {np.std(values):.1f}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gt-sizes', type=int, nargs='+', default=[128, 256])
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--batches', type=int, default=64)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    realesrnet.filter2D = lambda img, kernel: filter2D(img.contiguous(), kernel)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f'device: {name}; torch {torch.__version__}; batch {args.batch}; {args.batches} batches round-robin, '
          f'{args.runs} runs; throughput = images / total time, mean ± std over the runs\n')
    print('| GT size | BasicSR feed_data (LQ/s) | gsr, 1 copy (LQ/s) | ratio | gsr paired (LQ/s) | ratio | per run |')
    print('|---|---|---|---|---|---|---|')
    for gt_size in args.gt_sizes:
        data = batches(gt_size, args.batch, args.batches, 2)
        ref = reference_model(device, gt_size)
        single, paired = gsr_model(device, gt_size, False), gsr_model(device, gt_size, True)

        def run_ref(batch):
            ref.feed_data({k: v[:, 0] if k.startswith(('kernel', 'sinc')) else v for k, v in batch.items()})
            return ref.lq

        def run_gsr(model):

            def run(batch):
                model.feed_data(batch)
                return model.lq

            return run

        pipelines = {'ref': run_ref, 'one': run_gsr(single), 'two': run_gsr(paired)}
        per_batch = {'ref': args.batch, 'one': args.batch, 'two': 2 * args.batch}
        images = {k: n * args.batches for k, n in per_batch.items()}
        for run in pipelines.values():  # warm-up: caches (e.g. the USM blur matrices) and allocations, untimed
            seed_all(0)
            run(data[0])
        rates = {k: [] for k in pipelines}
        for _ in range(args.runs):
            seconds, outputs = one_run(pipelines, data, device)
            for k in pipelines:
                rates[k].append(images[k] / seconds[k])
        one = [o / r for o, r in zip(rates['one'], rates['ref'])]
        two = [t / r for t, r in zip(rates['two'], rates['ref'])]
        runs = '; '.join(f'{a:.1f}x / {b:.1f}x' for a, b in zip(one, two))
        print(f'| {gt_size} | {spread(rates["ref"])} | {spread(rates["one"])} | **{np.mean(one):.1f}x** '
              f'(± {np.std(one):.1f}) | {spread(rates["two"])} | {np.mean(two):.1f}x (± {np.std(two):.1f}) | {runs} |')
        print(f'|  | {stats(outputs["ref"])} | {stats(outputs["one"])} |  | {stats(outputs["two"])} |  |  |')


if __name__ == '__main__':
    main()
