"""LightBSR's teacher and student as BasicSR models (Yuan et al., ICCV 2025; ``shared/research/lightbsr_and_savl.md``
A.3 to A.5; what is the paper's and what is our reading: ``docs/LIGHTBSR.md``).

Both train on HR crops degraded on the device with ``classic_degradation`` (setting 1: isotropic blur; setting 2:
anisotropic blur + noise) or, without ``classic_degradation``, with gsr's Real-ESRGAN second-order pipeline
(``degradation:``; the default), and run in two stages, one option file each: ``stage: encoder`` trains the IDR encoder
alone (teacher: the contrastive loss; student: distillation), ``stage: joint`` adds the SR L1 loss. The teacher's
encoder sees the LR with the degradation prior (the kernel's PCA code from ``kernel_pca``, plus the noise level
three times when there is noise); the student sees the LR only and distils the frozen teacher's IDRs.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Literal, Optional

import torch
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from gsr.archs.attached_arch import backbone_of
from gsr.data.batch_builder import DegradedBatchBuilder, batch_options
from gsr.data.classic_degrader import ClassicDegradationOptions, gaussian_kernels
from gsr.data.kernel_pca import load_kernel_pca, project
from gsr.data.second_order_degrader import DegradationOptions
from gsr.losses.loss_context import LossContext
from gsr.models.base_model import GsrModel, GsrModelOptions, float32
from gsr.utils.checkpoint import require_weights_of
from gsr.utils.errors import GsrError
from gsr.utils.options import option

Stage = Literal['encoder', 'joint']
NOISE_PRIOR_CHANNELS = 3  # the code appends the raw noise level (0-255) three times (A.3.1)
# the second-order pipeline's prior after the kernel code: each stage's Gaussian sigma, Poisson scale, JPEG quality
SECOND_ORDER_PRIOR = ('noise1_sigma', 'noise1_poisson_scale', 'jpeg1_quality', 'noise2_sigma', 'noise2_poisson_scale',
                      'jpeg2_quality')


@dataclass
class LightBSROptions(GsrModelOptions):
    """Top-level keys of the LightBSR models (``docs/OPTIONS.md``)."""
    stage: Stage = option(
        'joint', '`encoder`: the auxiliary loss alone (teacher: `InfoNCELoss`; student: `IDRDistillationLoss`), pixel '
        'losses ignored, the SR network not run (set `find_unused_parameters: true` under DDP); `joint`: `pixel_opt` '
        '+ the regularizers')
    patches: int = option(
        1, 'crops per HR image that share its degradation (`shared_degradation` rows; the teacher needs at least 2, 4 '
        'in the code). With `datasets.train.crops_per_image` equal to `patches` (the paper-scale teacher files) the '
        'dataset cuts them anywhere in the whole image and each is degraded on its own with the image\'s draws, as '
        'the code does; with `crops_per_image: 1` they are cut from one `crop_pad_size` region (crops overlap far '
        'more: a content shortcut for the contrastive task)')
    classic_degradation: Optional[ClassicDegradationOptions] = option(
        None, 'the DASR / LightBSR degradations (keys below). Absent: rows come from gsr\'s Real-ESRGAN second-order '
        'pipeline (`degradation:`) and the prior is the first-order kernel\'s PCA code plus each stage\'s Gaussian '
        'sigma, Poisson scale and JPEG quality divided by the upper end of its range (21 values; our reading)')
    degradation: DegradationOptions = option(doc='the second-order pipeline, when `classic_degradation` is absent',
                                             factory=DegradationOptions)
    kernel_pca: Optional[str] = option(
        None, 'required for training: the file `gsr prepare kernel-pca --output FILE` writes (15 components of 21x21 '
        'kernels), or `embedded:kernel_pca` (the same basis, computed once into `~/.cache/gsr`); the teacher\'s '
        '`prior_channels` must be its components (+3 with noise)')
    init_from_teacher: bool = option(
        True, 'student only: start from the teacher\'s weights except the encoder\'s first conv, unless '
        '`path.pretrain_network_g` is set or the run resumes')
    global_batch: Optional[int] = option(
        None, 'images per step over every process; when set, `batch_size_per_gpu` x the number of processes must '
        'equal it, checked before anything is created (the paper-scale files: 64, the code\'s one GPU x 64; on k GPUs '
        'set `batch_size_per_gpu: 64 / k`)')


class LightBSRModel(GsrModel):
    """What the teacher and the student share: options, rows, the degradation prior, the stage's loss terms."""
    OPTIONS = LightBSROptions
    PRIOR_NETWORK = 'g'  # the network whose encoder takes the prior

    @staticmethod
    def training(opt: Dict[str, Any]) -> bool:
        """Whether the options train (a ``train:`` block); ``basicsr test`` needs ``network_g`` alone."""
        return bool(opt.get('train'))

    @classmethod
    def probe_inputs(cls, opt: Dict[str, Any]) -> None:
        """Not probed: the teacher's ``net_g`` takes the degradation prior besides the LR image, and both networks
        are checked against the official code's (docs/LIGHTBSR.md)."""
        return None

    @classmethod
    def validate(cls, opt: Dict[str, Any]) -> LightBSROptions:
        options = super().validate(opt)
        if not cls.training(opt):
            return options
        if options.patches < 1:
            raise GsrError(f'patches must be at least 1, got {options.patches}')
        cls.check_global_batch(opt, options)
        crops = ((opt.get('datasets') or {}).get('train') or {}).get('crops_per_image', 1)
        if crops not in (1, options.patches):
            raise GsrError(f'datasets.train.crops_per_image is {crops}: it must be patches ({options.patches}, the '
                           'positives cut anywhere in each image) or 1 (all cut from one crop_pad_size region)')
        if options.kernel_pca is None:
            raise GsrError('kernel_pca is missing: the degradation prior projects kernels on the basis that '
                           '`gsr prepare kernel-pca --output FILE` writes')
        basis = load_kernel_pca(options.kernel_pca, 'kernel_pca')['basis']
        size = options.classic_degradation.kernel_size if options.classic_degradation else 21  # Real-ESRGAN's
        if basis.shape[0] != size * size:
            side = int(round(basis.shape[0]**0.5))
            raise GsrError(f'kernel_pca: {options.kernel_pca} is a basis of {side}x{side} kernels, but the '
                           f'degradation\'s kernels are {size}x{size}: write one with `gsr prepare kernel-pca '
                           f'--kernel-size {size}`')
        expected = basis.shape[1] + cls.prior_extra(options)
        given = (opt.get(f'network_{cls.PRIOR_NETWORK}') or {}).get('prior_channels', 0)
        if given != expected:
            raise GsrError(f'network_{cls.PRIOR_NETWORK}.prior_channels is {given}, but the prior has {expected} '
                           f'values ({cls.prior_description(options)})')
        cls.batch_options(opt, options)
        return options

    @staticmethod
    def check_global_batch(opt: Dict[str, Any], options: LightBSROptions) -> None:
        """``global_batch``: BasicSR's batch is per process, so on k processes ``batch_size_per_gpu`` B trains k·B
        images per step (and the teacher enqueues k·B keys); the paper's runs are one GPU with 64."""
        per_process = ((opt.get('datasets') or {}).get('train') or {}).get('batch_size_per_gpu')
        world = int(opt.get('world_size') or 1)
        if options.global_batch is None or not isinstance(per_process, int) or per_process * world == \
                options.global_batch:
            return
        fix = (f'set datasets.train.batch_size_per_gpu: {options.global_batch // world}' if options.global_batch %
               world == 0 else f'use a number of processes that divides {options.global_batch}')
        raise GsrError(f'datasets.train.batch_size_per_gpu {per_process} on {world} process(es) trains '
                       f'{per_process * world} images per step, but global_batch is {options.global_batch} '
                       f'(the paper\'s runs: one GPU, 64): {fix}')

    @staticmethod
    def prior_extra(options: LightBSROptions) -> int:
        """Prior values after the kernel code: the noise level x3 (classic, with noise), or the second-order
        pipeline's six noise / JPEG values."""
        if options.classic_degradation is None:
            return len(SECOND_ORDER_PRIOR)
        return NOISE_PRIOR_CHANNELS if options.classic_degradation.noise > 0 else 0

    @staticmethod
    def prior_description(options: LightBSROptions) -> str:
        if options.classic_degradation is None:
            return 'the kernel\'s PCA code and ' + ', '.join(SECOND_ORDER_PRIOR)
        return 'the kernel\'s PCA code' + (' and the noise level x3' if options.classic_degradation.noise > 0 else '')

    @staticmethod
    def batch_options(opt: Dict[str, Any], options: LightBSROptions):
        train = (opt.get('datasets') or {}).get('train') or {}
        return batch_options(options.patches, False, options.degradation, train, 'shared_degradation',
                             options.classic_degradation)

    def setup(self) -> None:
        if not self.training(self.opt):
            return
        self.batch_builder = DegradedBatchBuilder(self.batch_options(self.opt, self.options),
                                                  self.opt['scale']).to(self.device)
        self.kernel_basis = load_kernel_pca(self.options.kernel_pca, 'kernel_pca')['basis'].to(self.device)

    def degradation_prior(self, labels: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, P): the PCA code of each row's blur kernel, then (classic, with noise) its noise level (0-255)
        three times, appended raw as in the code (A.3.1); or (second-order pipeline, our reading, A.9) the PCA code of
        the first-order kernel and each stage's Gaussian sigma, Poisson scale and JPEG quality, each divided by
        the upper end of its range in ``degradation:`` so that it lies in [0, 1]."""
        if self.options.classic_degradation is None:
            o = self.options.degradation
            code = project(labels['kernel1'].view(-1, 21, 21), self.kernel_basis)
            tops = (o.noise_range[1], o.poisson_scale_range[1], 100., o.noise_range2[1], o.poisson_scale_range2[1],
                    100.)
            return torch.cat([code] + [labels[k][:, None] / top for k, top in zip(SECOND_ORDER_PRIOR, tops)], 1)
        return classic_prior(labels, self.kernel_basis, self.options.classic_degradation)

    def loss_terms(self, context: LossContext) -> 'OrderedDict[str, torch.Tensor]':
        """``joint``: the configured pixel losses and regularizers; ``encoder``: the regularizers alone."""
        if self.options.stage == 'joint':
            return super().loss_terms(context)
        return OrderedDict((name, loss(context)) for name, loss in self.regularizers.items())

    def run(self, net: torch.nn.Module, lq: torch.Tensor, prior: Optional[torch.Tensor], outputs) -> Dict:
        """``net``'s training outputs under the training precision and memory format, as float32."""
        with self.autocast():
            result = net(self.to_memory_format(lq), prior, outputs=outputs, patches=self.options.patches)
        return {name: float32(t) for name, t in result.items()}


