"""The one object every gsr loss term receives: the degraded batch, the network's output and tapped features."""
from dataclasses import dataclass, field
from typing import Dict

import torch

from gsr.data.degraded_batch import DegradedBatch
from gsr.losses.statistics import FeaturePair
from gsr.utils.errors import GsrError

MAIN_TAP = 'feature_tap'  # the tap of the model's ``feature_tap:`` block


@dataclass
class LossContext:
    """What one training step computed, for the loss terms under ``train.regularizers`` (and a model's own).

    ``features`` maps a tap name to what it captured on the LQ rows (``MAIN_TAP`` for ``feature_tap:``);
    ``twin_features`` the same on the noise-free twin rows, when the model forwards the twin. Statistics shared
    by several losses are computed once per step (``pair``).
    """
    batch: DegradedBatch
    output: torch.Tensor
    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    twin_features: Dict[str, torch.Tensor] = field(default_factory=dict)
    _pairs: Dict[str, FeaturePair] = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> Dict[str, torch.Tensor]:
        return self.batch.labels

    def pair(self, tap: str = MAIN_TAP) -> FeaturePair:
        """The two degraded copies' features at ``tap``, for losses between copies of the same crop."""
        if tap not in self._pairs:
            if self.batch.copies() != 2:
                raise GsrError('this regularizer compares two degraded copies of each crop, but the training batch '
                               'is not paired (set paired: true and train on a PairedDegradationDataset)')
            self._pairs[tap] = FeaturePair(self.features[tap])
        return self._pairs[tap]


def takes_context(loss_class: type) -> bool:
    """Whether a loss class's ``forward`` takes a ``LossContext`` (the regularizers do; pixel losses do not)."""
    import inspect
    import typing
    params = [p for p in inspect.signature(loss_class.forward).parameters if p != 'self']
    hints = typing.get_type_hints(loss_class.forward)
    return len(params) == 1 and hints.get(params[0]) is LossContext
