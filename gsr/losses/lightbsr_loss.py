"""The losses of LightBSR's teacher and student (Yuan et al., ICCV 2025; ``shared/research/lightbsr_and_savl.md``
A.3.2 and A.4). ``LightBSRTeacherModel`` / ``LightBSRStudentModel`` put what they read in ``context.records``:
``contrastive`` (the teacher's logits), ``idr`` (the trained network's ``ca`` and ``xk``), ``teacher_idr``."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch.nn import functional as F

from gsr.losses.loss_context import LossContext
from gsr.losses.regularizer import Regularizer


@LOSS_REGISTRY.register()
class InfoNCELoss(Regularizer):
    """MoCo's InfoNCE on logits whose positive is column 0: the mean over rows of ``-log softmax(logits)_0``
    (the logits are already divided by the temperature, ``LightBSR.contrastive_logits``)."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, context: LossContext) -> torch.Tensor:
        logits = context.record('contrastive', 'logits')
        return self.loss_weight * F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long,
                                                                      device=logits.device))


@LOSS_REGISTRY.register()
class IDRDistillationLoss(Regularizer):
    """Distillation of the teacher's converted IDRs into the student's (A.4), the teacher detached:

    ``KL(softmax(ca_T / tau) || softmax(ca_S / tau))`` (batchmean, no tau^2 factor, as in the code)
    ``+ l1_weight * mean |ca_S - ca_T| + spatial_weight * mean (xk_S - xk_T)^2``, tau = ``temperature``.
    """

    def __init__(self, loss_weight: float = 1.0, temperature: float = 0.15, l1_weight: float = 0.1,
                 spatial_weight: float = 1.0):
        super().__init__()
        self.loss_weight, self.temperature = float(loss_weight), float(temperature)
        self.l1_weight, self.spatial_weight = float(l1_weight), float(spatial_weight)

    def forward(self, context: LossContext) -> torch.Tensor:
        ca_s, xk_s = context.record('idr', 'ca'), context.record('idr', 'xk')
        ca_t, xk_t = context.record('teacher_idr', 'ca').detach(), context.record('teacher_idr', 'xk').detach()
        kl = F.kl_div(F.log_softmax(ca_s / self.temperature, 1), F.softmax(ca_t / self.temperature, 1),
                      reduction='batchmean')
        return self.loss_weight * (kl + self.l1_weight * F.l1_loss(ca_s, ca_t) +
                                   self.spatial_weight * F.mse_loss(xk_s, xk_t))
