"""A CPU stand-in for CUDA's device rule: a tensor made without ``device=`` must not meet the model's tensors.

On a GPU, ``torch.zeros(n)`` inside a loss, the degrader or an attached module lands on the CPU and the first
operation that mixes it with the model's CUDA tensors raises; on a CPU-only machine everything is on the CPU and the
mistake stays hidden until a user's cluster. ``HostTensorGuard`` is a ``TorchFunctionMode`` that sees calls before
PyTorch fills in the default device: it marks every tensor a factory makes without ``device=`` (and the batch the
data loader made, which lives on the host by design), follows the marks through operations on marked tensors only,
clears them on ``.to(...)`` / ``.cuda()`` / ``copy_`` to a device, and raises where a marked tensor of one or more
dimensions meets an unmarked one in one call — where CUDA would raise. Zero-dimensional host tensors mix with CUDA
tensors in PyTorch, so they are never an error; indexing is left out (PyTorch moves CPU indices).
"""
import weakref
from typing import Any, Callable, Dict, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

# factories whose result lands on the default device unless ``device=`` is given
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint, torch.randperm,
             torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor, torch.as_tensor,
             torch.scalar_tensor, torch.from_numpy, torch.normal}
# calls that move a tensor to a device when given one (``.to(device)``, ``.to(other)``, ``.cuda()``)
MOVES = {torch.Tensor.to, torch.Tensor.cuda}
# calls whose result is on the device of one argument: ``self`` (new_*) or ``other`` (type_as)
SAME_AS_SELF = {torch.Tensor.new_tensor, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_empty,
                torch.Tensor.new_full}
NOT_CHECKED = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.size, torch.Tensor.dim,
               torch.Tensor.numel, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
               torch.Tensor.__repr__, torch.Tensor.__format__, torch.Tensor.__len__, torch.Tensor.__iter__,
               torch.Tensor.copy_}


class DeviceMistake(RuntimeError):
    """A host tensor met the model's tensors: this call would fail on CUDA."""


class HostTensorGuard(TorchFunctionMode):
    """See the module docstring. ``mark`` flags tensors made before the guard that live on the host."""

    def __init__(self):
        super().__init__()
        self.host: Dict[int, 'weakref.ref[torch.Tensor]'] = {}  # by id: a tensor's == is elementwise

    def mark(self, *tensors: Any) -> None:
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor):
                key = id(t)
                self.host[key] = weakref.ref(t, lambda _, key=key: self.host.pop(key, None))

    def unmark(self, t: Any) -> None:
        if isinstance(t, torch.Tensor):
            self.host.pop(id(t), None)

    def is_host(self, t: Any) -> bool:
        ref = self.host.get(id(t)) if isinstance(t, torch.Tensor) else None
        return ref is not None and ref() is t

    def __torch_function__(self, func: Callable, types, args=(), kwargs: Optional[Dict] = None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in FACTORIES:
            if 'device' not in kwargs:
                self.mark(out)
            return out
        if func in MOVES:
            moved = func is torch.Tensor.cuda or 'device' in kwargs or any(
                isinstance(a, (torch.device, str, torch.Tensor)) for a in args[1:])
            if moved:
                self.unmark(out)
            elif self.is_host(args[0]):
                self.mark(out)
            return out
        if func in SAME_AS_SELF:
            if self.is_host(args[0]) and 'device' not in kwargs:
                self.mark(out)
            return out
        if func is torch.Tensor.type_as:
            if self.is_host(args[1]):
                self.mark(out)
            return out
        if func in NOT_CHECKED:
            return out
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        host = [t for t in tensors if self.is_host(t)]
        device = [t for t in tensors if not self.is_host(t)]
        if host and device and any(t.dim() > 0 for t in host):
            name = getattr(func, '__qualname__', getattr(func, '__name__', str(func)))
            shapes = ', '.join(str(tuple(t.shape)) for t in host)
            raise DeviceMistake(f'{name}: a tensor made without device= (shape {shapes}) meets the model\'s tensors; '
                                'on CUDA this call fails')
        if host and not device:
            self.mark(out)
        return out
