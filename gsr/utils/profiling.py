"""Cost of a network: parameters, FLOPs (``torch.utils.flop_counter``), time and peak memory of a forward pass.

Used by ``gsr profile`` and the benchmarks. FLOPs are torch's count, in which a multiply-add is two FLOPs (papers
of this line often report multiply-adds as "FLOPs": divide by two to compare). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the peak resident set size (``VmHWM``), reset before the
measurement through ``/proc/self/clear_refs`` where the kernel allows it.
"""
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def flop_count(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``net(x)`` as ``FlopCounterMode`` counts them (convolutions and matrix products)."""
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def rss_peak_mb() -> float:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1024


def rss_mb() -> float:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmRSS')) / 1024


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory measurement; False where the CPU peak cannot be reset (then it is the process's)."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since ``reset_peak_memory``: CUDA memory allocated by torch, or the CPU process's peak RSS."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return rss_peak_mb()


def inference_times(net: nn.Module, x: torch.Tensor, runs: int, warmup: int = 1) -> List[float]:
    """Seconds of ``runs`` forward passes after ``warmup`` untimed ones (compilation, allocator, caches)."""
    with torch.no_grad():
        for _ in range(warmup):
            net(x)
        return [timed(lambda: net(x), x.device) for _ in range(runs)]


PerNetwork = Dict[str, float]  # network name -> a measure


def alternating_inference(nets: Dict[str, nn.Module], x: torch.Tensor, repeats: int) -> Tuple[PerNetwork, PerNetwork]:
    """(median seconds, peak memory MiB) per network: one pass each measuring the peak (reset before it), then
    ``repeats`` rounds in which the networks alternate, so that a drift of the machine affects all alike."""
    times: Dict[str, List[float]] = {name: [] for name in nets}
    memory = {}
    with torch.no_grad():
        for name, net in nets.items():
            reset_peak_memory(x.device)
            net(x)
            memory[name] = peak_memory_mb(x.device)
        for _ in range(repeats):
            for name, net in nets.items():
                times[name].append(timed(lambda: net(x), x.device))
    return {name: statistics.median(t) for name, t in times.items()}, memory


def device_line(device: torch.device, repeats: int) -> str:
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    return f'device: {name}; torch {torch.__version__}; median of {repeats} after a warm-up\n'


def inference_table(nets: Dict[str, nn.Module], x: torch.Tensor, repeats: int, reference: str) -> str:
    """Markdown: parameters, FLOPs, median time (``alternating_inference``), time relative to ``reference`` and
    peak memory of each network on ``x``."""
    times, memory = alternating_inference(nets, x, repeats)
    size = 'x'.join(map(str, x.shape[-2:]))
    lines = [f'| network | parameters | GFLOPs (flop_counter) at {size} | time (s) | vs {reference} | '
             'peak memory (MiB) |', '|---|---|---|---|---|---|']
    for name, net in nets.items():
        lines.append(f'| {name} | {parameter_count(net) / 1e6:.3f} M | {flop_count(net, x) / 1e9:.1f} | '
                     f'{times[name]:.3f} | {times[name] / times[reference]:.2f}x | {memory[name]:.0f} |')
    return '\n'.join(lines)
