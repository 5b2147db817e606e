"""The command line the network-cost benchmarks share (``lightbsr_cost.py``, ``savl_cost.py``): a script's helper,
kept beside the scripts (the library, ``gsr.utils.profiling``, has no argparse)."""
import argparse
from typing import Callable

import torch

from gsr.utils.execution import default_device
from gsr.utils.profiling import device_line


def run_cost_benchmark(description: str, repeats: int, batch: int, batch_help: str,
                       inference: Callable[[torch.device, int], None],
                       training: Callable[[torch.device, int, int], None]) -> None:
    """``--repeats``, ``--batch``, ``--device``, then the benchmark's inference table (device, repeats) and its
    training table (device, batch, repeats)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=repeats)
    parser.add_argument('--batch', type=int, default=batch, help=batch_help)
    parser.add_argument('--device', default=default_device().type)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(device_line(device, args.repeats))
    inference(device, args.repeats)
    training(device, args.batch, args.repeats)
