"""SAVL's degradation representation ("Learning Heterogeneous Degradation Representation for Real-World
Super-Resolution", ICLR 2026, OpenReview IOmPy7P1y4): a per-pixel Gaussian posterior inferred from a bounded
neighbourhood of the LR image, and the re-degrader that reconstructs the LR image from the content and a sample of
it. No code and no method text are public: the layers below are the labelled PROPOSAL of
``shared/research/lightbsr_and_savl.md`` B.7 (points 1 and 2), our reading, not the authors' (``docs/SAVL.md``).
"""
from typing import Tuple

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode='reflect')


class PerPixelGaussian(nn.Module):
    """``num_layers`` reflect-padded 3x3 convs with LeakyReLU 0.1, no pooling or stride, then 1x1 heads for a
    per-pixel Gaussian's mean and log-variance (clamped to ``log_var_range``: an overflowing log-variance cannot
    make the variance infinite or zero). ``forward(x) -> (mean, log_var)``, each (N, latent_dim, h, w)."""

    def __init__(self, num_in_ch: int, num_feat: int, latent_dim: int, num_layers: int,
                 log_var_range: Tuple[float, float]):
        super().__init__()
        layers = [conv3x3(num_in_ch, num_feat)]
        for _ in range(num_layers - 1):
            layers += [nn.LeakyReLU(0.1, True), conv3x3(num_feat, num_feat)]
        self.body = nn.Sequential(*layers, nn.LeakyReLU(0.1, True))
        self.mean = nn.Conv2d(num_feat, latent_dim, 1)
        self.log_var = nn.Conv2d(num_feat, latent_dim, 1)
        self.log_var_range = tuple(log_var_range)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        feat = self.body(x)
        return self.mean(feat), self.log_var(feat).clamp(*self.log_var_range)


@ARCH_REGISTRY.register()
class SAVLEstimator(PerPixelGaussian):
    """The amortized posterior q(r | y) = prod_u N(r(u); mu(u), diag sigma^2(u)) (SAVL Sec. 3, as summarised): a
    ``PerPixelGaussian`` on the LR image, so each output pixel sees a (2 num_layers + 1)^2 neighbourhood (13x13
    with 6 layers)."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, latent_dim: int = 64, num_layers: int = 6,
                 log_var_range: Tuple[float, float] = (-10.0, 10.0)):
        super().__init__(num_in_ch, num_feat, latent_dim, num_layers, log_var_range)
        self.receptive_field = 2 * num_layers + 1

    @staticmethod
    def sample(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """The reparameterised draw r = mu + sigma * eps, eps ~ N(0, I), differentiable in mu and sigma."""
        return mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)


class SFTBlock(nn.Module):
    """A residual block whose features are scaled and shifted per pixel by the representation (SFT, Wang et al.,
    CVPR 2018): ``x + conv(lrelu(conv(x * (1 + scale(r)) + shift(r))))``."""

    def __init__(self, num_feat: int, latent_dim: int):
        super().__init__()
        self.scale = nn.Conv2d(latent_dim, num_feat, 1)
        self.shift = nn.Conv2d(latent_dim, num_feat, 1)
        self.body = nn.Sequential(conv3x3(num_feat, num_feat), nn.LeakyReLU(0.1, True), conv3x3(num_feat, num_feat))

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return x + self.body(x * (1 + self.scale(r)) + self.shift(r))


@ARCH_REGISTRY.register()
class SAVLDegrader(nn.Module):
    """The likelihood p(y | z, r) as a re-degrader (training only): the content z (the HR image downsampled to the
    LR size) through ``num_block`` SFT blocks modulated by the sampled representation r, to a reconstruction of the
    LR image y (an L1 loss on it is a Laplacian likelihood)."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 32, latent_dim: int = 64, num_block: int = 4):
        super().__init__()
        self.head = conv3x3(num_in_ch, num_feat)
        self.blocks = nn.ModuleList(SFTBlock(num_feat, latent_dim) for _ in range(num_block))
        self.tail = conv3x3(num_feat, num_in_ch)

    def forward(self, content: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        x = self.head(content)
        for block in self.blocks:
            x = block(x, r)
        return content + self.tail(x)


@ARCH_REGISTRY.register()
class CLUBConditional(PerPixelGaussian):
    """CLUB's variational conditional q(r | z) (Cheng et al., ICML 2020) for the ablation "w/o SAVL + CLUB" (SAVL
    Tab. 1; its layers are our reading): a ``PerPixelGaussian`` over the representation r given the content z (the
    HR image downsampled to the LR size). Training only."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 32, latent_dim: int = 64, num_layers: int = 3,
                 log_var_range: Tuple[float, float] = (-10.0, 10.0)):
        super().__init__(num_in_ch, num_feat, latent_dim, num_layers, log_var_range)
