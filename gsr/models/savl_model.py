"""SAVL as a BasicSR model (ICLR 2026, OpenReview IOmPy7P1y4; the training recipe of B.4 with the PROPOSAL of
B.7.5, our reading: ``docs/SAVL.md``).

``network_g`` is a ``SAVLNet`` (the estimator inside it); ``network_degrader`` a ``SAVLDegrader``, used in training
only, optimised with ``train.optim_degrader``, saved and resumed the BasicSR way. ``stage: joint`` (stage A) trains
everything: the SR L1 (``pixel_opt``), the re-degrader's reconstruction of the LR image from the content (the HR
crop, MATLAB-bicubic downsampled) and a posterior sample (``SAVLReconstructionLoss``), and the weighted KL
(``SAVLKLLoss``). ``stage: sr`` (stage B) freezes the estimator, drops the re-degrader and fine-tunes the SR network;
it starts from a stage-A checkpoint. Rows come from gsr's Real-ESRGAN second-order pipeline, one copy per crop.
"""
from dataclasses import dataclass, field
from typing import Any, Dict

from basicsr.archs import build_network
from basicsr.utils.registry import MODEL_REGISTRY

from gsr.archs.attached_arch import backbone_of
from gsr.archs.savl_arch import SAVLEstimator
from gsr.data.batch_builder import DegradedBatchBuilder, batch_options
from gsr.data.classic_degrader import bicubic_downsample
from gsr.data.second_order_degrader import DegradationOptions
from gsr.losses.loss_context import LossContext
from gsr.models.base_model import GsrModel, GsrModelOptions, float32
from gsr.utils.errors import GsrError

STAGES = ('joint', 'sr')


@dataclass
class SAVLOptions(GsrModelOptions):
    """Top-level keys of ``SAVLModel`` (``docs/OPTIONS.md``)."""
    stage: str = 'joint'
    degradation: DegradationOptions = field(default_factory=DegradationOptions)


@MODEL_REGISTRY.register()
class SAVLModel(GsrModel):
    """Stage A (``joint``) and stage B (``sr``) of SAVL (module docstring)."""
    OPTIONS = SAVLOptions

    @classmethod
    def validate(cls, opt: Dict[str, Any]) -> SAVLOptions:
        options = super().validate(opt)
        if options.stage not in STAGES:
            raise GsrError(f'stage must be joint (stage A) or sr (stage B), got {options.stage!r}')
        if (opt.get('network_g') or {}).get('type') != 'SAVLNet':
            raise GsrError('network_g.type must be SAVLNet (the estimator and the modulated SR network)')
        if not opt.get('train'):
            return options
        if options.stage == 'joint' and 'network_degrader' not in opt:
            raise GsrError('network_degrader is missing: stage joint trains the re-degrader (type SAVLDegrader)')
        if options.stage == 'sr' and not (opt.get('path') or {}).get('pretrain_network_g'):
            raise GsrError('stage sr (B) fine-tunes the SR network of a stage-A run: set path.pretrain_network_g to '
                           'its checkpoint (the estimator is frozen, so it must be trained already)')
        cls.batch_options(opt, options)
        return options

    @staticmethod
    def batch_options(opt: Dict[str, Any], options: SAVLOptions):
        return batch_options(1, False, options.degradation, (opt.get('datasets') or {}).get('train') or {})

    def setup(self) -> None:
        if not self.opt.get('train'):
            return
        self.batch_builder = DegradedBatchBuilder(self.batch_options(self.opt, self.options),
                                                  self.opt['scale']).to(self.device)
        if self.options.stage == 'joint':
            self.net_degrader = self.add_network('degrader', build_network(dict(self.opt['network_degrader'])))
        else:
            backbone_of(self.net_g).estimator.requires_grad_(False)

    def init_training_settings(self) -> None:
        super().init_training_settings()
        if self.options.stage == 'sr':
            backbone_of(self.net_g).estimator.eval()  # frozen: no statistics change either

    def forward_train(self) -> LossContext:
        batch = self.batch
        with self.autocast():
            sr, mean, log_var = self.net_g(self.to_memory_format(batch.lq), with_posterior=True)
        records = {'mean': float32(mean), 'log_var': float32(log_var)}
        if self.options.stage == 'joint':
            content = bicubic_downsample(batch.gt, self.opt['scale'])
            with self.autocast():
                reconstruction = self.net_degrader(content, SAVLEstimator.sample(mean, log_var))
            records.update(reconstruction=float32(reconstruction), target=batch.lq)
        self.output = float32(sr)
        return LossContext(batch, self.output, records={'savl': records})
