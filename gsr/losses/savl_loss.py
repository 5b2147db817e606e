"""SAVL's variational terms (ICLR 2026, OpenReview IOmPy7P1y4; our reading, ``docs/SAVL.md``)."""
from typing import Literal

import torch
from basicsr.utils.registry import LOSS_REGISTRY

from gsr.losses.loss_context import LossContext
from gsr.losses.regularizer import Regularizer


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor, dim_reduction: str = 'mean') -> torch.Tensor:
    """Per-pixel KL( N(mu, diag sigma^2) || N(0, I) ) = 1/2 sum_d (mu_d^2 + sigma_d^2 - log sigma_d^2 - 1), the VIB
    bound on I(r; y) that SAVL's objective weights by (1 + lambda) (B.2). ``mean`` / ``log_var``: (N, D, h, w);
    returns (N, h, w), summed over the D dimensions or (``dim_reduction='mean'``) averaged over them."""
    kl = 0.5 * (mean.pow(2) + log_var.exp() - log_var - 1)
    return kl.sum(1) if dim_reduction == 'sum' else kl.mean(1)


@LOSS_REGISTRY.register()
class SAVLKLLoss(Regularizer):
    """The KL term of SAVL's objective (B.2, PROPOSAL B.7.3):
    ``loss_weight * (1 + lambda_mis) * min(1, iteration / warmup_iter) * mean over rows and pixels of gaussian_kl``,
    on the posterior the model records as ``context.records['savl']`` (``mean``, ``log_var``). ``loss_weight`` (beta)
    alone is the ELBO's KL; ``lambda_mis`` > 0 adds the mutual-information suppression lane, whose VIB bound on
    I(r; y) shares this KL, so the paper's two lanes collapse to the (1 + lambda) weight; lambda 0 switches it off."""

    def __init__(self, loss_weight: float = 1e-3, lambda_mis: float = 0.0,
                 dim_reduction: Literal['mean', 'sum'] = 'mean', warmup_iter: int = 0):
        super().__init__()
        self.loss_weight, self.lambda_mis, self.warmup_iter = float(loss_weight), float(lambda_mis), int(warmup_iter)
        self.dim_reduction = dim_reduction

    def forward(self, context: LossContext) -> torch.Tensor:
        warmup = min(1.0, context.iteration / self.warmup_iter) if self.warmup_iter > 0 else 1.0
        kl = gaussian_kl(context.record('savl', 'mean'), context.record('savl', 'log_var'), self.dim_reduction)
        return self.loss_weight * (1 + self.lambda_mis) * warmup * kl.mean()


@LOSS_REGISTRY.register()
class SAVLReconstructionLoss(Regularizer):
    """The likelihood term: ``loss_weight * mean |y_hat - y|``, the re-degrader's reconstruction of the LR image
    from the content and a posterior sample against the LR image itself (a Laplacian likelihood;
    ``context.records['savl']``: ``reconstruction``, ``target``)."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, context: LossContext) -> torch.Tensor:
        reconstruction, target = context.record('savl', 'reconstruction'), context.record('savl', 'target')
        return self.loss_weight * (reconstruction - target).abs().mean()


def gaussian_log_likelihood(r: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(r; mean, diag exp(log_var)) per latent dimension, without the constant -1/2 log 2 pi."""
    return -0.5 * ((r - mean).pow(2) / log_var.exp() + log_var)


def club_bound(r: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, dim_reduction: str = 'mean'):
    """CLUB's upper bound on I(r; z) (Cheng et al., ICML 2020, Eq. 8, sampled version), per pixel:
    ``E_{p(r,z)} log q(r|z) - E_{p(r)p(z)} log q(r|z)``, the second expectation over pairs made by one random
    permutation of all N h w pixels of the batch. ``r``, ``mean``, ``log_var``: (N, D, h, w); returns a scalar."""
    positive = gaussian_log_likelihood(r, mean, log_var)
    flat = r.permute(0, 2, 3, 1).reshape(-1, r.shape[1])
    shuffled = flat[torch.randperm(len(flat), device=r.device)].reshape(r.shape[0], r.shape[2], r.shape[3], -1)
    negative = gaussian_log_likelihood(shuffled.permute(0, 3, 1, 2), mean, log_var)
    gap = positive - negative
    return (gap.sum(1) if dim_reduction == 'sum' else gap.mean(1)).mean()


@LOSS_REGISTRY.register()
class SAVLCLUBLoss(Regularizer):
    """MI suppression by CLUB instead of the KL (the ablation "w/o SAVL + CLUB" of SAVL Tab. 1; our reading):
    ``loss_weight * club_bound(r, q(.|z))`` with q's outputs detached (the estimator lowers the bound) plus
    ``likelihood_weight * mean(-log q(r.detach() | z))`` (q learns the conditional; CLUB's alternating fit, done in
    the same step). Records ``context.records['savl']``: ``representation`` r, ``club_mean``, ``club_log_var``."""

    def __init__(self, loss_weight: float = 1e-3, likelihood_weight: float = 1.0,
                 dim_reduction: Literal['mean', 'sum'] = 'mean'):
        super().__init__()
        self.loss_weight, self.likelihood_weight = float(loss_weight), float(likelihood_weight)
        self.dim_reduction = dim_reduction

    def forward(self, context: LossContext) -> torch.Tensor:
        r = context.record('savl', 'representation')
        mean, log_var = context.record('savl', 'club_mean'), context.record('savl', 'club_log_var')
        bound = club_bound(r, mean.detach(), log_var.detach(), self.dim_reduction)
        fit = -gaussian_log_likelihood(r.detach(), mean, log_var).mean()
        return self.loss_weight * bound + self.likelihood_weight * fit
