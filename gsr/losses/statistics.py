"""Feature statistics shared by the alignment losses (vectorised over pairs; no loop over the batch)."""
import torch


def pooled_centered(feat: torch.Tensor, center: bool = True) -> torch.Tensor:
    """Global-average-pool (B, C, H, W) -> (B, C) and, if ``center``, subtract the mean over the batch."""
    pooled = feat.mean(dim=(2, 3))
    return pooled - pooled.mean(dim=0, keepdim=True) if center else pooled


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
