"""The losses of targeted feature denoising (our reading of arXiv 2509.14841; proposal §5.5 in docs/TFD.md)."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn
from torch.nn import functional as F

from gsr.data.second_order_degrader import effective_noise_std
from gsr.losses.feature_alignment_loss import check_choice
from gsr.losses.loss_context import LossContext


@LOSS_REGISTRY.register()
class NoiseDetectionLoss(nn.Module):
    """Supervises the detector of attached module ``attachment`` with the degrader's labels.

    Target per LQ row: ``binary`` y = 1[s_eff > ``threshold``] (BCE on the logit), or ``level`` min(s_eff /
    ``level_scale``, 1) (L1 on the sigmoid), with s_eff from ``effective_noise_std`` (0-255 units). The noise-free
    twin rows are negatives with target 0. With a per-pixel head, the same on ``noise_map`` (|LQ − twin| averaged
    over channels, resized to the feature) against ``threshold`` / 255, averaged with the image term.
    """
    needs_twin = True
    needs_noisy_rows = True  # positives for the detector

    def __init__(self, loss_weight: float = 0.1, target: str = 'binary', threshold: float = 2.0,
                 level_scale: float = 30.0, attachment: str = 'tfd'):
        super().__init__()
        self.loss_weight, self.threshold, self.level_scale = float(loss_weight), float(threshold), float(level_scale)
        self.target = check_choice('NoiseDetectionLoss.target', target, ('binary', 'level'))
        self.attachment = attachment

    def _term(self, logit: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        if self.target == 'binary':
            return F.binary_cross_entropy_with_logits(logit.float(), (level > self.threshold).float())
        return F.l1_loss(torch.sigmoid(logit.float()), (level / self.level_scale).clamp(max=1))

    def forward(self, context: LossContext) -> torch.Tensor:
        noisy = context.record(self.attachment, 'logit')
        clean = context.record(self.attachment, 'logit', twin=True)
        level = effective_noise_std(context.labels)
        loss = self._term(torch.cat([noisy, clean]), torch.cat([level, torch.zeros_like(level)]))
        if 'pixel_logit' in context.records.get(self.attachment, {}):
            pixel = torch.cat([context.record(self.attachment, 'pixel_logit'),
                               context.record(self.attachment, 'pixel_logit', twin=True)])
            noise_map = F.interpolate(context.labels['noise_map'], size=pixel.shape[-2:], mode='bilinear')
            loss = (loss + self._term(pixel, torch.cat([noise_map, torch.zeros_like(noise_map)]) * 255)) / 2
        return self.loss_weight * loss


@LOSS_REGISTRY.register()
class TwinFeatureLoss(nn.Module):
    """Pulls the features of noisy rows toward the stop-gradient features of their noise-free twins.

    Inline modules: d(f'(x), sg(f(x_twin))) with f' the module's output; ``training_only`` modules:
    g · d(f(x), sg(f(x_twin))) with the detector's probability g (stop-gradient) as the weight, so the backbone's
    own features are denoised where noise is detected. d is the mean absolute difference (``l1``) or
    1 − cosine similarity of the flattened features (``cosine``, the TFD analysis' measure); averaged over the rows
    that received noise (zero when none did).
    """
    needs_twin = True

    def __init__(self, loss_weight: float = 0.1, criterion: str = 'l1', attachment: str = 'tfd'):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.criterion = check_choice('TwinFeatureLoss.criterion', criterion, ('l1', 'cosine'))
        self.attachment = attachment

    def forward(self, context: LossContext) -> torch.Tensor:
        records = context.records.get(self.attachment, {})
        inline = 'output' in records
        features = context.record(self.attachment, 'output' if inline else 'input').float()
        target = context.record(self.attachment, 'input', twin=True).detach().float()
        if self.criterion == 'l1':
            distance = (features - target).abs().flatten(1).mean(1)
        else:
            distance = 1 - F.cosine_similarity(features.flatten(1), target.flatten(1), dim=1)
        if not inline:
            distance = distance * torch.sigmoid(context.record(self.attachment, 'logit')).detach().float()
        noisy = (effective_noise_std(context.labels) > 0).float()
        return self.loss_weight * (distance * noisy).sum() / noisy.sum().clamp(min=1)
