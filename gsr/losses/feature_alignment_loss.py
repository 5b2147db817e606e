"""Linear feature-statistics alignment between the two degraded copies of each HR crop."""
from typing import Literal

import torch
from basicsr.utils.registry import LOSS_REGISTRY

from gsr.losses.loss_context import LossContext
from gsr.losses.regularizer import Regularizer
from gsr.losses.statistics import rank_one_discrepancy, reduce_pairs, spatial_discrepancy


@LOSS_REGISTRY.register()
class FeatureAlignmentLoss(Regularizer):
    """Align mean and covariance of the tapped features across a pair (Wang et al., CVPR 2024, Sec. 3.2).

    ``mode: official`` reproduces the released code: GAP per sample, centre each copy over the batch
    (``center``), then ``rank_one_discrepancy``. ``mode: spatial`` uses per-sample mean and covariance over
    spatial positions (``spatial_discrepancy``). ``reduction`` sums (released code) or averages over pairs.
    """

    needs_pairs = True  # compares the two degraded copies of each crop (``LossContext.pair``)

    def __init__(self, loss_weight: float = 1.0, mode: Literal['official', 'spatial'] = 'official',
                 reduction: Literal['sum', 'mean'] = 'sum', center: bool = True):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.mode, self.reduction = mode, reduction
        self.center = center

    @staticmethod
    def minimum_pairs(cfg) -> int:
        """Pairs per GPU below which the loss is identically 0: a centred pool of one sample is zero."""
        return 2 if cfg.get('mode', 'official') == 'official' and cfg.get('center', True) else 1

    def forward(self, context: LossContext) -> torch.Tensor:
        pair = context.pair()
        if self.mode == 'spatial':
            per_pair = spatial_discrepancy(*pair.copies)
        else:
            per_pair = rank_one_discrepancy(*pair.pooled_centered(self.center))
        return self.loss_weight * reduce_pairs(per_pair, self.reduction)
