"""The base class of every ``train.regularizers`` loss: one argument, the step's ``LossContext``, and what it needs
from the model declared as class attributes, which the model checks before any folder exists."""
import abc
from typing import Any, ClassVar, Dict, List, Optional

import torch
from torch import nn

from gsr.losses.loss_context import LossContext
from gsr.utils.options import checked_init


def metric_log_name(metric: str, term: str) -> str:
    """The training log's name of ``metric`` measured by the regularizer ``term``: ``<metric>_<term without l_>``
    (``bacc`` of ``l_det`` is ``bacc_det``), so it sorts beside neither the loss terms nor their ``grad_`` ratios."""
    return f'{metric}_{term.removeprefix("l_")}'


def logged_metric(key: str, term: str) -> Optional[str]:
    """The metric of ``term`` that the log name ``key`` holds (``metric_log_name`` inverted), or None."""
    suffix = metric_log_name('', term)
    if key.startswith(('grad_', 'l_')) or not key.endswith(suffix) or key == suffix:
        return None
    return key[:-len(suffix)]


class Regularizer(nn.Module, abc.ABC):
    """``forward(context)`` returns the weighted term. Declared needs (``GeneralizableSRModel.check_regularizer``):
    ``needs_pairs``: two degraded copies of each crop (``paired: true``); ``needs_twin``: the noise-free twin rows
    and the attached module the loss reads; ``needs_noisy_rows``: rows that received noise; ``minimum_pairs``: pairs
    per GPU below which the term is identically 0; ``teacher_reads``: the attached modules whose EMA-network tensor
    it reads (a mean teacher). ``metrics``: what it measured in the step besides its loss, logged by the model."""
    needs_pairs: ClassVar[bool] = False
    needs_twin: ClassVar[bool] = False
    needs_noisy_rows: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        """A subclass's ``__init__`` arguments are checked against its annotations (``check_arguments``: a
        ``Literal`` lists the choices) before it runs, whoever builds it: BasicSR's ``build_loss`` or a script."""
        super().__init_subclass__(**kwargs)
        if '__init__' in vars(cls):
            cls.__init__ = checked_init(cls.__name__)(cls.__init__)

    def __init__(self):
        super().__init__()
        self.metrics: Dict[str, torch.Tensor] = {}

    @staticmethod
    def minimum_pairs(cfg: Dict[str, Any]) -> int:
        return 1

    def teacher_reads(self, attach: Dict[str, Dict[str, Any]]) -> List[str]:
        return []

    @abc.abstractmethod
    def forward(self, context: LossContext) -> torch.Tensor:
        """The weighted term of this step."""
