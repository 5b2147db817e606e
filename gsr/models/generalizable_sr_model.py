"""SR model trained on on-the-fly Real-ESRGAN degradations, optionally paired, with configured regularizers."""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict

import torch
import torch.distributed as dist
from basicsr.data.transforms import paired_random_crop
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from gsr.data.second_order_degrader import DegradationOptions, SecondOrderDegrader
from gsr.losses.statistics import FeaturePair
from gsr.utils.errors import GsrError, NonFiniteLossError
from gsr.utils.feature_tap import ChannelDropout, FeatureTap, bare_network
from gsr.utils.options import options_from_dict


@dataclass
class FeatureTapOptions:
    """``feature_tap:`` — which tensor the regularizers (and Dropout) act on."""
    layer: str = 'conv_last'
    capture: str = 'input'


@dataclass
class DropoutOptions:
    """``dropout:`` — channel Dropout at the tap (Kong et al., CVPR 2022)."""
    p: float = 0.5


KERNEL_KEYS = ('kernel1', 'kernel2', 'sinc_kernel', 'kernel1_info', 'kernel2_info', 'sinc_info')


@MODEL_REGISTRY.register()
class GeneralizableSRModel(SRModel):
    """BasicSR ``SRModel`` whose training batches are degraded on the model's device.

    With ``paired: true`` (default) every GT crop is degraded twice, independently, and the network sees
    ``[copy1; copy2]`` against the GT repeated (Wang et al., CVPR 2024, Sec. 3.1); each loss under
    ``train.regularizers`` receives the two copies' tapped features as a ``FeaturePair``. ``paired: false`` is the
    Real-ESRNet baseline. ``dropout: {p}`` applies channel Dropout at the tap. Validation batches that
    carry ``lq`` are used as they are. Top-level keys are documented in ``docs/OPTIONS.md``.
    """

    def __init__(self, opt: Dict):
        self.copies = 2 if opt.get('paired', True) else 1
        self.noise_free_twin = bool(opt.get('noise_free_twin', False))
        self.degradation = options_from_dict(DegradationOptions, opt.get('degradation'), 'degradation')
        super().__init__(opt)
        self.degrader = SecondOrderDegrader(self.degradation, opt['scale']).to(self.device)
        tap = options_from_dict(FeatureTapOptions, opt.get('feature_tap'), 'feature_tap')
        transforms = []
        if opt.get('dropout') is not None:
            dropout = options_from_dict(DropoutOptions, opt['dropout'], 'dropout')
            transforms.append(ChannelDropout(bare_network(self.net_g), dropout.p))
        self.feature_tap = FeatureTap(self.net_g, tap.layer, tap.capture, transforms)

    def init_training_settings(self):
        super().init_training_settings()
        train_opt = self.opt['train']
        self.regularizers = OrderedDict(
            (name, build_loss(cfg).to(self.device)) for name, cfg in (train_opt.get('regularizers') or {}).items())
        if self.regularizers and self.copies != 2:
            raise GsrError(f'train.regularizers ({", ".join(self.regularizers)}) need paired: true')
        self.max_nonfinite_steps = int(train_opt.get('max_nonfinite_steps', 10))
        self.nonfinite_in_row = 0

    # ------------------------------------------------------------------------------------------- data
    def feed_data(self, data: Dict):
        if 'lq' in data:
            super().feed_data(data)
        else:
            self.degrade_batch(data)

    @torch.no_grad()
    def degrade_batch(self, data: Dict) -> None:
        """Degrade ``data['gt']`` ``copies`` times with the dataset's kernel sets; crop all copies at one place."""
        missing = [k for k in KERNEL_KEYS if k not in data]
        if missing:
            raise GsrError(f'training batch lacks {", ".join(missing)}: use a PairedDegradationDataset for training')
        gt = self.degrader.sharpen(data['gt'].to(self.device))
        sets = data['kernel1'].shape[1]
        lqs, twins, labels = [], [], []
        for copy in range(self.copies):
            kernels = [data[k][:, min(copy, sets - 1)].to(self.device) for k in KERNEL_KEYS]
            draws = self.degrader.sample(gt, *kernels)
            lqs.append(self.degrader.apply(gt, draws))
            if self.noise_free_twin:
                twins.append(self.degrader.apply(gt, draws, add_noise=False))
            labels.append(self.degrader.labels(draws))
        gt = gt.repeat(self.copies, 1, 1, 1)
        lq_list = [torch.cat(lqs)] + ([torch.cat(twins)] if twins else [])
        gt_size = self.opt.get('datasets', {}).get('train', {}).get('gt_size')
        if gt_size:
            gt, lq_list = paired_random_crop(gt, lq_list, gt_size, self.opt['scale'])
            lq_list = lq_list if isinstance(lq_list, list) else [lq_list]
        self.gt, self.lq = gt.contiguous(), lq_list[0].contiguous()
        self.lq_noise_free = lq_list[1].contiguous() if twins else None
        self.degradation_labels = {k: torch.cat([lab[k] for lab in labels]) for k in labels[0]}

    # ------------------------------------------------------------------------------------------- step
    def optimize_parameters(self, current_iter: int):
        self.optimizer_g.zero_grad()
        self.feature_tap.clear()
        self.output = self.net_g(self.lq)
        loss_dict = OrderedDict()
        total = self.cri_pix(self.output, self.gt) if self.cri_pix else 0.
        if self.cri_pix:
            loss_dict['l_pix'] = total
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    total = total + value
                    loss_dict[name] = value
        if self.regularizers:
            pair = FeaturePair(self.feature_tap.features)
            for name, loss in self.regularizers.items():
                loss_dict[name] = loss(pair)
                total = total + loss_dict[name]
        loss_dict['l_total'] = total
        self.log_dict = self.reduce_loss_dict({k: v.detach() for k, v in loss_dict.items()})
        if not self.loss_is_finite(total, current_iter):
            return
        total.backward()
        self.optimizer_g.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def loss_is_finite(self, total: torch.Tensor, current_iter: int) -> bool:
        """Non-finite guard: skip the step (all ranks agree), stop after ``max_nonfinite_steps`` in a row."""
        finite = torch.isfinite(total.detach()).float().reshape(1)
        if self.opt['dist']:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if bool(finite.item()):
            self.nonfinite_in_row = 0
            return True
        self.nonfinite_in_row += 1
        self.optimizer_g.zero_grad()
        get_root_logger().warning(f'iter {current_iter}: non-finite loss {self.log_dict}; step skipped '
                                  f'({self.nonfinite_in_row} in a row, limit {self.max_nonfinite_steps})')
        if self.nonfinite_in_row >= self.max_nonfinite_steps:
            raise NonFiniteLossError(
                f'{self.nonfinite_in_row} non-finite losses in a row at iter {current_iter} '
                f'(train.max_nonfinite_steps = {self.max_nonfinite_steps}); stopped without saving. '
                'The last saved checkpoint and training state are intact.')
        return False
