"""How a network runs: numeric precision (autocast), memory format and ``torch.compile``.

One typed block, ``ExecutionOptions``, read from ``train:`` (training steps) and from ``val:`` (validation during
training and ``basicsr test``); ``gsr infer``, ``gsr evaluate`` and ``gsr profile`` take the same choices as flags.
All default to today's behaviour: float32, contiguous tensors, eager mode.
"""
import argparse
import functools
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import torch
from basicsr.utils import get_root_logger
from torch import nn

from gsr.utils.errors import GsrError

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
EXECUTION_KEYS = ('precision', 'channels_last', 'compile')


@dataclass
class ExecutionOptions:
    """``precision: fp32 | bf16 | fp16``, ``channels_last: bool``, ``compile: false | true | auto | <mode>``."""
    precision: str = 'fp32'
    channels_last: bool = False
    compile: Union[bool, str] = False

    @property
    def dtype(self) -> Optional[torch.dtype]:
        return PRECISIONS[self.precision]


def device_type_of(opt: Dict[str, Any]) -> str:
    """The device BasicSR's models run on for an option file: CUDA when ``num_gpu`` is not 0 and one is visible."""
    return 'cuda' if opt.get('num_gpu') not in (0, None) and torch.cuda.is_available() else 'cpu'


def key_name(where: str, key: str) -> str:
    """``train.precision`` for the block ``where`` of an option file, ``precision`` for a file's top level
    (``where=''``), ``--precision`` for a command line (``where='--'``)."""
    if where == '--':
        return '--' + key.replace('_', '-')
    return f'{where}.{key}' if where else key


def execution_options(block: Optional[Dict[str, Any]], where: str, device_type: str) -> ExecutionOptions:
    """The ``precision`` / ``channels_last`` / ``compile`` keys of ``block`` (``train:`` or ``val:``; see
    ``key_name`` for ``where``), checked against the device: fp16 autocast exists only on CUDA, bf16 on CUDA
    needs a GPU that supports it, compiling needs a working compiler."""
    block = block or {}
    precision, channels_last, compile_key = (key_name(where, k) for k in EXECUTION_KEYS)
    options = ExecutionOptions(**{k: block[k] for k in EXECUTION_KEYS if k in block})
    if options.precision not in PRECISIONS:
        raise GsrError(f'{precision}: unknown precision {options.precision!r}; use one of '
                       f'{", ".join(PRECISIONS)}')
    if options.precision == 'fp16' and device_type != 'cuda':
        raise GsrError(f'{precision}: fp16 autocast needs a CUDA device and this runs on the CPU; use bf16, '
                       'which the CPU supports (fp32 is the default)')
    if options.precision == 'bf16' and device_type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise GsrError(f'{precision}: this GPU does not support bf16; use fp16 or fp32')
    if not isinstance(options.channels_last, bool):
        raise GsrError(f'{channels_last} must be true or false, got {options.channels_last!r}')
    if not (isinstance(options.compile, bool) or options.compile == 'auto' or options.compile in COMPILE_MODES):
        raise GsrError(f'{compile_key}: {options.compile!r} is not false, true, auto or a torch.compile mode '
                       f'({", ".join(COMPILE_MODES)})')
    if options.compile not in (False, 'auto') and compiler_unavailable(device_type):
        raise GsrError(f'{compile_key}: torch.compile cannot compile on {device_type} here '
                       f'({compiler_unavailable(device_type)}); do not compile, or use auto to fall back to eager mode')
    return options


def autocast(options: ExecutionOptions, device_type: str) -> torch.autocast:
    """Autocast to the chosen precision on ``device_type`` (disabled for fp32)."""
    return torch.autocast(device_type, dtype=options.dtype or torch.float32, enabled=options.dtype is not None)


def to_memory_format(x: torch.Tensor, options: ExecutionOptions) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if options.channels_last else x


@functools.lru_cache(maxsize=None)
def compiler_unavailable(device_type: str) -> Optional[str]:
    """Why ``torch.compile`` cannot compile on ``device_type`` here (``None`` when it can): a one-line probe,
    compiled and run once per process, since compilation failures otherwise surface only at the first step."""
    try:
        torch.compile(lambda x: x * 2 + 1, dynamic=False)(torch.ones(4, device=device_type))
    except Exception as e:  # noqa: BLE001 - any failure of the compiler stack means "cannot compile here"
        text = str(e).strip().splitlines()
        return f'{type(e).__name__}: {text[0] if text else ""}'[:300]
    return None


def compile_in_place(net: nn.Module, options: ExecutionOptions, where: str, device_type: str) -> bool:
    """``net.compile()`` (in place: parameter names, hooks and checkpoints stay those of the eager module) when
    ``compile`` asks for it. Where the platform cannot compile, ``compile: auto`` logs why and runs eagerly (``true``
    or a mode was refused by ``execution_options``). Returns whether the network was compiled."""
    if options.compile is False:
        return False
    reason = compiler_unavailable(device_type)
    if reason is not None:
        get_root_logger().warning(f'{key_name(where, "compile")}: auto: torch.compile cannot compile on '
                                  f'{device_type} here ({reason}); running uncompiled')
        return False
    mode = None if options.compile in (True, 'auto', 'default') else options.compile
    net.compile(mode=mode)
    return True


class ExecutedNetwork(nn.Module):
    """``net`` run for inference as ``ExecutionOptions`` say: input in channels-last format, forward under
    autocast, output returned as float32 (``gsr infer``, ``gsr evaluate``, validation, ``gsr profile``)."""

    def __init__(self, net: nn.Module, options: ExecutionOptions, device_type: str, where: str = 'val'):
        super().__init__()
        self.net, self.options, self.device_type = net, options, device_type
        if options.channels_last:
            net.to(memory_format=torch.channels_last)
        compile_in_place(self, options, where, device_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.options, self.device_type):
            return self.net(to_memory_format(x, self.options)).float()


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision``, ``--channels-last`` and ``--compile`` for the inference commands."""
    parser.add_argument('--precision', default='fp32', help='fp32 (default), bf16 or fp16 (CUDA only)')
    parser.add_argument('--channels-last', action='store_true', help='run the network in channels-last format')
    parser.add_argument('--compile', nargs='?', const=True, default=False,
                        help='torch.compile the network (optionally a mode, or auto to fall back to eager)')


def inference_network(net: nn.Module, options: ExecutionOptions, device_type: str, where: str) -> nn.Module:
    """``net`` itself for the default execution, else wrapped to run as ``options`` say."""
    return net if options == ExecutionOptions() else ExecutedNetwork(net, options, device_type, where)


def execution_from_arguments(args: argparse.Namespace, device_type: str) -> ExecutionOptions:
    block = {'precision': args.precision, 'channels_last': args.channels_last, 'compile': args.compile}
    return execution_options(block, '--', device_type)
