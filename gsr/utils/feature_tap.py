"""A forward hook that captures (and optionally transforms) the tensor entering or leaving one layer.

The tap is the one place where gsr touches an architecture: the alignment losses read the captured
tensor, channel Dropout (and later feature denoisers) transform it, and BasicSR's architectures stay
unchanged. It resolves the layer on the bare network, so it works the same under DDP and DataParallel
wrappers; with DataParallel the replicas' captures are concatenated in device order (the scatter order).
"""
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from gsr.utils.errors import GsrError

Transform = Callable[[torch.Tensor], torch.Tensor]


def bare_network(net: nn.Module) -> nn.Module:
    """Unwrap DataParallel / DistributedDataParallel."""
    return net.module if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else net


class FeatureTap:
    """Capture the input (default) or output of ``layer`` of ``net``; apply ``transforms`` in order.

    ``transforms`` act on the tensor before it reaches the layer (input mode) or on its result (output
    mode), in training and evaluation alike; a transform that should act only in training checks
    ``torch.is_grad_enabled()`` or a module's ``training`` flag itself.
    """

    def __init__(self,
                 net: nn.Module,
                 layer: str = 'conv_last',
                 capture: str = 'input',
                 transforms: Optional[List[Transform]] = None):
        if capture not in ('input', 'output'):
            raise GsrError(f"feature_tap.capture must be 'input' or 'output', got {capture!r}")
        bare = bare_network(net)
        try:
            self.module = bare.get_submodule(layer)
        except AttributeError as e:
            convs = [n for n, m in bare.named_modules() if isinstance(m, nn.Conv2d)][-5:]
            raise GsrError(f'feature_tap.layer {layer!r} is not a layer of {bare.__class__.__name__}; '
                           f'its last conv layers are: {", ".join(convs)}') from e
        self.layer, self.capture = layer, capture
        self.transforms: List[Transform] = list(transforms or [])
        self._captured: Dict[torch.device, torch.Tensor] = {}
        if capture == 'input':
            self._handle = self.module.register_forward_pre_hook(self._pre_hook)
        else:
            self._handle = self.module.register_forward_hook(self._post_hook)

    def _process(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x)
        self._captured[x.device] = x
        return x

    def _pre_hook(self, module: nn.Module, args):
        return (self._process(args[0]), ) + tuple(args[1:])

    def _post_hook(self, module: nn.Module, args, output):
        # what follows a layer may modify its output in place (e.g. LeakyReLU(inplace=True)): pass on a copy
        return self._process(output).clone()

    @property
    def features(self) -> torch.Tensor:
        """The tensor captured by the last forward pass (after transforms)."""
        if not self._captured:
            raise RuntimeError(f'feature tap on {self.layer!r} has captured nothing yet: run a forward pass first')
        tensors = [self._captured[d] for d in sorted(self._captured, key=lambda d: (d.type, d.index or 0))]
        return tensors[0] if len(tensors) == 1 else torch.cat([t.to(tensors[0].device) for t in tensors])

    def clear(self) -> None:
        self._captured.clear()

    def remove(self) -> None:
        self._handle.remove()
        self.clear()


class ChannelDropout(nn.Module):
    """Channel-wise Dropout at the tap (Kong et al., "Reflash Dropout in Image Super-Resolution", CVPR 2022, Sec. 4):
    ``nn.Dropout2d(p)``, active only while the network is in training mode."""

    def __init__(self, net: nn.Module, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise GsrError(f'dropout.p must be in [0, 1), got {p}')
        self.net = [net]  # not a submodule: the network is owned by the model
        self.dropout = nn.Dropout2d(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.dropout.train(self.net[0].training)
        return self.dropout(x)
