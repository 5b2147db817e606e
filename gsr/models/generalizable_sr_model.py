"""SR model trained on on-the-fly Real-ESRGAN degradations, optionally paired, with configured regularizers."""
from dataclasses import dataclass
from typing import Any, Dict, Literal, Optional

from basicsr.utils.registry import LOSS_REGISTRY, MODEL_REGISTRY

from gsr.archs.adaptive_dropout_arch import AdaptiveDropoutOptions
from gsr.archs.attached_arch import AttachedNetwork
from gsr.archs.feature_tap import FeatureTap
from gsr.data.batch_builder import DegradedBatchBuilder, batch_options
from gsr.data.second_order_degrader import DegradationOptions
from gsr.losses.loss_context import MAIN_TAP, LossContext
from gsr.losses.regularizer import Regularizer
from gsr.models.base_model import GsrModel, GsrModelOptions
from gsr.utils.errors import GsrError
from gsr.utils.options import option


@dataclass
class FeatureTapOptions:
    """``feature_tap:`` — which tensor the regularizers (and Dropout) act on."""
    layer: str = option('conv_last', 'dotted name of the layer whose input (or output) is tapped; BasicSR\'s '
                        'MSRResNet, RRDBNet, SwinIR and gsr\'s MSRN all name their last conv `conv_last`')
    capture: Literal['input', 'output'] = option(
        'input', '`input`: the tensor entering the layer (the paper\'s "features before the last conv"); `output`: '
        'what the layer returns')


@dataclass
class DropoutOptions:
    """``dropout:`` — channel Dropout at the tap (Kong et al., CVPR 2022)."""
    p: float = option(0.5, 'the probability of zeroing a channel (`nn.Dropout2d(p)`), attached at the tap\'s layer, '
                      'training only; the paper: 0.7 for SRResNet, 0.5 otherwise')


@dataclass
class GeneralizableSROptions(GsrModelOptions):
    """Top-level keys of ``GeneralizableSRModel`` (``docs/OPTIONS.md``)."""
    paired: bool = option(
        True, 'degrade every GT crop twice, independently, and train on `[copy1; copy2]` (Wang et al., CVPR 2024). '
        '`false`: one copy (Real-ESRNet baseline). `datasets.train.kernel_sets` must not exceed the copies (2 with '
        '`paired: true`, 1 with `false`)')
    noise_free_twin: bool = option(
        False, 'also build, for every LQ, the same degradation with the noise steps skipped '
        '(`model.batch.lq_noise_free`), cropped at the same place, and the per-pixel label `noise_map`')
    degradation: DegradationOptions = option(doc='the Real-ESRGAN degradation of the training crops',
                                             factory=DegradationOptions)
    feature_tap: FeatureTapOptions = option(doc='the tensor the regularizers (and Dropout) act on',
                                            factory=FeatureTapOptions)
    dropout: Optional[DropoutOptions] = option(None, 'channel Dropout at the tap (Kong et al., CVPR 2022); absent: '
                                               'none')
    adaptive_dropout: Optional[AdaptiveDropoutOptions] = option(
        None, 'Adaptive Dropout (Xu et al., CVPR 2025) at the released code\'s 17 positions of MSRResNet, switched '
        'off in turn, training only (`docs/ADAPTIVE_DROPOUT.md`); absent: none')
    batch_statistics: Literal['local', 'global'] = option(
        'local', '`global`: under DDP the alignment losses\' batch statistics (the pooled features they centre and sum '
        'over) span every rank\'s rows, differentiably, so N GPUs with `batch_size_per_gpu: B/N` give the single-GPU '
        'step on B crops (`docs/DISTRIBUTED.md`); `local`: each rank\'s own rows (BasicSR\'s behaviour). No effect in '
        'one process')


