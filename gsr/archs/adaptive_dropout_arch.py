"""Adaptive Dropout (Xu et al., "Adaptive Dropout: Unleashing Dropout across Layers for Generalizable Image
Super-Resolution", CVPR 2025): a blend of the features with their channel-dropped copy inside every residual block
and before the last conv, switched off layer by layer, shallow to deep, as training goes on.

What is the paper's and what is ours: ``docs/ADAPTIVE_DROPOUT.md``. The positions and the schedule are those of the
released code (xuhang07/Adpative-Dropout); the backbone stays BasicSR's MSRResNet with its own initialisation.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from gsr.archs.iteration_scheduled import IterationScheduled
from gsr.utils.errors import GsrError, check_at_least
from gsr.utils.options import checked_init, option, options_from_dict


@dataclass
class AdaptiveDropoutOptions:
    """``adaptive_dropout:`` — Adaptive Dropout at the released code's positions (MSRResNet only)."""
    identity_weight: float = option(0.3, 'p of the blend p·x + (1 − p)·Dropout2d(x) while a position is on (the '
                                    'released code: 0.3 at every position)')
    dropout_rate: float = option(0.5, 'the channel-drop probability of the blend\'s dropped copy (released: 0.5)')
    switch_every: int = option(20000, 'position k (from 0: the residual blocks\' first convs, shallow to deep, then '
                               'the input of conv_last) is the identity from iteration `switch_every` x (k + 1) on; '
                               'released: 20,000 of 500,000, all 17 off from 340,000')


@ARCH_REGISTRY.register()
class AdaptiveDropout(IterationScheduled, nn.Module):
    """z = p·x + (1 − p)·Dropout2d_r(x) in training, with p = ``identity_weight`` and r = ``dropout_rate`` (the
    dropped copy's kept channels scaled by 1/(1 − r), as ``nn.Dropout2d``), until iteration ``off_at``; from then
    on, and at evaluation, z = x. No parameters: checkpoints are the bare network's."""

    @checked_init('AdaptiveDropout')
    def __init__(self, identity_weight: float = AdaptiveDropoutOptions.identity_weight,
                 dropout_rate: float = AdaptiveDropoutOptions.dropout_rate, off_at: Optional[int] = None):
        super().__init__()
        if not 0 <= identity_weight <= 1:
            raise GsrError(f'identity_weight must be in [0, 1], got {identity_weight}')
        if not 0 <= dropout_rate < 1:
            raise GsrError(f'dropout_rate must be in [0, 1), got {dropout_rate}')
        self.identity_weight, self.dropout_rate, self.off_at = float(identity_weight), float(dropout_rate), off_at
        self.iteration = 0

    def set_iteration(self, iteration: int) -> None:
        self.iteration = iteration

    @property
    def active(self) -> bool:
        """Whether the blend acts in a training step now."""
        return self.off_at is None or self.iteration < self.off_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.active):
            return x
        dropped = F.dropout2d(x, self.dropout_rate, training=True)
        return self.identity_weight * x + (1 - self.identity_weight) * dropped


def msrresnet_positions(num_block: int) -> List[Dict[str, str]]:
    """The released code's 17 positions for SRResNet, shallow to deep: the output of each residual block's first
    conv (before its ReLU: ``body.<k>.conv1`` of BasicSR's ``MSRResNet``), then the input of ``conv_last``."""
    return [{'layer': f'body.{k}.conv1', 'capture': 'output'} for k in range(num_block)] + \
        [{'layer': 'conv_last', 'capture': 'input'}]


def adaptive_dropout_attachments(cfg: Dict[str, Any], network_g: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The ``attach:`` entries of the top-level ``adaptive_dropout:`` block: one ``AdaptiveDropout`` per position,
    the k-th (from 0, shallow to deep) off from iteration ``switch_every`` · (k + 1), training only."""
    options = options_from_dict(AdaptiveDropoutOptions, cfg, 'adaptive_dropout')
    check_at_least('adaptive_dropout.switch_every', options.switch_every, 1)
    if network_g.get('type') != 'MSRResNet':
        raise GsrError(f'adaptive_dropout: its positions are known for MSRResNet (the released code\'s), not '
                       f'{network_g.get("type")}; attach AdaptiveDropout modules under attach: instead')
    positions = msrresnet_positions(int(network_g.get('num_block', 16)))
    return {f'adaptive_dropout_{k}': dict(type='AdaptiveDropout', inference=False,
                                          off_at=options.switch_every * (k + 1),
                                          identity_weight=options.identity_weight, dropout_rate=options.dropout_rate,
                                          **position)
            for k, position in enumerate(positions)}
