"""SAVL's variational terms (ICLR 2026, OpenReview IOmPy7P1y4; our reading, ``docs/SAVL.md``)."""
import torch


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor, dim_reduction: str = 'mean') -> torch.Tensor:
    """Per-pixel KL( N(mu, diag sigma^2) || N(0, I) ) = 1/2 sum_d (mu_d^2 + sigma_d^2 - log sigma_d^2 - 1), the VIB
    bound on I(r; y) that SAVL's objective weights by (1 + lambda) (B.2). ``mean`` / ``log_var``: (N, D, h, w);
    returns (N, h, w), summed over the D dimensions or (``dim_reduction='mean'``) averaged over them."""
    kl = 0.5 * (mean.pow(2) + log_var.exp() - log_var - 1)
    return kl.sum(1) if dim_reduction == 'sum' else kl.mean(1)
