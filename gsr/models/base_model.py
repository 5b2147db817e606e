"""The base of gsr's models: networks, taps, losses on one context, the non-finite guard, EMA, save, resume, stop.

A gsr model declares its top-level option keys as a dataclass (``OPTIONS``, checked before BasicSR creates any
folder), builds its rows with a batch builder (``gsr.data.batch_builder``), and lists loss terms that all receive
one ``LossContext``. Networks are added by name (``add_network``): each ``network_<name>`` is optimised with
``train.optim_<name>`` (frozen where that is absent), loaded from ``path.pretrain_network_<name>``, saved as
``net_<name>_<iter>.pth`` and resumed by BasicSR's ``check_resume`` like ``net_g``. ``net_g`` is an
``AttachedNetwork`` (the ``network_g`` backbone plus ``attach:`` modules), so attached modules are optimised,
saved, resumed and kept in ``net_g_ema`` with it. Validation runs ``super_resolve_tensor``, the inference code
of ``gsr infer``. ``train.precision`` / ``channels_last`` / ``compile`` (and the same keys under ``val:``) choose
how the networks run (``gsr.utils.execution``); losses are always computed in float32.
"""
import copy
import dataclasses
import os
import signal
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from basicsr.losses import build_loss
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from gsr.archs.attached_arch import AttachedNetwork, backbone_of, network_from_options
from gsr.archs.feature_tap import FeatureTap
from gsr.archs.iteration_scheduled import IterationScheduled
from gsr.archs.network_checkpoint import checkpoint_entries, load_network_checkpoint
from gsr.data.batch_builder import DegradedBatchBuilder
from gsr.data.degraded_batch import DegradedBatch
from gsr.losses.loss_context import MAIN_TAP, LossContext
from gsr.losses.regularizer import metric_log_name
from gsr.utils.checkpoint import atomic_torch_save, network_weights, training_states
from gsr.utils.errors import GsrError, NonFiniteLossError
from gsr.utils.execution import (EXECUTION_KEYS, ExecutionOptions, autocast, compile_in_place, device_type_of,
                                 execution_options, inference_network, to_memory_format)
from gsr.utils.inference import super_resolve_tensor
from gsr.utils.options import option, options_from_dict, unknown_keys_error
from gsr.utils.shape_probe import probe_forward
from gsr.utils.stop_request import TrainingStopped, stop_requested

# ``train:`` keys a gsr model reads (``optim_<name>`` keys are allowed as well)
TRAIN_KEYS = ('ema_decay', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt', 'perceptual_opt', 'regularizers',
              'max_nonfinite_steps', 'gradient_ratio_freq') + EXECUTION_KEYS
# what a scheduler's state holds about the run's progress; the rest of it is the schedule, taken from the options
SCHEDULER_PROGRESS = ('last_epoch', '_step_count', '_last_lr', 'base_lrs', '_get_lr_called_within_step', 'verbose')
# top-level keys BasicSR itself reads or adds (``network_*`` keys are allowed as well)
BASICSR_TOP_LEVEL = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val',
                     'logger', 'dist_params', 'find_unused_parameters', 'is_train', 'dist', 'rank', 'world_size',
                     'auto_resume', 'root_path')


@dataclasses.dataclass
class GsrModelOptions:
    """Top-level keys every gsr model reads."""
    attach: Dict[str, Dict[str, Any]] = option(
        doc='modules attached to `network_g`: `name -> {type, <the module\'s keys>, layer, capture, lr, inference}` '
        '(`type` a registered network, e.g. `ResidualConvAdapter`; the other keys: the table `attach.<name>` below). '
        'Attached modules are trained, saved, resumed, kept in the EMA copy (parameters averaged, buffers copied) '
        'and used by validation, `gsr infer` and `gsr evaluate`',
        factory=dict)


