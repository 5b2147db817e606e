"""A forward hook that captures the tensor entering or leaving one layer of a network's backbone.

Taps only read: the alignment losses and the analyses use what they capture, and modules that transform
features are attached to the network itself (``gsr.archs.attached_arch``); a tap on the same layer sees the
tensor after them. The layer is resolved on the backbone, so a tap works the same on a bare network, an
``AttachedNetwork`` and their DDP / DataParallel wrappers; with DataParallel the replicas' captures are
concatenated in device order (the scatter order).
"""
from typing import Dict

import torch
from torch import nn

from gsr.archs.attached_arch import Capture, resolve_layer
from gsr.utils.options import checked_init


class FeatureTap:
    """Capture the input (default) or output of ``layer`` of ``net``'s backbone on every forward pass."""

    @checked_init('feature_tap')
    def __init__(self, net: nn.Module, layer: str = 'conv_last', capture: Capture = 'input'):
        self.module = resolve_layer(net, layer, 'feature_tap.layer')
        self.layer, self.capture = layer, capture
        self._captured: Dict[torch.device, torch.Tensor] = {}
        if capture == 'input':
            self.module.register_forward_pre_hook(self._pre_hook)
        else:
            self.module.register_forward_hook(self._post_hook)

    def _pre_hook(self, module: nn.Module, args) -> None:
        self._captured[args[0].device] = args[0]

    def _post_hook(self, module: nn.Module, args, output):
        # what follows a layer may modify its output in place (e.g. LeakyReLU(inplace=True)): pass on a copy
        self._captured[output.device] = output
        return output.clone()

    @property
    def features(self) -> torch.Tensor:
        """The tensor captured by the last forward pass."""
        if not self._captured:
            raise RuntimeError(f'feature tap on {self.layer!r} has captured nothing yet: run a forward pass first')
        tensors = [self._captured[d] for d in sorted(self._captured, key=lambda d: (d.type, d.index or 0))]
        return tensors[0] if len(tensors) == 1 else torch.cat([t.to(tensors[0].device) for t in tensors])

    def clear(self) -> None:
        self._captured.clear()
