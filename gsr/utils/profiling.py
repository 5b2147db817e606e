"""Cost of a network: parameters, FLOPs (``torch.utils.flop_counter``), time and peak memory of a forward pass.

Used by ``gsr profile`` and the benchmarks. FLOPs are torch's count, in which a multiply-add is two FLOPs (papers
of this line often report multiply-adds as "FLOPs": divide by two to compare). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the peak resident set size (``VmHWM``), reset before the
measurement through ``/proc/self/clear_refs`` where the kernel allows it.
"""
import time
from typing import Callable, List

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
