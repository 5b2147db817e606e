"""The paired copies' features (``FeaturePair``) and the statistics the alignment losses share, vectorised."""
from typing import Optional, Tuple

import torch

from gsr.utils.errors import GsrError


class FeaturePair:
    """The tapped features of both degraded copies, stacked ``[copy1; copy2]`` along the batch: (2B, C, H, W).

    Row i of copy 1 and row i of copy 2 come from the same HR crop. Statistics that several regularizers use
    (the per-sample global average pool) are computed once on the stacked tensor and shared: pooling each
    copy separately in each loss costs several extra passes over the feature map in the backward pass.
    """

    def __init__(self, stacked: torch.Tensor, across_ranks: bool = False):
        if stacked.dim() != 4 or stacked.shape[0] % 2:
            raise GsrError(f'FeaturePair needs (2B, C, H, W) features, got {tuple(stacked.shape)}')
        self.stacked, self.across_ranks = stacked, across_ranks
        self._pooled: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def copies(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(copy 1, copy 2), each (B, C, H, W)."""
        return self.stacked.chunk(2)

    def pooled(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-sample global average pools of both copies, each (B, C); with ``across_ranks`` the rows of every
        process of the group, (N B, C) (``gathered_pairs``)."""
        if self._pooled is None:
            pooled = self.stacked.mean(dim=(2, 3))
            self._pooled = (gathered_pairs(pooled) if self.across_ranks else pooled).chunk(2)
        return self._pooled

    def pooled_centered(self, center: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """The pools with each copy's mean over the batch subtracted (when ``center``)."""
        return tuple(p - p.mean(dim=0, keepdim=True) if center else p for p in self.pooled())


def gathered_pairs(stacked: torch.Tensor) -> torch.Tensor:
    """``[copy1; copy2]`` rows (2B, C) of every rank as one ``[copy1 of all ranks; copy2 of all ranks]`` (2NB, C),
    differentiable (``torch.distributed.nn``): every rank then computes the loss of the whole global batch, and
    all_gather's backward sums each rank's gradient of it, so after DDP's average the parameters receive the
    single-process gradient of the global batch. Unchanged outside a process group of several ranks."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stacked
    from torch.distributed.nn.functional import all_gather
    firsts, seconds = zip(*(part.chunk(2) for part in all_gather(stacked)))
    return torch.cat(firsts + seconds)


def rank_one_discrepancy(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-pair discrepancy of Simple-Align's ``reg`` (Wang et al., CVPR 2024, Sec. 3.2, as released):

    d_i = ‖u_i − v_i‖² / C + ‖u_i u_iᵀ − v_i v_iᵀ‖_F² / C²   for rows u_i, v_i of (B, C) inputs.

    The first term aligns first-order statistics, the second the (rank-one, per-sample) second-order ones.
    """
    c = u.shape[1]
    mean_term = (u - v).pow(2).sum(1) / c
    outer = u.unsqueeze(2) * u.unsqueeze(1) - v.unsqueeze(2) * v.unsqueeze(1)
    return mean_term + outer.pow(2).sum((1, 2)) / c**2


def spatial_discrepancy(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Per-pair discrepancy of spatial statistics (the paper's wording, Sec. 3.2):

    d_i = ‖μ_i¹ − μ_i²‖² / C + ‖Σ_i¹ − Σ_i²‖_F² / C²,  μ and Σ the mean and covariance over the H·W positions.
    """
    b, c = f1.shape[:2]
    x1, x2 = f1.reshape(b, c, -1), f2.reshape(b, c, -1)
    n = max(x1.shape[2] - 1, 1)
    mu1, mu2 = x1.mean(2), x2.mean(2)
    xc1, xc2 = x1 - mu1.unsqueeze(2), x2 - mu2.unsqueeze(2)
    cov1, cov2 = xc1 @ xc1.transpose(1, 2) / n, xc2 @ xc2.transpose(1, 2) / n
    return (mu1 - mu2).pow(2).sum(1) / c + (cov1 - cov2).pow(2).sum((1, 2)) / c**2


def reduce_pairs(values: torch.Tensor, reduction: str) -> torch.Tensor:
    return values.sum() if reduction == 'sum' else values.mean()
