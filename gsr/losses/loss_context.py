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
    ``records`` maps an attached module's name to what it recorded in the step (e.g. a detector's logits).
    ``twin_features`` / ``twin_records``: the same on the noise-free twin rows, when the model forwards the twin.
    ``teacher_twin`` maps an attached module's name to the EMA network's tensor at that module on the twin rows
    (without gradient), for the losses that ask for a mean-teacher target (``teacher_reads``).
    Statistics shared by several losses are computed once per step (``pair``).
    """
    batch: DegradedBatch
    output: torch.Tensor
    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    twin_features: Dict[str, torch.Tensor] = field(default_factory=dict)
    records: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict)
    twin_records: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict)
    teacher_twin: Dict[str, torch.Tensor] = field(default_factory=dict)
    iteration: int = 0  # the training iteration (set by ``GsrModel.optimize_parameters``; loss warm-ups read it)
    across_ranks: bool = False  # batch statistics of ``pair()`` over every rank (``batch_statistics: global``)
    _pairs: Dict[str, FeaturePair] = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> Dict[str, torch.Tensor]:
        return self.batch.labels

    def record(self, module: str, key: str, twin: bool = False) -> torch.Tensor:
        """What attached module ``module`` recorded under ``key`` on the LQ rows (or the twin rows)."""
        records = self.twin_records if twin else self.records
        if key not in records.get(module, {}):
            raise GsrError(f'attach.{module} recorded no {key!r} in this step' +
                           ('' if not twin else ' for the noise-free twin (set noise_free_twin: true)'))
        return records[module][key]

    def pair(self, tap: str = MAIN_TAP) -> FeaturePair:
        """The two degraded copies' features at ``tap``, for losses between copies of the same crop."""
        if tap not in self._pairs:
            if self.batch.copies() != 2:
                raise GsrError('this regularizer compares two degraded copies of each crop, but the training batch '
                               'is not paired (set paired: true and train on a PairedDegradationDataset)')
            self._pairs[tap] = FeaturePair(self.features[tap], self.across_ranks)
        return self._pairs[tap]