@MODEL_REGISTRY.register()
class LightBSRTeacherModel(LightBSRModel):
    """The teacher: ``network_g`` is a ``LightBSR`` with ``prior_channels`` and ``contrastive: true``; its rows are
    ``patches`` crops of each image sharing one degradation; ``InfoNCELoss`` reads ``records['contrastive']``."""

    @classmethod
    def validate(cls, opt: Dict[str, Any]) -> LightBSROptions:
        options = super().validate(opt)
        if options.patches < 2:
            raise GsrError(f'patches is {options.patches}: the contrastive loss needs at least 2 crops per image '
                           '(the positives; 4 in the code)')
        if not (opt.get('network_g') or {}).get('contrastive', False):
            raise GsrError('network_g.contrastive must be true for the teacher (MoCo head, key encoder, queue)')
        if any(k.startswith('val') for k in (opt.get('datasets') or {})):
            raise GsrError('the teacher needs the true degradation of every input, which validation sets do not '
                           'give: remove the val datasets (validate the student)')
        return options

    def forward_train(self) -> LossContext:
        batch = self.batch
        outputs = ('logits', ) if self.options.stage == 'encoder' else ('logits', 'sr')
        result = self.run(self.net_g, batch.lq, self.degradation_prior(batch.labels), outputs)
        first = batch.first_rows(batch.lq.shape[0] // self.options.patches)
        self.output = result.get('sr')
        records = {'contrastive': {'logits': result['logits']}}
        if 'ca' in result:
            records['idr'] = {'ca': result['ca'], 'xk': result['xk']}
        return LossContext(first, self.output, records=records)


@MODEL_REGISTRY.register()
class LightBSRStudentModel(LightBSRModel):
    """The student: ``network_g`` a ``LightBSR`` without prior; ``network_teacher`` the teacher's network, loaded
    (frozen, in eval mode) from ``path.pretrain_network_teacher``; with ``init_from_teacher`` the student starts
    from the teacher's weights except the encoder's first conv (A.4). ``IDRDistillationLoss`` reads ``idr`` and
    ``teacher_idr``."""
    PRIOR_NETWORK = 'teacher'

    @classmethod
    def validate(cls, opt: Dict[str, Any]) -> LightBSROptions:
        if not cls.training(opt):
            return super().validate(opt)
        if 'network_teacher' not in opt:
            raise GsrError('network_teacher is missing: the student distils a trained LightBSR teacher')
        options = super().validate(opt)
        path = (opt.get('path') or {}).get('pretrain_network_teacher')
        if not path:
            raise GsrError('path.pretrain_network_teacher is missing: give the teacher checkpoint to distil')
        config = dict(opt['network_teacher'])
        with torch.device('meta'):  # not build_network: its log line would set up BasicSR's logger before its file
            teacher = ARCH_REGISTRY.get(config.pop('type'))(**config)
        require_weights_of(teacher, path, opt['path'].get('param_key_teacher', 'params'),
                           'path.pretrain_network_teacher', 'a teacher of network_teacher\'s configuration')
        if (opt.get('network_g') or {}).get('prior_channels', 0):
            raise GsrError('network_g.prior_channels must be 0: the student sees the LR image only')
        return options

    def setup(self) -> None:
        super().setup()
        if not self.training(self.opt):
            return
        self.net_teacher = self.add_network('teacher', build_network(dict(self.opt['network_teacher'])))
        self.net_teacher.requires_grad_(False)
        fresh = self.opt['path'].get('pretrain_network_g') is None and not self.opt['path'].get('resume_state')
        if self.is_train and self.options.init_from_teacher and fresh:
            copied = initialise_from_teacher(backbone_of(self.get_bare_model(self.net_g)),
                                             self.get_bare_model(self.net_teacher))
            get_root_logger().info(f'student initialised from the teacher: {copied} tensors (all but the '
                                   'encoder\'s first conv and the teacher-only contrastive parts)')

    def init_training_settings(self) -> None:
        super().init_training_settings()
        self.net_teacher.eval()

    def forward_train(self) -> LossContext:
        batch = self.batch
        with torch.no_grad():
            teacher = self.run(self.net_teacher, batch.lq, self.degradation_prior(batch.labels), ('idr', ))
        result = self.run(self.net_g, batch.lq, None, ('idr', ) if self.options.stage == 'encoder' else ('sr', ))
        self.output = result.get('sr')
        return LossContext(batch, self.output, records={'idr': {'ca': result['ca'], 'xk': result['xk']},
                                                        'teacher_idr': teacher})


def initialise_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module) -> int:
    """Copy every teacher tensor whose name and shape the student shares, except the encoder's first conv (its
    input has the prior's channels in the teacher); returns how many were copied."""
    own = student.state_dict()
    first_conv = 'encoder.body.0.'
    copied = {k: v for k, v in teacher.state_dict().items()
              if k in own and own[k].shape == v.shape and not k.startswith(first_conv)}
    own.update(copied)
    student.load_state_dict(own)
    return len(copied)


def classic_prior(draws: Dict[str, torch.Tensor], basis: torch.Tensor,
                  options: ClassicDegradationOptions) -> torch.Tensor:
    """The classic settings' prior of ``ClassicDegrader`` draws: the kernel's PCA code, then (with noise) the noise
    level three times (``LightBSRModel.degradation_prior``)."""
    kernels = gaussian_kernels(draws['sigma_x'], draws['sigma_y'], draws['theta'], options.kernel_size)
    code = project(kernels, basis.to(kernels.device))
    if options.noise > 0:
        code = torch.cat([code, draws['noise_sigma'][:, None].expand(-1, NOISE_PRIOR_CHANNELS)], 1)
    return code
