"""Nonlinear alignment: the same statistics discrepancy in a Random-Fourier-Feature space."""
import math
from typing import Literal, Optional

import torch
from basicsr.utils.registry import LOSS_REGISTRY

from gsr.losses.loss_context import LossContext
from gsr.losses.regularizer import Regularizer
from gsr.losses.statistics import rank_one_discrepancy, reduce_pairs

EPS = 1e-8


def official_rff_map(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Simple-Align's released RFF map (Wang et al., CVPR 2024, Sec. 3.3, ``random_fourier_features_gpu``).

    For rows z (…, C), one frequency w and per-channel phases b_c: a_c = w·z_c + b_c, min-max normalised
    across channels per row to [0, π/2], then φ_c = √2 (cos a_c + sin a_c).
    Shapes: z (B, N, C), w (B, 1, 1), b (B, 1, C) — one (w, b) draw per pair, shared by its N rows.
    """
    a = w * z + b
    a = a - a.amin(-1, keepdim=True)
    a = a / a.amax(-1, keepdim=True).clamp_min(EPS) * (math.pi / 2)
    return math.sqrt(2.) * (torch.cos(a) + torch.sin(a))


def rff_map(x: torch.Tensor, weight: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Textbook random Fourier features (Rahimi & Recht, NeurIPS 2007): φ(x) = √(2/D) cos(W x + b), W (D, C)."""
    return math.sqrt(2. / weight.shape[0]) * torch.cos(x @ weight.t() + phase)


@LOSS_REGISTRY.register()
class RFFAlignmentLoss(Regularizer):
    """Align the pair's statistics after a random Fourier feature map (Wang et al., CVPR 2024, Sec. 3.3).

    ``mode: official`` (released code): one frequency w ~ N(0, 1/sigma²) shared by all channels and a phase per
    channel, both redrawn on every call for every pair, ``official_rff_map``, then ``rank_one_discrepancy``.
    ``mode: rff``: ``num_features`` textbook features with bandwidth ``sigma``, redrawn per call
    (``redraw: true``) or fixed from ``seed``.
    """

    needs_pairs = True  # compares the two degraded copies of each crop (``LossContext.pair``)

    def __init__(self,
                 loss_weight: float = 1.0,
                 mode: Literal['official', 'rff'] = 'official',
                 reduction: Literal['sum', 'mean'] = 'sum',
                 sigma: float = 1.0,
                 num_features: int = 256,
                 redraw: bool = True,
                 seed: Optional[int] = None,
                 center: bool = True):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.mode, self.reduction = mode, reduction
        self.sigma, self.num_features, self.redraw, self.center = float(sigma), int(num_features), redraw, center
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.fixed = None

    def _textbook_draw(self, channels: int, like: torch.Tensor):
        if self.fixed is None or self.redraw:
            weight = torch.randn(self.num_features, channels, generator=self.generator) / self.sigma
            phase = torch.rand(self.num_features, generator=self.generator) * 2 * math.pi
            self.fixed = (weight, phase)
        return self.fixed[0].to(like), self.fixed[1].to(like)

    @staticmethod
    def minimum_pairs(cfg) -> int:
        """Pairs per GPU below which the loss is identically 0: a centred pool of one sample is zero."""
        return 2 if cfg.get('center', True) else 1

    def forward(self, context: LossContext) -> torch.Tensor:
        pair = context.pair()
        u, v = pair.pooled_centered(self.center)
        if self.mode == 'official':
            pairs, channels = u.shape
            w = torch.randn(pairs, 1, 1, device=u.device, dtype=u.dtype) / self.sigma
            b = torch.rand(pairs, 1, channels, device=u.device, dtype=u.dtype) * 2 * math.pi
            mapped = official_rff_map(torch.stack([u, v], 1), w, b)
            pu, pv = mapped[:, 0], mapped[:, 1]
        else:
            weight, phase = self._textbook_draw(u.shape[1], u)
            pu, pv = rff_map(u, weight, phase), rff_map(v, weight, phase)
        return self.loss_weight * reduce_pairs(rank_one_discrepancy(pu, pv), self.reduction)
