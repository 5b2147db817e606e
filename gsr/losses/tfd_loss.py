"""The losses of targeted feature denoising (our reading of arXiv 2509.14841; proposal §5.5 in docs/TFD.md)."""
from typing import Any, Dict, List, Literal

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch.nn import functional as F

from gsr.data.second_order_degrader import effective_noise_std
from gsr.losses.loss_context import LossContext
from gsr.losses.regularizer import Regularizer


def balanced_accuracy(said: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(TPR + TNR) / 2 of boolean predictions against boolean labels: 0.5 for any constant answer; the mean of
    the rates that exist when a step has only one class."""
    rates = [(said[rows] == truth[rows]).float().mean() for rows in (truth, ~truth) if rows.any()]
    return torch.stack(rates).mean()


@LOSS_REGISTRY.register()
class NoiseDetectionLoss(Regularizer):
    """Supervises the detector of attached module ``attachment`` with the degrader's labels.

    Target per LQ row: ``binary`` y = 1[s_eff > ``threshold``] (BCE on the logit), or ``level`` min(s_eff /
    ``level_scale``, 1) (L1 on the sigmoid), with s_eff from ``effective_noise_std`` (0-255 units). The noise-free
    twin rows are negatives with target 0. With a per-pixel head, the same on ``noise_map`` (|LQ − twin| averaged
    over channels, resized to the feature) against ``threshold`` / 255, averaged with the image term. Logged as
    ``bacc_<name>``: the image head's balanced accuracy on the step's rows (``balanced_accuracy``).
    """
    needs_twin = True
    needs_noisy_rows = True  # positives for the detector

    def __init__(self, loss_weight: float = 0.1, target: Literal['binary', 'level'] = 'binary', threshold: float = 2.0,
                 level_scale: float = 30.0, attachment: str = 'tfd'):
        super().__init__()
        self.loss_weight, self.threshold, self.level_scale = float(loss_weight), float(threshold), float(level_scale)
        self.target = target
        self.attachment = attachment

    def _term(self, logit: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        if self.target == 'binary':
            return F.binary_cross_entropy_with_logits(logit.float(), (level > self.threshold).float())
        return F.l1_loss(torch.sigmoid(logit.float()), (level / self.level_scale).clamp(max=1))

    def forward(self, context: LossContext) -> torch.Tensor:
        noisy = context.record(self.attachment, 'logit')
        clean = context.record(self.attachment, 'logit', twin=True)
        level = effective_noise_std(context.labels)
        logits, levels = torch.cat([noisy, clean]), torch.cat([level, torch.zeros_like(level)])
        self.metrics = {'bacc': balanced_accuracy(logits.detach() > 0, levels > self.threshold)}
        loss = self._term(logits, levels)
        if 'pixel_logit' in context.records.get(self.attachment, {}):
            pixel = torch.cat([context.record(self.attachment, 'pixel_logit'),
                               context.record(self.attachment, 'pixel_logit', twin=True)])
            noise_map = F.interpolate(context.labels['noise_map'], size=pixel.shape[-2:], mode='bilinear')
            loss = (loss + self._term(pixel, torch.cat([noise_map, torch.zeros_like(noise_map)]) * 255)) / 2
        return self.loss_weight * loss


@LOSS_REGISTRY.register()
class TwinFeatureLoss(Regularizer):
    """Makes the noisy rows' features those of their noise-free twins (d: ``criterion``, per row).

    ``twin_loss: residual`` (inline modules, the default): the module's removed component regresses the feature
    noise, d(g · n̂(f(x)), sg(f(x) − f(x_twin))), over every LQ row (rows without noise teach it to remove
    nothing); the denoiser, not the backbone, does the denoising, as the paper's design implies.
    ``twin_loss: feature`` (always for ``training_only`` modules): d(f'(x), sg(t(x_twin))) over the rows that
    received noise, f' the module's output inline, the backbone's feature f weighted by the detector's
    probability (stop-gradient) in ``training_only``. Its target t: ``twin_target: ema``, the EMA network's
    feature (a mean teacher, which a step of the student cannot move; the model runs it on the twin rows), or
    ``self``, the same network in the same pass: then every step moves the target as much as the prediction and
    the distance grows instead of shrinking (docs/TFD.md), the "brute-force" matching the alignment paper calls
    very unstable. d: the mean absolute difference (``l1``) or 1 − the cosine similarity of the flattened tensors.
    """
    needs_twin = True

    def __init__(self, loss_weight: float = 1.0, criterion: Literal['l1', 'cosine'] = 'l1',
                 twin_loss: Literal['residual', 'feature'] = 'residual', twin_target: Literal['ema', 'self'] = 'ema',
                 attachment: str = 'tfd'):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.criterion, self.twin_loss, self.twin_target = criterion, twin_loss, twin_target
        self.attachment = attachment

    def form(self, mode: str) -> str:
        """``residual`` or ``feature``: what this loss computes for a module in ``mode``."""
        return 'residual' if mode == 'inline' and self.twin_loss == 'residual' else 'feature'

    def teacher_reads(self, attach: Dict[str, Dict[str, Any]]) -> List[str]:
        """The attached modules whose EMA-network tensor on the twin rows this loss reads (``LossContext``)."""
        mode = (attach.get(self.attachment) or {}).get('mode', 'inline')
        return [self.attachment] if self.twin_target == 'ema' and self.form(mode) == 'feature' else []

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.criterion == 'l1':
            return (x - y).abs().flatten(1).mean(1)
        return 1 - F.cosine_similarity(x.flatten(1), y.flatten(1), dim=1)

    def forward(self, context: LossContext) -> torch.Tensor:
        inline = 'output' in context.records.get(self.attachment, {})
        twin = context.record(self.attachment, 'input', twin=True).detach()
        if self.form('inline' if inline else 'training_only') == 'residual':
            noise = context.record(self.attachment, 'input').detach() - twin
            distance = self.distance(context.record(self.attachment, 'removed'), noise)
            return self.loss_weight * distance.mean()
        target = context.teacher_twin[self.attachment] if self.twin_target == 'ema' else twin
        distance = self.distance(context.record(self.attachment, 'output' if inline else 'input'), target.detach())
        if not inline:
            distance = distance * torch.sigmoid(context.record(self.attachment, 'logit')).detach()
        noisy = (effective_noise_std(context.labels) > 0).float()
        return self.loss_weight * (distance * noisy).sum() / noisy.sum().clamp(min=1)
