"""Brute-force feature matching between the pair (the ablation of Wang et al., CVPR 2024)."""
from typing import Literal

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch.nn import functional as F

from gsr.losses.loss_context import LossContext
from gsr.losses.regularizer import Regularizer


@LOSS_REGISTRY.register()
class FeatureMatchingLoss(Regularizer):
    """L2 between the two copies' tapped feature maps: ``mean((F¹ − F²)²)`` (or its sum)."""

    needs_pairs = True  # compares the two degraded copies of each crop (``LossContext.pair``)

    def __init__(self, loss_weight: float = 1.0, reduction: Literal['sum', 'mean'] = 'mean'):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def forward(self, context: LossContext) -> torch.Tensor:
        pair = context.pair()
        return self.loss_weight * F.mse_loss(*pair.copies, reduction=self.reduction)
