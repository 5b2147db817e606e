"""How a network runs: numeric precision (autocast), memory format and ``torch.compile``.

One typed block, ``ExecutionOptions``, read from ``train:`` (training steps) and from ``val:`` (validation during
training and ``basicsr test``); ``gsr infer``, ``gsr evaluate`` and ``gsr profile`` take the same choices as flags.
All default to today's behaviour: float32, contiguous tensors, eager mode. ``precision: auto`` and
``channels_last: auto`` choose by the hardware (``native_bf16``): a CPU without bf16 instructions emulates bf16
autocast at a fraction of the float32 speed (docs/SCALING.md), so a study's option file that must run on every
machine asks for ``auto``.
"""
import functools
import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import torch
from basicsr.utils import get_root_logger
from torch import nn

from gsr.utils.errors import GsrError
from gsr.utils.options import option

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
EXECUTION_KEYS = ('precision', 'channels_last', 'compile')
AUTO = 'auto'


@dataclass
class ExecutionOptions:
    """``precision: fp32 | bf16 | fp16`` and ``channels_last: bool`` (both resolved from ``auto`` by
    ``execution_options``), ``compile: false | true | auto | <mode>``."""
    precision: str = option(
        'fp32', '`bf16`: the forward runs under `torch.autocast` in bfloat16 (CPUs with AVX512-BF16 or AMX, Ampere+ '
        'GPUs); `fp16`: float16 autocast, with a gradient scaler in training (CUDA only; the scaler\'s state is saved '
        'in and restored from the training state); `auto`: bf16 where the hardware computes it, else fp32 (a CPU '
        'without bf16 instructions emulates it at a fraction of the fp32 speed: bf16 by name there runs, with a '
        'warning; docs/SCALING.md). Losses run outside autocast on float32 copies of the output and tapped features; '
        'validation returns its output in float32. `fp16` on the CPU, an unknown name or bf16 on a GPU without it is '
        'an error before any folder')
    channels_last: bool = option(
        False, 'the network (converted before any DDP wrapping) and its inputs in channels-last memory format; `auto`: '
        'on with CUDA, and on the CPU where `precision` resolved to bf16 (it sped up bf16 but slowed fp32 on the CPUs '
        'measured, docs/BENCHMARKS.md)')
    compile: Union[bool, str] = option(
        False, '`true`, a `torch.compile` mode (`default`, `reduce-overhead`, `max-autotune`, '
        '`max-autotune-no-cudagraphs`) or `auto`: the network compiled in place (`nn.Module.compile`: parameter names, '
        'checkpoints, feature taps and attached modules unchanged). Where the platform cannot compile (e.g. no C++ '
        'compiler for the CPU backend), `true` / a mode is an error before any folder, `auto` logs why and runs '
        'uncompiled; validation images of several sizes recompile (dynamic shapes after the second size)')

    @property
    def dtype(self) -> Optional[torch.dtype]:
        return PRECISIONS[self.precision]


def default_device(name: Optional[str] = None) -> torch.device:
    """``name`` (e.g. ``cuda:1``), else the first GPU where there is one, else the CPU: where the commands that
    take no option file (``gsr analyze``, ``gsr evaluate``, the study's analyses) run their networks."""
    return torch.device(name or ('cuda' if torch.cuda.is_available() else 'cpu'))


def device_type_of(opt: Dict[str, Any]) -> str:
    """The device BasicSR's models run on for an option file: CUDA when ``num_gpu`` is not 0 and one is visible."""
    return 'cuda' if opt.get('num_gpu') not in (0, None) and torch.cuda.is_available() else 'cpu'


@functools.lru_cache(maxsize=None)
def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bf16 convolutions in hardware: a CUDA GPU that supports bf16, or a CPU with
    AVX512-BF16 or AMX tiles (oneDNN's bf16 kernels; without them bf16 autocast is emulated, about an order of
    magnitude slower than float32 on an AVX2 CPU: docs/SCALING.md)."""
    if device_type == 'cuda':
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_auto(block: Dict[str, Any], device_type: str) -> Dict[str, Any]:
    """``precision: auto`` is bf16 where ``native_bf16``, else fp32; ``channels_last: auto`` follows the resolved
    precision on the CPU (channels-last gave 1.48x on top of bf16 with AVX512-BF16, docs/BENCHMARKS.md, but cost
    20 % in float32 on AVX2, docs/SCALING.md) and is on with CUDA (cuDNN's tensor-core kernels run in NHWC)."""
    block = dict(block)
    if block.get('precision') == AUTO:
        block['precision'] = 'bf16' if native_bf16(device_type) else 'fp32'
    if block.get('channels_last') == AUTO:
        block['channels_last'] = device_type == 'cuda' or block.get('precision', 'fp32') == 'bf16'
    return block


def key_name(where: str, key: str) -> str:
    """``train.precision`` for the block ``where`` of an option file, ``precision`` for a file's top level
    (``where=''``), ``--precision`` for a command line (``where='--'``)."""
    if where == '--':
        return '--' + key.replace('_', '-')
    return f'{where}.{key}' if where else key


def execution_options(block: Optional[Dict[str, Any]], where: str, device_type: str) -> ExecutionOptions:
    """The ``precision`` / ``channels_last`` / ``compile`` keys of ``block`` (``train:`` or ``val:``; see
    ``key_name`` for ``where``; ``auto`` resolved by ``resolve_auto``), checked against the device: fp16 autocast
    exists only on CUDA, bf16 on CUDA needs a GPU that supports it, compiling needs a working compiler. bf16 asked
    for by name on a CPU without ``native_bf16`` runs, with a warning."""
    precision, channels_last, compile_key = (key_name(where, k) for k in EXECUTION_KEYS)
    options = ExecutionOptions(**{k: v for k, v in resolve_auto(block or {}, device_type).items()
                                  if k in EXECUTION_KEYS})
    if options.precision not in PRECISIONS:
        raise GsrError(f'{precision}: unknown precision {options.precision!r}; use one of '
                       f'{", ".join(PRECISIONS)} or {AUTO}')
    if options.precision == 'fp16' and device_type != 'cuda':
        raise GsrError(f'{precision}: fp16 autocast needs a CUDA device and this runs on the CPU; use bf16, '
                       'which the CPU supports (fp32 is the default)')
    if options.precision == 'bf16' and device_type == 'cuda' and not native_bf16(device_type):
        raise GsrError(f'{precision}: this GPU does not support bf16; use fp16 or fp32')
    if options.precision == 'bf16' and not native_bf16(device_type):
        # not BasicSR's root logger: this check runs before a training's log file exists, and the first
        # get_root_logger() call would fix that logger without its file handler
        logging.getLogger(__name__).warning(f'{precision}: bf16 on a CPU without AVX512-BF16 or AMX is emulated and '
                                            f'runs several times slower than fp32; use {AUTO} to choose by the '
                                            'hardware')
    if not isinstance(options.channels_last, bool):
        raise GsrError(f'{channels_last} must be true, false or {AUTO}, got {options.channels_last!r}')
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


def inference_network(net: nn.Module, options: ExecutionOptions, device_type: str, where: str) -> nn.Module:
    """``net`` itself for the default execution, else wrapped to run as ``options`` say."""
    return net if options == ExecutionOptions() else ExecutedNetwork(net, options, device_type, where)