@MODEL_REGISTRY.register()
class GeneralizableSRModel(GsrModel):
    """BasicSR ``SRModel`` whose training batches are degraded on the model's device.

    With ``paired: true`` (default) every GT crop is degraded twice, independently, and the network sees
    ``[copy1; copy2]`` against the GT repeated (Wang et al., CVPR 2024, Sec. 3.1); each loss under
    ``train.regularizers`` receives the step's ``LossContext`` (the two copies' tapped features as
    ``context.pair()``). ``paired: false`` is the Real-ESRNet baseline. ``dropout: {p}`` attaches channel
    Dropout at the tap; ``adaptive_dropout:`` Adaptive Dropout inside the residual blocks.
    """
    OPTIONS = GeneralizableSROptions

    @classmethod
    def validate(cls, opt: Dict[str, Any]) -> GeneralizableSROptions:
        options = super().validate(opt)
        if options.dropout is not None and 'dropout' in options.attach:
            raise GsrError('attach.dropout: the name is taken by the top-level dropout: block; rename the entry')
        taken = [name for name in options.attach if name.startswith('adaptive_dropout_')]
        if options.adaptive_dropout is not None and taken:
            raise GsrError(f'attach.{taken[0]}: the name is taken by the top-level adaptive_dropout: block; rename '
                           'the entry')
        cls.batch_options(opt, options)
        for name, cfg in ((opt.get('train') or {}).get('regularizers') or {}).items():
            cls.check_regularizer(f'train.regularizers.{name}', cfg, opt, options)
        return options

    @staticmethod
    def check_regularizer(where: str, cfg: Dict[str, Any], opt: Dict[str, Any],
                          options: GeneralizableSROptions) -> None:
        """What a regularizer declares it needs (``Regularizer``'s class attributes) against the options."""
        loss, kind = LOSS_REGISTRY.get(cfg['type']), cfg['type']
        if not issubclass(loss, Regularizer):
            raise GsrError(f'{where}: {kind} is not a regularizer (it does not take the step\'s LossContext); put '
                           'pixel losses under pixel_opt')
        if loss.needs_pairs and not options.paired:
            raise GsrError(f'{where}: {kind} compares two degraded copies of each crop: it needs paired: true')
        batch = ((opt.get('datasets') or {}).get('train') or {}).get('batch_size_per_gpu')
        need = loss.minimum_pairs(cfg)
        if isinstance(batch, int) and batch < need:
            raise GsrError(f'{where}: {kind} centres each copy over the batch, so with datasets.train.'
                           f'batch_size_per_gpu {batch} it is 0 on every step: use at least {need}')
        if loss.needs_twin:
            if not options.noise_free_twin:
                raise GsrError(f'{where}: {kind} compares rows with their noise-free twins: set noise_free_twin: true')
            attachment = cfg.get('attachment', 'tfd')
            if attachment not in options.attach:
                raise GsrError(f'{where}: {kind} reads the module attach.{attachment}, which is not attached '
                               f'(attach: {", ".join(options.attach) or "none"})')
        built = loss(**{k: v for k, v in cfg.items() if k != 'type'})  # checks its values before any folder exists
        reads_teacher = built.teacher_reads(options.attach)
        if reads_teacher and not (opt.get('train') or {}).get('ema_decay'):
            raise GsrError(f'{where}: {kind} takes its target from the EMA network (a mean teacher): set '
                           'train.ema_decay > 0, or twin_target: self')
        if loss.needs_noisy_rows and options.degradation.noise_prob == 0:
            raise GsrError(f'{where}: with degradation.noise_prob 0 no row is noisy, so the detector has no positives; '
                           'use noise_prob > 0 (0.5 in the TFD option files)')

    @classmethod
    def check_network(cls, net: AttachedNetwork, options: GeneralizableSROptions) -> None:
        FeatureTap(net, options.feature_tap.layer, options.feature_tap.capture)

    @staticmethod
    def batch_options(opt: Dict[str, Any], options: GeneralizableSROptions):
        train = (opt.get('datasets') or {}).get('train') or {}
        return batch_options(2 if options.paired else 1, options.noise_free_twin, options.degradation, train)

    def setup(self) -> None:
        o = self.options
        self.batch_builder = DegradedBatchBuilder(self.batch_options(self.opt, o), self.opt['scale']).to(self.device)
        self.add_tap(MAIN_TAP, o.feature_tap.layer, o.feature_tap.capture)
        regularizers = (self.opt.get('train') or {}).get('regularizers') or {}
        self.forward_twin = any(LOSS_REGISTRY.get(cfg['type']).needs_twin
                                for cfg in regularizers.values())

    def forward_train(self) -> LossContext:
        """The base step; with ``batch_statistics: global`` the pair statistics span every rank's rows."""
        context = super().forward_train()
        context.across_ranks = self.options.batch_statistics == 'global'
        return context
