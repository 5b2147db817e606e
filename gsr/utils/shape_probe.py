"""One forward pass on fake tensors: shape mistakes of a configuration fail before any folder or any work.

Option checks read keys; some mistakes only show when tensors flow: a module attached at a layer of another width
(the hook is not on a convolution, so no channel count can be read off the layer), two networks built with
different latent sizes. ``probe_forward`` builds the network and runs it once in training mode under PyTorch's
``FakeTensorMode``, which propagates shapes, dtypes and devices without allocating or computing (the mode
``torch.compile`` traces with), so a paper-scale network costs a fraction of a second and no memory.
"""
from typing import Callable, Sequence

import torch
from torch import nn
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode,
                                           UnsupportedOperatorException)

from gsr.utils.errors import GsrError

# raised where an operation cannot run on fake tensors (a value read with .item(), an output shape that depends on
# the data, an operator without a fake kernel): the probe says nothing then, the real run will
NOT_PROBED = (DataDependentOutputException, DynamicOutputShapeException, UnsupportedOperatorException)


def probe_forward(build: Callable[[], nn.Module], shape: Sequence[int], what: str) -> None:
    """Build a network with ``build()`` and run it in training mode on a fake float batch of ``shape``; a shape
    error is one ``GsrError`` naming ``what`` and the batch."""
    with FakeTensorMode():
        try:
            net = build().train()
        except Exception:  # noqa: BLE001  (the option check built it for real already: fake tensors fell short,
            return         # e.g. SwinIR reads a value while building)
        batch = torch.empty(*shape)
        try:
            net(batch)
        except NOT_PROBED:
            return
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise GsrError(f'{what} does not run on an LR batch of shape {tuple(shape)}: {first}') from e
