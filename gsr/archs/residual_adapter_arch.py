"""A residual 1x1-conv adapter: the smallest trainable module to attach to a network's features."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


@ARCH_REGISTRY.register()
class ResidualConvAdapter(nn.Module):
    """``x + W x`` with a 1x1 convolution ``W`` (residual adapters, Rebuffi et al., NeurIPS 2017, Sec. 3).

    ``W`` starts at zero, so attaching the adapter leaves the network's output unchanged until it is trained.
    """

    def __init__(self, num_feat: int = 64):
        super().__init__()
        self.num_feat = num_feat
        self.conv = nn.Conv2d(num_feat, num_feat, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)