class GsrModel(SRModel):
    """Shared base (module docstring). Subclasses set ``OPTIONS`` and may override ``loss_terms``."""
    OPTIONS = GsrModelOptions

    @classmethod
    def parse_options(cls, opt: Dict[str, Any]) -> Any:
        """The model's top-level keys as ``OPTIONS``; unknown top-level keys and wrong types are errors."""
        fields = [f.name for f in dataclasses.fields(cls.OPTIONS)]
        unknown = [k for k in opt if k not in BASICSR_TOP_LEVEL and k not in fields and not k.startswith('network_')]
        if unknown:
            raise unknown_keys_error(f'{cls.__name__} (top level)', unknown,
                                     fields + list(BASICSR_TOP_LEVEL) + ['network_<name>'])
        unknown = [k for k in (opt.get('train') or {}) if k not in TRAIN_KEYS and not k.startswith('optim_')]
        if unknown:
            raise unknown_keys_error(f'{cls.__name__} train', unknown, list(TRAIN_KEYS) + ['optim_<network>'])
        return options_from_dict(cls.OPTIONS, {k: opt[k] for k in fields if k in opt}, '')

    @classmethod
    def validate(cls, opt: Dict[str, Any]) -> Any:
        """The model's options, with every check that needs no network (subclasses add cross-checks)."""
        options = cls.parse_options(opt)
        for block in ('train', 'val'):
            cls.execution(opt, block)
        return options

    @staticmethod
    def execution(opt: Dict[str, Any], block: str) -> ExecutionOptions:
        """How the networks run in training steps (``block='train'``) or in validation and tests (``'val'``)."""
        return execution_options(opt.get(block), block, device_type_of(opt))

    @classmethod
    def check_options(cls, opt: Dict[str, Any]) -> None:
        """Everything that can be checked before training starts, building ``net_g`` included (on the meta device,
        without memory, where the architecture allows; on the CPU otherwise)."""
        options = cls.validate(opt)
        try:
            try:
                with torch.device('meta'):
                    net = network_from_options(opt)
            except RuntimeError:  # e.g. SwinIR calls .item() while building
                net = network_from_options(opt)
        except (TypeError, ValueError) as e:
            raise GsrError(f'network_g ({opt["network_g"].get("type")}) cannot be built: {e}') from e
        cls.check_network(net, options)
        cls.check_pretrained(net, opt)
        inputs = cls.probe_inputs(opt)
        if inputs is not None:
            probe_forward(lambda: network_from_options(opt), inputs, 'network_g with its attached modules')

    @classmethod
    def check_network(cls, net: AttachedNetwork, options: Any) -> None:
        """Checks of the options against the built ``net_g`` (e.g. that tapped layers exist)."""

    @staticmethod
    def check_pretrained(net: nn.Module, opt: Dict[str, Any]) -> None:
        """``path.pretrain_network_g`` exists, loads safely and fits ``net`` (names and shapes; ``net`` may live on
        the meta device), before BasicSR creates the experiment folder."""
        paths = opt.get('path') or {}
        if paths.get('pretrain_network_g') is None:
            return
        path = paths['pretrain_network_g']
        if not isinstance(path, str) or not os.path.isfile(path):
            raise GsrError(f'path.pretrain_network_g: checkpoint not found: {path}')
        with warnings.catch_warnings():  # loading into a meta network copies nothing, which torch warns about
            warnings.filterwarnings('ignore', message='.*copying from a non-meta parameter')
            load_network_checkpoint(net, path, paths.get('param_key_g', 'params'), paths.get('strict_load_g', True))

    @classmethod
    def probe_inputs(cls, opt: Dict[str, Any]) -> Optional[Tuple[int, ...]]:
        """The shape of the LR batch ``probe_forward`` runs ``net_g`` on: two training crops (16 px where the
        crop size is not a number); None where ``net_g`` takes more than the LR image."""
        train = (opt.get('datasets') or {}).get('train') or {}
        gt_size, scale = train.get('gt_size'), opt.get('scale')
        size = gt_size // scale if isinstance(gt_size, int) and isinstance(scale, int) and scale > 0 else 16
        return (2, opt['network_g'].get('num_in_ch', 3), max(size, 1), max(size, 1))

    # ------------------------------------------------------------------------------------------- setup
    def __init__(self, opt: Dict[str, Any]):
        BaseModel.__init__(self, opt)
        self.options = self.validate(opt)
        self.train_execution, self.val_execution = self.execution(opt, 'train'), self.execution(opt, 'val')
        self.val_networks: Dict[int, nn.Module] = {}  # id(network) -> how validation runs it
        self.networks: Dict[str, nn.Module] = OrderedDict()
        self.taps: Dict[str, FeatureTap] = OrderedDict()
        self.batch_builder: Optional[DegradedBatchBuilder] = None
        self.batch: Optional[DegradedBatch] = None
        self.forward_twin = False  # run the noise-free twin through net_g in the same pass (``twin_features``)
        self.net_g = self.add_network('g', network_from_options(opt))
        self.setup()
        if self.is_train:
            self.init_training_settings()

    def setup(self) -> None:
        """Subclasses add their networks, taps and batch builder here."""

    def add_network(self, name: str, net: nn.Module) -> nn.Module:
        """Register ``net_<name>``: moved to the device (DDP where distributed), loaded from
        ``path.pretrain_network_<name>``; optimised when ``train.optim_<name>`` exists. With
        ``train.channels_last`` it is converted before any DDP wrapping (DDP keeps the parameters' layout)."""
        if self.is_train and self.train_execution.channels_last:
            net = net.to(memory_format=torch.channels_last)
        net = self.model_to_device(net)
        self.print_network(net)
        self.load_pretrained(name, net, self.opt['path'].get(f'param_key_{name}', 'params'))
        self.networks[name] = net
        return net

    def model_to_device(self, net: nn.Module) -> nn.Module:
        """BasicSR's ``model_to_device`` without its CUDA assumption: DDP gets ``device_ids`` only on CUDA (on the
        CPU, e.g. gloo in CI, it takes none)."""
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def load_pretrained(self, name: str, net: nn.Module, param_key: str) -> None:
        path = self.opt['path'].get(f'pretrain_network_{name}')
        if path is not None:
            self.load_network(net, path, self.opt['path'].get(f'strict_load_{name}', True), param_key)

    def add_tap(self, name: str, layer: str, capture: str = 'input') -> FeatureTap:
        """Capture a tensor of ``net_g``'s backbone on every training forward pass (``LossContext.features``)."""
        self.taps[name] = FeatureTap(self.net_g, layer, capture)
        return self.taps[name]

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        for net in self.networks.values():
            net.train()
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = network_from_options(self.opt).to(self.device)
            if self.opt['path'].get('pretrain_network_g') is not None:
                self.load_pretrained('g', self.net_g_ema, 'params_ema')
            else:
                self.model_ema(0)
            self.net_g_ema.eval()
        self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device) if train_opt.get('pixel_opt') else None
        self.cri_perceptual = (build_loss(train_opt['perceptual_opt']).to(self.device)
                               if train_opt.get('perceptual_opt') else None)
        self.regularizers = OrderedDict(
            (name, build_loss(cfg).to(self.device)) for name, cfg in (train_opt.get('regularizers') or {}).items())
        self.teacher_taps = self.add_teacher_taps()
        if self.cri_pix is None and self.cri_perceptual is None and not self.regularizers:
            raise GsrError('train: no loss configured (pixel_opt, perceptual_opt or regularizers)')
        self.max_nonfinite_steps = int(train_opt.get('max_nonfinite_steps', 10))
        self.gradient_ratio_freq = int(train_opt.get('gradient_ratio_freq', 0))
        self.nonfinite_in_row, self.last_nonfinite_iter = 0, 0
        self.agreed_stop = 0  # under DDP: the stop signal all ranks saw at the last step's all-reduce (loss_is_finite)
        # where this process's training began, and the last epoch BasicSR's loop passed in (resume, save): a stop
        # request saves its state with it (``stop_if_requested``)
        self.start_iter, self.last_epoch = 0, 0
        # fp16's narrow range needs loss scaling; bf16 has fp32's range and needs none (the scaler is then a no-op)
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.train_execution.precision == 'fp16')
        compile_in_place(self.net_g, self.train_execution, 'train', self.device.type)
        self.setup_optimizers()
        self.setup_schedulers()

    def add_teacher_taps(self) -> Dict[str, FeatureTap]:
        """Taps on ``net_g_ema`` at the attached modules whose mean-teacher tensor a regularizer reads
        (``teacher_reads``): the tensor entering (or leaving) that layer after the module, as in ``net_g``."""
        points = getattr(self.get_bare_model(self.net_g), 'points', {})
        names = sorted({name for loss in self.regularizers.values()
                        for name in loss.teacher_reads(self.opt.get('attach') or {})})
        if names and not hasattr(self, 'net_g_ema'):
            raise GsrError(f'a regularizer reads the EMA network\'s features at attach.{names[0]}: set '
                           'train.ema_decay > 0 (or twin_target: self)')
        return {name: FeatureTap(self.net_g_ema, points[name].layer, points[name].capture) for name in names}

    def setup_optimizers(self) -> None:
        """One optimizer per network that has ``train.optim_<name>``; the options are read, never modified."""
        for name, net in self.networks.items():
            cfg = copy.deepcopy(self.opt['train'].get(f'optim_{name}'))
            if cfg is None:
                if name == 'g':
                    raise GsrError('train.optim_g is missing')
                continue
            optim_type = cfg.pop('type')
            optimizer = self.get_optimizer(optim_type, self.parameter_groups(net), **cfg)
            setattr(self, f'optimizer_{name}', optimizer)
            self.optimizers.append(optimizer)

    def setup_schedulers(self) -> None:
        """BasicSR's schedulers, built from a copy of ``train.scheduler`` (BasicSR's method pops its ``type``, and
        the options are saved and checked again on resume)."""
        train_opt = self.opt['train']
        self.opt['train'] = copy.deepcopy(train_opt)
        try:
            super().setup_schedulers()
        finally:
            self.opt['train'] = train_opt

    def parameter_groups(self, net: nn.Module) -> List[Dict[str, Any]]:
        """The trainable parameters; each attached module with an ``lr`` of its own gets a group of its own."""
        bare = self.get_bare_model(net)
        own_lr = {name: point.lr for name, point in getattr(bare, 'points', {}).items() if point.lr is not None}
        separate = {id(p) for name in own_lr for p in bare.attached[name].parameters()}
        groups = [{'params': [p for p in bare.parameters() if p.requires_grad and id(p) not in separate]}]
        groups += [{'params': [p for p in bare.attached[name].parameters() if p.requires_grad], 'lr': lr}
                   for name, lr in own_lr.items()]
        return [g for g in groups if g['params']]

    # ------------------------------------------------------------------------------------------- data
    def feed_data(self, data: Dict[str, Any]) -> None:
        """Degrade on the device when the model has a builder and the batch is what it degrades; else use ``lq``."""
        if self.batch_builder is not None and self.batch_builder.degrades(data):
            self.batch = self.batch_builder(data)
            self.lq, self.gt = self.batch.lq, self.batch.gt
        elif 'lq' in data:
            super().feed_data(data)
            self.batch = DegradedBatch.of_pairs(self.lq, self.gt) if hasattr(self, 'gt') else None
        else:
            raise GsrError(f'batch has neither lq nor degradation kernels (keys: {", ".join(data)})')

    # ------------------------------------------------------------------------------------------- step
    def forward_train(self) -> LossContext:
        """Run ``net_g`` on the batch (and the twin, with ``forward_twin``); collect the taps' features."""
        for tap in self.taps.values():
            tap.clear()
        batch, n = self.batch, self.batch.lq.shape[0]
        with_twin = self.forward_twin and batch.lq_noise_free is not None
        with self.autocast():
            output = self.net_g(self.to_memory_format(
                torch.cat([batch.lq, batch.lq_noise_free]) if with_twin else batch.lq))
        features = {name: tap.features for name, tap in self.taps.items()}
        records = {}
        for name, module in self.get_bare_model(self.net_g).attached.items():
            if getattr(module, 'record', None):
                records[name], module.record = module.record, {}  # the context holds the step's tensors now
        self.output = float32(output[:n])
        teacher_twin = self.teacher_forward(batch.lq_noise_free) if with_twin else {}

        def rows(tensors: Dict[str, torch.Tensor], twin: bool) -> Dict[str, torch.Tensor]:
            return {k: float32(t[n:] if twin else t[:n]) for k, t in tensors.items()}

        return LossContext(batch, self.output, rows(features, False), rows(features, True) if with_twin else {},
                           {name: rows(r, False) for name, r in records.items()},
                           {name: rows(r, True) for name, r in records.items()} if with_twin else {}, teacher_twin)

    @torch.no_grad()
    def teacher_forward(self, lq: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``net_g_ema`` on ``lq`` (the twin rows): what its teacher taps captured, in float32."""
        if not self.teacher_taps:
            return {}
        for tap in self.teacher_taps.values():
            tap.clear()
        with self.autocast():
            self.net_g_ema(self.to_memory_format(lq))
        return {name: float32(tap.features) for name, tap in self.teacher_taps.items()}

    def autocast(self) -> torch.autocast:
        """The training forward's autocast (``train.precision``); losses run outside it, in float32."""
        return autocast(self.train_execution, self.device.type)

    def to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """A network input in the training memory format (``train.channels_last``)."""
        return to_memory_format(x, self.train_execution)

    def loss_terms(self, context: LossContext) -> 'OrderedDict[str, torch.Tensor]':
        """Named loss terms: pixel, perceptual/style (BasicSR's), then every ``train.regularizers`` entry."""
        terms = OrderedDict()
        if self.cri_pix:
            terms['l_pix'] = self.cri_pix(context.output, context.batch.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(context.output, context.batch.gt)
            terms.update((k, v) for k, v in (('l_percep', l_percep), ('l_style', l_style)) if v is not None)
        for name, loss in self.regularizers.items():
            terms[name] = loss(context)
        return terms

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """BasicSR's, after the stop check: this is the model's first call in an iteration, so a stop saves the
        state before the schedulers step for the next iteration (a check in ``optimize_parameters`` came after that
        step, and every stop and resume moved the schedule one iteration ahead)."""
        self.stop_if_requested(current_iter - 1)
        super().update_learning_rate(current_iter, warmup_iter)

    def optimize_parameters(self, current_iter: int) -> None:
        for module in self.get_bare_model(self.net_g).attached.values():
            if isinstance(module, IterationScheduled):  # e.g. Adaptive Dropout's positions switched off in turn
                module.set_iteration(current_iter)
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        context = self.forward_train()
        context.iteration = current_iter
        terms = self.loss_terms(context)
        total = sum(terms.values())
        terms['l_total'] = total
        logged = {k: v.detach() for k, v in terms.items()}
        logged.update(self.regularizer_metrics())
        if self.gradient_ratio_freq and current_iter % self.gradient_ratio_freq == 0:
            logged.update(self.gradient_ratios(terms))
        self.log_dict = self.reduce_loss_dict(logged)
        if not self.loss_is_finite(total, current_iter):
            return
        self.grad_scaler.scale(total).backward()
        for optimizer in self.optimizers:
            self.grad_scaler.step(optimizer)
        self.grad_scaler.update()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def stop_if_requested(self, last_iter: int) -> None:
        """End the run between two steps when a stop was requested (``gsr.utils.stop_request``: a cluster's
        preemption signal). BasicSR has logged, saved and validated ``last_iter``; its training state is saved
        (unless nothing trained since the start) and ``TrainingStopped`` ends the loop, so ``--auto_resume``
        loses no step. The epoch saved is the last BasicSR passed in, a lower bound of its loop's: on resume the
        loop then has an epoch to spare and the sampler may repeat an order, which random crops make harmless.
        Under DDP the ranks agree through the non-finite guard's all-reduce of the step before (``loss_is_finite``:
        one collective per step, not two), so a request reaches every rank one step later than without DDP. During
        a streak of non-finite losses the guard decides first."""
        signum = self.agreed_stop if self.opt['dist'] else stop_requested() or 0
        if not signum or self.nonfinite_in_row:
            return
        saved = last_iter > self.start_iter
        if saved:
            self.save(self.last_epoch, last_iter)
        if self.opt['dist']:
            dist.barrier()
        raise TrainingStopped(f'{signal.Signals(signum).name} received: ' +
                              (f'training state saved at iter {last_iter}' if saved else
                               f'nothing trained since iter {last_iter}'))

    def regularizer_metrics(self) -> Dict[str, torch.Tensor]:
        """What the regularizers measured in the step besides their loss (their ``metrics``, e.g. a detector's
        balanced accuracy), under ``metric_log_name``."""
        return {metric_log_name(key, name): value.detach()
                for name, loss in self.regularizers.items() for key, value in loss.metrics.items()}

    def gradient_ratios(self, terms: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``grad_<term>``: the norm of each regularizer's gradient with respect to the main tap's features divided
        by the pixel loss's (``train.gradient_ratio_freq``: every that many iterations; 0: never). Does a
        regularizer act at all? A ratio of 1e-6 says its released weight leaves it inert at this scale."""
        tap = self.taps.get(MAIN_TAP)
        feats = tap.features if tap is not None else None  # the tensor the network used (the context holds row views)
        if feats is None or 'l_pix' not in terms or not feats.requires_grad:
            return {}

        def norm(term: torch.Tensor) -> torch.Tensor:
            grad = torch.autograd.grad(term, feats, retain_graph=True, allow_unused=True)[0]
            return grad.float().norm() if grad is not None else torch.zeros((), device=feats.device)

        reference = norm(terms['l_pix'])
        if reference == 0:  # the pixel loss does not reach the tapped tensor (e.g. a float32 copy under autocast)
            return {}
        return {f'grad_{name}': (norm(terms[name]) / reference).detach() for name in self.regularizers}

    @torch.no_grad()
    def model_ema(self, decay: float = 0.999) -> None:
        """BasicSR's parameter EMA of ``net_g``, plus its buffers copied as they are (BasicSR leaves them at their
        initial values, which breaks e.g. BatchNorm statistics of attached modules in the EMA network)."""
        super().model_ema(decay)
        ema_buffers = dict(self.net_g_ema.named_buffers())
        for name, buffer in self.get_bare_model(self.net_g).named_buffers():
            ema_buffers[name].copy_(buffer)

    def loss_is_finite(self, total: torch.Tensor, current_iter: int) -> bool:
        """Non-finite guard: skip the step (all ranks agree), stop after ``max_nonfinite_steps`` in a row. Under
        DDP the same all-reduce carries each rank's stop request, for ``stop_if_requested`` at the next step."""
        nonfinite = (~torch.isfinite(total.detach())).float().reshape(1)
        if self.opt['dist']:  # [any rank non-finite, the largest signal number requested]: one host sync
            status = torch.cat([nonfinite, nonfinite.new_full((1,), float(stop_requested() or 0))])
            dist.all_reduce(status, op=dist.ReduceOp.MAX)
            any_nonfinite, signum = status.tolist()
            self.agreed_stop = int(signum)
        else:
            any_nonfinite = nonfinite.item()
        if not any_nonfinite:
            self.nonfinite_in_row = 0
            return True
        self.nonfinite_in_row += 1
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        get_root_logger().warning(f'iter {current_iter}: non-finite loss {self.log_dict}; step skipped '
                                  f'({self.nonfinite_in_row} in a row, limit {self.max_nonfinite_steps})')
        self.last_nonfinite_iter = current_iter
        if self.nonfinite_in_row >= self.max_nonfinite_steps:
            self.stop_nonfinite(f'(train.max_nonfinite_steps = {self.max_nonfinite_steps})')
        return False

    def stop_nonfinite(self, why: str) -> None:
        """End the run over the current streak of non-finite losses, setting aside the states saved during it."""
        current_iter = self.last_nonfinite_iter
        first_bad = current_iter - self.nonfinite_in_row + 1
        set_aside = self.set_aside_states_from(first_bad) if self.opt['rank'] == 0 else []
        raise NonFiniteLossError(
            f'{self.nonfinite_in_row} non-finite losses in a row at iter {current_iter} {why}; stopped without '
            'saving. ' + (f'Training states saved from iter {first_bad} on were renamed to *.state.nonfinite '
                          f'({", ".join(set_aside)}), so --auto_resume continues from the last finite one.'
                          if set_aside else 'The last saved checkpoint and training state are intact.'))

    def set_aside_states_from(self, first_iter: int) -> List[str]:
        """Rename training states saved at or after ``first_iter`` (when the losses had turned non-finite) so
        ``--auto_resume`` does not pick them; returns their names."""
        folder = self.opt['path'].get('training_states') or ''
        names = [name for it, name in sorted(training_states(folder).items()) if it >= first_iter]
        for name in names:
            os.replace(os.path.join(folder, name), os.path.join(folder, name + '.nonfinite'))
        return names

    def resume_training(self, resume_state: Dict[str, Any]) -> None:
        """Restore optimizers and schedulers; the schedule itself (periods, milestones, ...) is the option file's,
        so a run can be resumed with a raised ``total_iter`` and longer ``periods`` ("train longer")."""
        if len(resume_state['optimizers']) != len(self.optimizers):
            raise GsrError(f'the training state has {len(resume_state["optimizers"])} optimizer(s), the model '
                           f'{len(self.optimizers)}: its networks changed since the state was saved; start a new '
                           'run from the saved weights (path.pretrain_network_g)')
        fresh = [scheduler.state_dict() for scheduler in self.schedulers]
        self.start_iter, self.last_epoch = resume_state['iter'], resume_state['epoch']
        try:
            super().resume_training(resume_state)
        except ValueError as e:
            raise GsrError(f'the training state does not fit the model ({e}); start a new run from the saved '
                           'weights (path.pretrain_network_g)') from e
        for scheduler, schedule in zip(self.schedulers, fresh):
            for key, value in schedule.items():
                if key not in SCHEDULER_PROGRESS:
                    setattr(scheduler, key, value)
        if self.grad_scaler.is_enabled() and 'grad_scaler' in resume_state:
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])

    def extra_training_state(self) -> Dict[str, Any]:
        """What a training state holds beyond BasicSR's: the fp16 gradient scaler (its scale and growth tracker)."""
        return {'grad_scaler': self.grad_scaler.state_dict()} if self.grad_scaler.is_enabled() else {}

    # ------------------------------------------------------------------------------------------- test, save
    def test(self) -> None:
        """SR of ``self.lq`` with the EMA network where there is one, through ``gsr infer``'s code path."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        training = net.training
        net.eval()
        self.output = super_resolve_tensor(self.validation_network(net), self.lq, self.opt['scale'])
        net.train(training)

    def validation_network(self, net: nn.Module) -> nn.Module:
        """``net`` as validation runs it (``val.precision`` / ``channels_last`` / ``compile``), built once."""
        if id(net) not in self.val_networks:
            self.val_networks[id(net)] = inference_network(net, self.val_execution, self.device.type, 'val')
        return self.val_networks[id(net)]

    def save(self, epoch: int, current_iter: int) -> None:
        """Every network (``net_g`` with its EMA copy), then the training state, which thus implies them. A run
        that reaches its end while its losses are non-finite fails instead of saving its last weights as the
        result (with every step skipped they would be the initial ones)."""
        if current_iter == -1 and self.is_train and self.nonfinite_in_row:  # BasicSR's final save, "latest"
            self.stop_nonfinite('when the run reached train.total_iter')
        self.last_epoch = max(self.last_epoch, epoch)
        for name, net in self.networks.items():
            if name == 'g' and hasattr(self, 'net_g_ema'):
                self.save_network([net, self.net_g_ema], 'net_g', current_iter, ['params', 'params_ema'])
            else:
                self.save_network(net, f'net_{name}', current_iter)
        self.save_training_state(epoch, current_iter)

    @master_only
    def save_network(self, net: Any, net_label: str, current_iter: int, param_key: Any = 'params') -> None:
        """BasicSR's ``save_network`` written atomically (``atomic_torch_save``); a failed write raises where
        BasicSR's retries and then ignores it. An ``AttachedNetwork`` is saved as its backbone plus
        ``<param_key>_attached`` (``checkpoint_entries``)."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network: as many param_key as networks')
        entries = {}
        for one, key in zip(nets, keys):
            entries.update(checkpoint_entries(self.get_bare_model(one), key))
        label = 'latest' if current_iter == -1 else current_iter
        atomic_torch_save(entries, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """BasicSR's training state written atomically (after the networks, so a state implies them), with what
        ``extra_training_state`` adds."""
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            **self.extra_training_state(),
        }
        atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def load_network(self, net: nn.Module, load_path: str, strict: bool = True, param_key: str = 'params') -> None:
        """BasicSR's ``load_network`` with ``weights_only`` loading and one error naming the missing and
        unexpected keys of a checkpoint that does not fit (``load_network_checkpoint``)."""
        net = self.get_bare_model(net)
        if not strict:
            self._print_different_keys_loading(backbone_of(net), network_weights(load_path, param_key), strict)
        load_network_checkpoint(net, load_path, param_key, strict)


def float32(t: torch.Tensor) -> torch.Tensor:
    """A loss input in float32. Under bf16/fp16 autocast the network's output and tapped features are half
    precision; the alignment losses' covariance and RFF statistics, the TFD loss's FFT and the L1 between nearly
    equal images sum many small terms that bf16's 8-bit mantissa (and fp16's range) would corrupt."""
    return t.float() if t.is_floating_point() else t
