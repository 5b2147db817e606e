"""SAVL's cost (our reading of the paper, docs/SAVL.md) against SwinIR of a similar size, measured in one process.

Inference at a 180x320 LR input: the paper-size ``SAVLNet`` (estimator + dual-modulated SR network, 14.2 M; its
input padded to the window of 16 as gsr's inference does) and BasicSR's SwinIR in its classical x4 size (11.9 M):
parameters, FLOPs (``torch.utils.flop_counter``; a multiply-add counts 2), time (the networks alternate, median of
``--repeats`` after a warm-up each) and peak memory (``VmHWM`` reset before each network's first pass; CUDA:
allocated). Training: the estimator's share of a stage-A step (``SAVLModel``, paper size, ``--batch`` LR crops of
64): FLOPs of the estimator in the forward pass against the whole step's forward (SR network + estimator +
re-degrader), and the time of the estimator's forward + backward against the whole step's.

    python benchmarks/savl_cost.py [--repeats 2] [--batch 2] [--device cpu]
"""
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cost_command import run_cost_benchmark  # noqa: E402

from gsr.utils.profiling import flop_count, inference_table, parameter_count, timed  # noqa: E402

SWINIR = {'type': 'SwinIR', 'upscale': 4, 'in_chans': 3, 'img_size': 48, 'window_size': 8, 'img_range': 1.,
          'depths': [6] * 6, 'embed_dim': 180, 'num_heads': [6] * 6, 'mlp_ratio': 2, 'upsampler': 'pixelshuffle',
          'resi_connection': '1conv'}
SAVL = {'type': 'SAVLNet'}
DEGRADER = {'type': 'SAVLDegrader'}


class Padded(torch.nn.Module):
    """``net`` as gsr's inference runs it: the input padded to the network's size multiple, the output cut back."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        from gsr.utils.inference import size_multiple
        self.net, self.multiple = net, size_multiple(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from gsr.utils.inference import pad_to_multiple
        h, w = x.shape[-2:]
        return self.net(pad_to_multiple(x, self.multiple))[..., :4 * h, :4 * w]


def inference(device: torch.device, repeats: int) -> None:
    from basicsr.archs import build_network

    import gsr  # noqa: F401
    torch.manual_seed(0)
    nets = {'SwinIR (classical x4)': build_network(dict(SWINIR)), 'SAVLNet (paper size)': build_network(dict(SAVL))}
    nets = {name: Padded(net).eval().to(device) for name, net in nets.items()}
    x = torch.rand(1, 3, 180, 320, device=device)
    print(inference_table(nets, x, repeats, 'SwinIR (classical x4)'))
    estimator = nets['SAVLNet (paper size)'].net.estimator
    print(f'| SAVL estimator alone | {parameter_count(estimator) / 1e6:.3f} M | {flop_count(estimator, x) / 1e9:.1f} '
          '| | | |')


def training_share(device: torch.device, batch: int, repeats: int) -> None:
    from basicsr.models import build_model

    import gsr  # noqa: F401
    from gsr.archs.attached_arch import backbone_of
    from gsr.data.classic_degrader import bicubic_downsample
    from gsr.data.degraded_batch import DegradedBatch
    from gsr.utils.profiling import flop_count as count
    torch.manual_seed(0)
    opt = {'model_type': 'SAVLModel', 'num_gpu': 1 if device.type == 'cuda' else 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'scale': 4, 'stage': 'joint', 'network_g': dict(SAVL),
           'network_degrader': dict(DEGRADER), 'path': {},
           'datasets': {'train': {'gt_size': 256, 'kernel_sets': 1, 'batch_size_per_gpu': batch}},
           'train': {'optim_g': {'type': 'Adam', 'lr': 2e-4}, 'optim_degrader': {'type': 'Adam', 'lr': 2e-4},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10**6]}, 'pixel_opt': {'type': 'L1Loss'},
                     'regularizers': {'l_rec': {'type': 'SAVLReconstructionLoss'},
                                      'l_kl': {'type': 'SAVLKLLoss'}}}}
    model = build_model(opt)
    gt, lq = torch.rand(batch, 3, 256, 256, device=device), torch.rand(batch, 3, 64, 64, device=device)
    index = torch.arange(batch, device=device)
    model.batch = DegradedBatch(gt, lq, index, index)
    net = backbone_of(model.get_bare_model(model.net_g))

    def step_forward():
        sr, mean, log_var = net(lq, with_posterior=True)
        return model.net_degrader(bicubic_downsample(gt, 4), mean)

    def estimator_pass():
        mean, log_var = net.estimator(lq)
        (mean.sum() + log_var.sum()).backward()

    with torch.no_grad():
        total_flops = count(lambda _: step_forward(), lq)
        estimator_flops = count(net.estimator, lq)
    step, alone = [], []
    for it in range(1, repeats + 2):
        model.batch = DegradedBatch(gt, lq, index, index)
        t_step = timed(lambda: model.optimize_parameters(it), device)
        model.optimizer_g.zero_grad()
        t_alone = timed(estimator_pass, device)
        if it > 1:
            step.append(t_step)
            alone.append(t_alone)
    s, e = statistics.median(step), statistics.median(alone)
    print(f'\n| stage-A training step (B = {batch}, LR 64, paper size) | value |\n|---|---|\n'
          f'| step (s) | {s:.2f} |\n| estimator forward + backward (s) | {e:.3f} ({100 * e / s:.1f} % of the step) |\n'
          f'| forward GFLOPs: whole step / estimator | {total_flops / 1e9:.1f} / {estimator_flops / 1e9:.1f} '
          f'({100 * estimator_flops / total_flops:.1f} %) |')


def main() -> None:
    run_cost_benchmark(__doc__, 2, 2, 'LR crops per training step', inference, training_share)


if __name__ == '__main__':
    main()
