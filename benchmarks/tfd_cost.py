"""What targeted feature denoising costs at inference: parameters, FLOPs and time of SRResNet 64x16 with the TFD
modules inline against the bare network (= the training-only mode's export), at a 180x320 LR input.

Two attachment points: the input of ``conv_last`` (the default, at HR resolution) and the output of the residual
trunk ``body`` (at LR resolution, 16x fewer positions at x4). FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; the FFTs of the frequency path are
not counted by it, and are estimated separately at 5 N log2 N real operations per complex 2-D FFT of N points,
half that for a real one). Times: the networks alternate, median of ``--repeats`` runs after one warm-up each.

    python benchmarks/tfd_cost.py [--repeats 3] [--device cpu] [--size 180 320]
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gsr.utils.profiling import flop_count, parameter_count  # noqa: E402

SRRESNET = {'type': 'MSRResNet', 'num_feat': 64, 'num_block': 16, 'upscale': 4}


def networks():
    import gsr  # noqa: F401  isort: skip  (its torchvision shim before basicsr imports)
    from basicsr.archs import build_network

    from gsr.archs.attached_arch import AttachedNetwork
    torch.manual_seed(0)
    inline = AttachedNetwork(SRRESNET, {'tfd': {'type': 'TargetedFeatureDenoising', 'num_feat': 64}}).eval()
    trunk = AttachedNetwork(SRRESNET, {'tfd': {'type': 'TargetedFeatureDenoising', 'num_feat': 64, 'layer': 'body',
                                               'capture': 'output'}}).eval()
    bare = build_network(dict(SRRESNET)).eval()  # not inline.backbone: the attachment hooks live on its layers
    bare.load_state_dict(inline.backbone.state_dict())
    return {'bare (training_only export)': bare, 'TFD inline (conv_last input, HR)': inline,
            'TFD inline (trunk output, LR)': trunk}


def fft_flops(h: int, w: int, channels: int) -> float:
    """rfft2 + irfft2 of ``channels`` maps of h x w: about 2 x 5 N log2 N / 2 real operations each (real FFTs)."""
    n = h * w
    return channels * 2 * 2.5 * n * math.log2(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--size', type=int, nargs=2, default=[180, 320])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    nets = {name: net.to(device) for name, net in networks().items()}
    x = torch.rand(1, 3, *args.size, device=device)
    counts = {name: flop_count(net, x) for name, net in nets.items()}
    params = {name: parameter_count(net) for name, net in nets.items()}
    times = {name: [] for name in nets}
    with torch.no_grad():
        for net in nets.values():
            net(x)
        for _ in range(args.repeats):
            for name, net in nets.items():
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                start = time.perf_counter()
                net(x)
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f'device: {name}; torch {torch.__version__}; LR {args.size[0]}x{args.size[1]}; median of {args.repeats}\n')
    print('| network | parameters | GFLOPs (flop_counter) | time (s) | vs bare |\n|---|---|---|---|---|')
    ref = 'bare (training_only export)'
    for name in nets:
        t = float(np.median(times[name]))
        print(f'| {name} | {params[name] / 1e6:.3f} M | {counts[name] / 1e9:.1f} | {t:.3f} | '
              f'{t / float(np.median(times[ref])):.3f} |')
    h, w = 4 * args.size[0], 4 * args.size[1]
    print(f'\nnot counted above: the frequency path\'s FFTs, about {fft_flops(h, w, 64) / 1e9:.1f} G real operations '
          f'(64 maps of {h}x{w}, forward and inverse)')


if __name__ == '__main__':
    main()
