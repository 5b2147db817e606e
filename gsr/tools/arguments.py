"""Command-line arguments shared by the commands that run a trained network (infer, export, profile, evaluate):
which network, and how it executes."""
import argparse
from typing import Any, Dict, Tuple

from gsr.models.option_check import load_option_file
from gsr.utils import pretrained
from gsr.utils.errors import GsrError
from gsr.utils.execution import ExecutionOptions, execution_options


def add_network_arguments(parser: argparse.ArgumentParser, checkpoint_required: bool = True,
                          shipped: bool = False) -> None:
    """``-opt``, ``--checkpoint`` and ``--param-key``: the trained network a command runs; with ``shipped``,
    ``--model NAME`` instead (a network shipped in the package, ``network_from_arguments``)."""
    parser.add_argument('-opt', required=not shipped, help='option file whose network_g describes the checkpoint')
    parser.add_argument('--checkpoint', required=checkpoint_required and not shipped,
                        help='the trained weights' + ('' if checkpoint_required else ' (optional)'))
    if shipped:
        parser.add_argument('--model', help='a network shipped with gsr instead of -opt/--checkpoint: '
                            + (', '.join(pretrained.manifest()) or 'none shipped'))
    parser.add_argument('--param-key', default='params_ema', choices=['params_ema', 'params'],
                        help='params_ema (falling back to params) or params')


def network_from_arguments(args: argparse.Namespace) -> Tuple[Dict[str, Any], str, str]:
    """(options, checkpoint, param key) of ``--model`` or of ``-opt`` + ``--checkpoint`` + ``--param-key``."""
    if getattr(args, 'model', None):
        if args.opt or args.checkpoint:
            raise GsrError('--model replaces -opt and --checkpoint: give one or the other')
        entry = pretrained.shipped(args.model)
        return {'network_g': entry['network_g'], 'scale': entry['scale']}, entry['checkpoint'], entry['param_key']
    if not args.opt or not args.checkpoint:
        raise GsrError('give -opt and --checkpoint (a trained network), or --model NAME (a shipped one)')
    return load_option_file(args.opt), args.checkpoint, args.param_key


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision``, ``--channels-last`` and ``--compile`` for the inference commands."""
    parser.add_argument('--precision', default='fp32',
                        help='fp32 (default), bf16, fp16 (CUDA only) or auto (bf16 where the hardware has it)')
    parser.add_argument('--channels-last', action='store_true', help='run the network in channels-last format')
    parser.add_argument('--compile', nargs='?', const=True, default=False,
                        help='torch.compile the network (optionally a mode, or auto to fall back to eager)')


def execution_from_arguments(args: argparse.Namespace, device_type: str) -> ExecutionOptions:
    block = {'precision': args.precision, 'channels_last': args.channels_last, 'compile': args.compile}
    return execution_options(block, '--', device_type)
