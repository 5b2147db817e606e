"""``gsr profile -opt X``: what the option file's network costs at one LR size (default 180 x 320, the size at
which the papers of this line report FLOPs): parameters, FLOPs (``torch.utils.flop_counter``; a multiply-add
counts as 2), median inference time over ``--runs`` forward passes after a warm-up, and peak memory (CUDA memory
allocated, or the CPU process's peak resident set during the passes, beside its resident set before them).

The network is ``network_g`` with its ``attach:`` modules as at inference; ``--checkpoint`` loads weights (random
ones cost the same). ``--precision``, ``--channels-last`` and ``--compile`` choose how it runs, as for
``gsr infer``. ``--json`` also writes the figures to a file.
"""
import argparse
import json
import statistics
from typing import Any, Dict, List, Optional

import torch

from gsr.archs.attached_arch import network_from_options
from gsr.archs.network_checkpoint import load_network_checkpoint
from gsr.models.option_check import load_option_file
from gsr.tools.arguments import add_execution_arguments, add_network_arguments, execution_from_arguments
from gsr.utils.checkpoint import atomic_write_text, check_can_write
from gsr.utils.errors import GsrError
from gsr.utils.execution import inference_network
from gsr.utils.inference import pad_to_multiple, size_multiple
from gsr.utils.profiling import flop_count, inference_times, parameter_count, peak_memory_mb, reset_peak_memory, rss_mb


def lr_size(text: str) -> List[int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not HxW, e.g. 180x320') from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f'{text!r}: height and width must be positive')
    return [h, w]


def profile(opt: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device)
    execution = execution_from_arguments(args, device.type)
    net = network_from_options(opt, for_inference=True).eval()
    if args.checkpoint:
        load_network_checkpoint(net, args.checkpoint, args.param_key)
    net = net.to(device)
    x = pad_to_multiple(torch.rand(1, 3, *args.lr_size, device=device), size_multiple(net))
    figures = {'network': opt['network_g']['type'], 'attached': sorted(opt.get('attach') or {}),
               'lr_size': args.lr_size, 'parameters': parameter_count(net), 'flops': flop_count(net, x),
               'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else
               f'CPU ({torch.get_num_threads()} threads)', 'precision': execution.precision,
               'channels_last': execution.channels_last, 'compile': execution.compile, 'torch': torch.__version__}
    runner = inference_network(net, execution, device.type, '--')
    rss_before = rss_mb() if device.type == 'cpu' else None
    figures['peak_reset'] = reset_peak_memory(device)
    times = inference_times(runner, x, args.runs)
    figures.update(time_s=statistics.median(times), times_s=times, peak_memory_mb=peak_memory_mb(device),
                   rss_before_mb=rss_before)
    return figures


def report(f: Dict[str, Any]) -> str:
    memory = f'{f["peak_memory_mb"]:.0f} MiB'
    if f['rss_before_mb'] is not None:
        memory += (f' peak RSS (RSS before the passes {f["rss_before_mb"]:.0f} MiB'
                   + ('' if f['peak_reset'] else '; the peak could not be reset: it is the process\'s') + ')')
    attached = f' + {", ".join(f["attached"])}' if f['attached'] else ''
    return '\n'.join([
        f'network     {f["network"]}{attached}',
        f'parameters  {f["parameters"]:,} ({f["parameters"] / 1e6:.3f} M)',
        f'FLOPs       {f["flops"] / 1e9:.2f} G at LR {f["lr_size"][0]}x{f["lr_size"][1]} '
        f'(flop_counter; {f["flops"] / 2e9:.2f} G multiply-adds)',
        f'time        {f["time_s"] * 1e3:.1f} ms median of {len(f["times_s"])} on {f["device"]} '
        f'({f["precision"]}{", channels_last" if f["channels_last"] else ""}'
        f'{", compiled" if f["compile"] else ""}; torch {f["torch"]})',
        f'memory      {memory}',
    ])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='gsr profile', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser, checkpoint_required=False)
    parser.add_argument('--lr-size', type=lr_size, default=[180, 320], help='LR input HxW (default 180x320)')
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='also write the figures to this JSON file')
    add_execution_arguments(parser)
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise GsrError(f'--runs must be at least 1, got {args.runs}')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise GsrError(f'--device {args.device}: CUDA is not available here; use --device cpu')
    if args.json:
        check_can_write(args.json)
    try:
        figures = profile(load_option_file(args.opt), args)
    except (RuntimeError, torch.OutOfMemoryError) as e:
        if not any(mark in str(e).lower() for mark in ('allocate', 'out of memory')):
            raise
        h, w = args.lr_size
        raise GsrError(f'--lr-size {h}x{w}: the network does not fit in {args.device} memory at this size '
                       f'({(str(e).strip().splitlines() or [""])[0][:200]}); profile a smaller size') from e
    print(report(figures))
    if args.json:
        atomic_write_text(args.json, json.dumps(figures, indent=2) + '\n')
        print(f'wrote {args.json}')
    return 0
