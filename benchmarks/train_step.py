"""Training-step time and peak memory: baseline (B images), plain paired (2B), dropout (2B), alignment (2B),
targeted feature denoising inline (B LQ rows + their B noise-free twins in the same pass), and BasicSR's own
``SRModel`` step on the same 2B rows (the reference for gsr's model base: data flow, loss context, feature tap).

Paper size: SRResNet (64 features, 16 blocks) and RRDB (64 features, 23 blocks), GT 128 / LQ 32, B = 8 HR crops.
Step times come from one process that runs the variants round-robin (so load changes hit all alike; median
over ``--steps`` rounds after a warm-up); peak memory from a fresh process per variant (``VmHWM`` on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA). Steps are ``GeneralizableSRModel.optimize_parameters`` on a
fixed batch (the degradation is benchmarked separately). Also reported: the vectorised alignment losses against
a plain per-pair loop on the same tapped features (forward + backward).

Execution table (``--tables execution``): the paired (2B) and alignment (2B) steps under ``train.precision`` /
``channels_last`` / ``compile`` settings, as ratios against the fp32 step of the same variant, measured
round-robin in one process (compilation happens in the untimed warm-up step), with BasicSR's ``SRModel`` fp32 step
on the same rows as the outside reference.

    python benchmarks/train_step.py [--archs srresnet rrdb] [--steps 3] [--device cpu]
                                    [--tables variants execution losses] [--settings fp32 bf16 ...]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gsr.utils.profiling import peak_memory_mb, timed  # noqa: E402

ARCHS = {
    'srresnet': {
        'type': 'MSRResNet',
        'num_feat': 64,
        'num_block': 16,
        'upscale': 4
    },
    'rrdb': {
        'type': 'RRDBNet',
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 64,
        'num_block': 23,
        'num_grow_ch': 32
    },
}
ALIGN = {'l_align': {'type': 'FeatureAlignmentLoss'}, 'l_rff': {'type': 'RFFAlignmentLoss'}}
TFD = {'l_det': {'type': 'NoiseDetectionLoss'}, 'l_feat': {'type': 'TwinFeatureLoss'}}
EXECUTION = {  # name: train.precision / channels_last / compile
    'fp32': {},
    'bf16': {'precision': 'bf16'},
    'channels_last': {'channels_last': True},
    'bf16 + channels_last': {'precision': 'bf16', 'channels_last': True},
    'compile': {'compile': True},
    'bf16 + channels_last + compile': {'precision': 'bf16', 'channels_last': True, 'compile': True},
    'fp16': {'precision': 'fp16'},  # CUDA only
    'fp16 + channels_last': {'precision': 'fp16', 'channels_last': True},  # CUDA only
}
EXECUTION_VARIANTS = ('paired (2B)', 'alignment (2B)')
TFD_POINTS = {'conv_last': ('conv_last', 'input'), 'trunk': ('body', 'output')}  # HR and LR resolution
VARIANTS = {  # name: (LQ images per step as a multiple of B, dropout p, regularizers)
    'BasicSR SRModel (2B)': (2, None, None),
    'baseline (B)': (1, None, None),
    'paired (2B)': (2, None, None),
    'dropout (2B)': (2, 0.7, None),
    'alignment (2B)': (2, None, ALIGN),
    'TFD inline at conv_last (B + B twins)': (1, None, TFD),
    'TFD inline at trunk (B + B twins)': (1, None, TFD),
}


def build(arch: str, variant: str, batch: int, device: torch.device, execution: str = 'fp32'):
    """A GeneralizableSRModel for ``variant`` (BasicSR's SRModel for the reference) with a fixed random batch,
    run as ``EXECUTION[execution]`` says."""
    from basicsr.models import build_model

    import gsr  # noqa: F401
    from gsr.data.degraded_batch import DegradedBatch
    copies, p, regs = VARIANTS[variant]
    basicsr = variant.startswith('BasicSR')
    opt = {
        'model_type': 'SRModel' if basicsr else 'GeneralizableSRModel',
        'num_gpu': 1 if device.type == 'cuda' else 0,
        'is_train': True,
        'dist': False,
        'scale': 4,
        'paired': copies == 2,
        'network_g': dict(ARCHS[arch]),
        'path': {},
        'train': {
            'optim_g': {
                'type': 'Adam',
                'lr': 2e-4,
                'betas': [0.9, 0.99]
            },
            'scheduler': {
                'type': 'MultiStepLR',
                'milestones': [10**6]
            },
            'pixel_opt': {
                'type': 'L1Loss'
            },
            'regularizers': regs,
            'ema_decay': 0.999,
            **EXECUTION[execution]
        },
    }
    if p:
        opt['dropout'] = {'p': p}
    tfd = regs is TFD
    if tfd:
        layer, capture = TFD_POINTS['trunk' if 'trunk' in variant else 'conv_last']
        opt.update(noise_free_twin=True, attach={'tfd': {'type': 'TargetedFeatureDenoising', 'num_feat': 64,
                                                         'layer': layer, 'capture': capture}})
    torch.manual_seed(0)
    if basicsr:
        opt['train'].pop('regularizers')
        opt.pop('paired')
    model = build_model(opt)
    model.lq = torch.rand(batch * copies, 3, 32, 32, device=device)
    model.gt = torch.rand(batch * copies, 3, 128, 128, device=device)
    content = torch.arange(batch, device=device).repeat(copies)
    labels, twin = {}, None
    if tfd:  # noise on every row, its twin the same rows without it
        sigma = torch.full((batch, ), 10., device=device)
        labels = {f'noise{k}_{f}': sigma if f == 'sigma' else torch.zeros_like(sigma)
                  for k in (1, 2) for f in ('sigma', 'poisson_scale')}
        twin = torch.rand_like(model.lq)
    model.batch = DegradedBatch(model.gt, model.lq, content, torch.arange(batch * copies, device=device), labels,
                                twin)
    return model


def timed_step(model, it: int, device: torch.device) -> float:
    return timed(lambda: model.optimize_parameters(it), device)


def worker(arch: str, variant: str, steps: int, batch: int, device_name: str) -> dict:
    """Peak memory of one variant, alone in this process."""
    device = torch.device(device_name)
    model = build(arch, variant, batch, device)
    times = [timed_step(model, it, device) for it in range(1, steps + 2)]
    return {'step_s': float(np.median(times[1:])), 'peak_mb': peak_memory_mb(device)}


def interleaved_times(models: dict, steps: int, device: torch.device) -> dict:
    """Step time of every model, measured round-robin in one process so that load changes hit all alike."""
    times = {name: [] for name in models}
    for it in range(1, steps + 2):
        for name, model in models.items():
            t = timed_step(model, it, device)
            if it > 1:
                times[name].append(t)
    return {name: float(np.median(t)) for name, t in times.items()}


def execution_table(arch: str, settings: list, steps: int, batch: int, device: torch.device) -> None:
    """The paired and alignment steps under each execution setting, against their fp32 step, in one process."""
    models = {('BasicSR SRModel (2B)', 'fp32'): build(arch, 'BasicSR SRModel (2B)', batch, device)}
    models.update({(v, s): build(arch, v, batch, device, s) for v in EXECUTION_VARIANTS for s in settings})
    times = interleaved_times(models, steps, device)
    basicsr = times[('BasicSR SRModel (2B)', 'fp32')]
    print(f'| {arch} | BasicSR SRModel (2B) | fp32 | {basicsr:.3f} | 1.000 | 1.000 |')
    for variant, setting in list(models)[1:]:
        t = times[(variant, setting)]
        print(f'| {arch} | {variant} | {setting} | {t:.3f} | {times[(variant, "fp32")] / t:.2f}x | '
              f'{basicsr / t:.2f}x |')


def per_pair_reference(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Linear + RFF alignment of centred pools (B, C) written as a loop over pairs (the released code's form)."""
    import math
    c, total = u.shape[1], 0
    for i in range(u.shape[0]):
        x, y = u[i:i + 1], v[i:i + 1]
        total = total + ((x - y)**2).sum() / c + ((x.t() @ x - y.t() @ y)**2).sum() / c**2
        w = torch.randn(1, device=u.device)
        b = torch.rand(c, device=u.device) * 2 * math.pi
        mapped = []
        for row in (x[0], y[0]):
            a = w * row + b
            a = (a - a.min()) / (a - a.min()).max() * math.pi / 2
            mapped.append((math.sqrt(2) * (torch.cos(a) + torch.sin(a)))[None])
        x, y = mapped
        total = total + ((x - y)**2).sum() / c + ((x.t() @ x - y.t() @ y)**2).sum() / c**2
    return total


def median_time(fn, leaf: torch.Tensor, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        leaf.grad = None
        start = time.perf_counter()
        fn().backward()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def loss_timing(device: torch.device, batch: int, repeats: int = 20) -> dict:
    """Forward + backward of linear + RFF alignment: vectorised against the per-pair loop, on the pooled vectors
    alone and including the pooling of 2B x 64 x 128 x 128 tapped features."""
    import gsr  # noqa: F401
    from gsr.data.degraded_batch import DegradedBatch
    from gsr.losses.feature_alignment_loss import FeatureAlignmentLoss
    from gsr.losses.loss_context import MAIN_TAP, LossContext
    from gsr.losses.rff_alignment_loss import RFFAlignmentLoss, official_rff_map
    from gsr.losses.statistics import FeaturePair, rank_one_discrepancy
    linear, rff = FeatureAlignmentLoss(), RFFAlignmentLoss()
    feats = torch.randn(2 * batch, 64, 128, 128, device=device, requires_grad=True)
    pooled = torch.randn(2 * batch, 64, device=device, requires_grad=True)

    def vectorised_pooled():
        u, v = pooled.chunk(2)
        w = torch.randn(batch, 1, 1, device=device)
        b = torch.rand(batch, 1, 64, device=device) * 2 * np.pi
        mapped = official_rff_map(torch.stack([u, v], 1), w, b)
        return rank_one_discrepancy(u, v).sum() + rank_one_discrepancy(mapped[:, 0], mapped[:, 1]).sum()

    rows = torch.arange(2 * batch, device=device)
    batch_rows = DegradedBatch(feats, feats, rows % batch, rows)

    def full_vectorised():
        context = LossContext(batch_rows, feats, {MAIN_TAP: feats})
        return linear(context) + rff(context)

    return {
        'pooled_vectorised_s':
        median_time(vectorised_pooled, pooled, device, repeats),
        'pooled_loop_s':
        median_time(lambda: per_pair_reference(*pooled.chunk(2)), pooled, device, repeats),
        'full_vectorised_s':
        median_time(full_vectorised, feats, device, repeats),
        'full_loop_s':
        median_time(lambda: per_pair_reference(*FeaturePair(feats).pooled_centered()), feats, device, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', nargs='+', default=list(ARCHS))
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--batch', type=int, default=8, help='B: HR crops per step')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--tables', nargs='+', default=['variants', 'execution', 'losses'],
                        choices=['variants', 'execution', 'losses'])
    parser.add_argument('--settings', nargs='+', choices=list(EXECUTION),
                        help='execution settings (default: all that the device supports)')
    parser.add_argument('--worker', nargs=2, metavar=('ARCH', 'VARIANT'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.batch, args.device)))
        return
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f'device: {name}; torch {torch.__version__}; B = {args.batch}; median of {args.steps} interleaved '
          'rounds after one warm-up\n')
    if 'variants' in args.tables:
        variants_table(args, device)
    if 'execution' in args.tables:
        settings = args.settings or [s for s in EXECUTION if device.type == 'cuda' or 'fp16' not in s]
        print('\n| arch | variant | execution | step (s) | speed-up vs its fp32 | vs BasicSR fp32 |\n'
              '|---|---|---|---|---|---|')
        for arch in args.archs:
            execution_table(arch, ['fp32'] + [s for s in settings if s != 'fp32'], args.steps, args.batch, device)
    if 'losses' in args.tables:
        losses_table(device, args.batch)


def variants_table(args: argparse.Namespace, device: torch.device) -> None:
    print('| arch | variant | step (s) | vs paired | peak memory (MiB) | vs paired |\n|---|---|---|---|---|---|')
    for arch in args.archs:
        memory = {}
        for variant in VARIANTS:
            cmd = [
                sys.executable, __file__, '--worker', arch, variant, '--steps', '1', '--batch',
                str(args.batch), '--device', args.device
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            memory[variant] = json.loads(out)['peak_mb']
        times = interleaved_times({v: build(arch, v, args.batch, device) for v in VARIANTS}, args.steps, device)
        ref_t, ref_m = times['paired (2B)'], memory['paired (2B)']
        for variant in VARIANTS:
            print(f'| {arch} | {variant} | {times[variant]:.3f} | {times[variant] / ref_t:.3f} | '
                  f'{memory[variant]:.0f} | {memory[variant] / ref_m:.3f} |')


def losses_table(device: torch.device, batch: int) -> None:
    t = loss_timing(device, batch)
    print(f'\nalignment losses (linear + RFF), forward + backward, B = {batch} pairs: on the pooled vectors '
          f'vectorised {t["pooled_vectorised_s"] * 1e3:.2f} ms vs per-pair loop {t["pooled_loop_s"] * 1e3:.2f} ms '
          f'({t["pooled_loop_s"] / t["pooled_vectorised_s"]:.1f}x); including the pooling of the 2B x 64 x 128 x 128 '
          f'features {t["full_vectorised_s"] * 1e3:.2f} ms vs {t["full_loop_s"] * 1e3:.2f} ms '
          f'({t["full_loop_s"] / t["full_vectorised_s"]:.2f}x)')


if __name__ == '__main__':
    main()
