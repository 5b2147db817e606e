"""SAVL as a BasicSR model (ICLR 2026, OpenReview IOmPy7P1y4; the training recipe of B.4 with the PROPOSAL of
B.7.5, our reading: ``docs/SAVL.md``).

``network_g`` is a ``SAVLNet`` (the estimator inside it); ``network_degrader`` a ``SAVLDegrader``, used in training
only, optimised with ``train.optim_degrader``, saved and resumed the BasicSR way. ``stage: joint`` (stage A) trains
everything: the SR L1 (``pixel_opt``), the re-degrader's reconstruction of the LR image from the content (the HR
crop, MATLAB-bicubic downsampled) and a posterior sample (``SAVLReconstructionLoss``), and the weighted KL
(``SAVLKLLoss``). ``stage: sr`` (stage B) freezes the estimator, drops the re-degrader and fine-tunes the SR network;
it starts from a stage-A checkpoint (checked against ``network_g`` before anything is created). Rows come from gsr's
Real-ESRGAN second-order pipeline, one copy per crop.

The ablations of SAVL Tab. 1 (our reading): ``posterior: deterministic`` feeds the re-degrader the mean itself
instead of a sample ("deterministic code, no SAVL"; without ``SAVLKLLoss`` nothing suppresses the mutual
information); with ``network_club`` (a ``CLUBConditional``, ``train.optim_club``) and ``SAVLCLUBLoss`` the
information the code shares with the content is suppressed by CLUB instead ("w/o SAVL + CLUB").
"""
import inspect
from dataclasses import dataclass
from typing import Any, Dict, Literal

import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from gsr.archs.attached_arch import backbone_of, network_from_options
from gsr.archs.savl_arch import SAVLEstimator
from gsr.data.batch_builder import DegradedBatchBuilder, batch_options
from gsr.data.classic_degrader import bicubic_downsample
from gsr.data.second_order_degrader import DegradationOptions
from gsr.losses.loss_context import LossContext
from gsr.models.base_model import GsrModel, GsrModelOptions, float32
from gsr.utils.checkpoint import require_weights_of
from gsr.utils.errors import GsrError
from gsr.utils.options import option

Stage = Literal['joint', 'sr']  # stage A, stage B
Posterior = Literal['variational', 'deterministic']


@dataclass
class SAVLOptions(GsrModelOptions):
    """Top-level keys of ``SAVLModel`` (``docs/OPTIONS.md``)."""
    stage: Stage = option(
        'joint', '`joint` (stage A): `network_g` (`SAVLNet`) and `network_degrader` (`SAVLDegrader`, '
        '`train.optim_degrader`) trained with `pixel_opt` + the regularizers (`SAVLReconstructionLoss`, `SAVLKLLoss`); '
        '`sr` (stage B): the estimator frozen, no re-degrader, `path.pretrain_network_g` (a stage-A checkpoint of the '
        'same `network_g`, checked before anything is created) required')
    posterior: Posterior = option(
        'variational', '`variational`: the re-degrader gets a sample of the posterior; `deterministic`: it gets the '
        'mean itself (the ablation "deterministic code"; `SAVLKLLoss` is then refused)')
    degradation: DegradationOptions = option(doc='gsr\'s second-order pipeline, one copy per crop',
                                             factory=DegradationOptions)


@MODEL_REGISTRY.register()
class SAVLModel(GsrModel):
    """Stage A (``joint``) and stage B (``sr``) of SAVL (module docstring)."""
    OPTIONS = SAVLOptions

    @classmethod
    def validate(cls, opt: Dict[str, Any]) -> SAVLOptions:
        options = super().validate(opt)
        if (opt.get('network_g') or {}).get('type') != 'SAVLNet':
            raise GsrError('network_g.type must be SAVLNet (the estimator and the modulated SR network)')
        if not opt.get('train'):
            return options
        if options.stage == 'joint':
            cls.check_stage_a(opt, options)
        else:
            cls.check_stage_b(opt)
        cls.batch_options(opt, options)
        return options

    @staticmethod
    def check_stage_a(opt: Dict[str, Any], options: SAVLOptions) -> None:
        if 'network_degrader' not in opt:
            raise GsrError('network_degrader is missing: stage joint trains the re-degrader (type SAVLDegrader)')
        losses = {name: (cfg or {}).get('type') for name, cfg in (opt['train'].get('regularizers') or {}).items()}
        for name, kind in losses.items():
            if kind == 'SAVLCLUBLoss' and 'network_club' not in opt:
                raise GsrError(f'train.regularizers.{name}: SAVLCLUBLoss needs network_club (a CLUBConditional) '
                               'and train.optim_club')
            if kind == 'SAVLKLLoss' and options.posterior == 'deterministic':
                raise GsrError(f'train.regularizers.{name}: SAVLKLLoss bounds a variational posterior; with '
                               'posterior: deterministic there is none (use SAVLCLUBLoss or no MI term)')
        if 'network_club' in opt and not opt['train'].get('optim_club'):
            raise GsrError('train.optim_club is missing: network_club is trained with its own optimizer')
        latent = latent_dim(opt['network_g'])
        for key in ('network_degrader', 'network_club'):
            if key in opt and latent_dim(opt[key]) != latent:
                raise GsrError(f'{key}.latent_dim is {latent_dim(opt[key])} but network_g\'s is {latent}: the '
                               'degradation latent passes between them, so the sizes must match')

    @staticmethod
    def check_stage_b(opt: Dict[str, Any]) -> None:
        """Stage B starts from a stage-A checkpoint of the same ``network_g``: one line if it is absent or another
        configuration's."""
        path = (opt.get('path') or {}).get('pretrain_network_g')
        if not path:
            raise GsrError('stage sr (B) fine-tunes the SR network of a stage-A run: set path.pretrain_network_g to '
                           'its checkpoint (the estimator is frozen, so it must be trained already)')
        with torch.device('meta'):
            expected = backbone_of(network_from_options(opt))  # what a checkpoint stores under params
        require_weights_of(expected, path, opt['path'].get('param_key_g', 'params'), 'path.pretrain_network_g',
                           'a stage-A checkpoint of network_g\'s configuration')

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
            if 'network_club' in self.opt:
                self.net_club = self.add_network('club', build_network(dict(self.opt['network_club'])))
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
            code = SAVLEstimator.sample(mean, log_var) if self.options.posterior == 'variational' else mean
            with self.autocast():
                reconstruction = self.net_degrader(content, code)
            records.update(reconstruction=float32(reconstruction), target=batch.lq, representation=float32(code))
            if hasattr(self, 'net_club'):
                with self.autocast():
                    club_mean, club_log_var = self.net_club(content)
                records.update(club_mean=float32(club_mean), club_log_var=float32(club_log_var))
        self.output = float32(sr)
        return LossContext(batch, self.output, records={'savl': records})


def latent_dim(cfg: Dict[str, Any]) -> Any:
    """A SAVL network block's ``latent_dim``: the value given, else its class's default."""
    if 'latent_dim' in cfg:
        return cfg['latent_dim']
    return inspect.signature(ARCH_REGISTRY.get(cfg['type'])).parameters['latent_dim'].default
