"""Checks an option file before BasicSR runs it, so bad input fails at once with one clear line."""
import inspect
import os
import reprlib
from typing import Any, Dict, Iterable, Optional

import yaml

from gsr.losses.regularizer import Regularizer
from gsr.utils.default_data import EMBEDDED
from gsr.utils.errors import GsrError
from gsr.utils.options import check_arguments, dataset_options

REQUIRED_TOP_LEVEL = ('name', 'model_type', 'num_gpu', 'network_g', 'datasets', 'path')
# (dotted key, type) of numbers BasicSR uses in arithmetic; a string there fails deep inside torch otherwise
NUMERIC_KEYS = (
    ('scale', int),
    ('train.total_iter', int),
    ('train.ema_decay', float),
    ('train.optim_g.lr', float),
    ('train.warmup_iter', int),
    ('val.val_freq', int),
    ('logger.print_freq', int),
    ('logger.save_checkpoint_freq', int),
    ('train.max_nonfinite_steps', int),
    ('train.gradient_ratio_freq', int),
)  # yapf: disable
POSITIVE_KEYS = ('scale', 'train.total_iter', 'train.max_nonfinite_steps')
POSITIVE_DATASET_KEYS = ('gt_size', 'batch_size_per_gpu', 'crop_pad_size', 'dataset_enlarge_ratio')
IO_BACKENDS = ('disk', 'lmdb', 'memcached')
OPTIMIZERS = ('Adam', 'AdamW', 'Adamax', 'SGD', 'ASGD', 'RMSprop', 'Rprop')  # BaseModel.get_optimizer
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')  # BaseModel.setup_schedulers
NUMERIC_DATASET_KEYS = (('gt_size', int), ('batch_size_per_gpu', int), ('num_worker_per_gpu', int),
                        ('dataset_enlarge_ratio', int), ('crop_pad_size', int))


def load_option_file(path: str) -> Dict[str, Any]:
    """Parse an option YAML with the safe loader; errors name the file."""
    if not os.path.isfile(path):
        raise GsrError(f'option file not found: {path}')
    try:
        with open(path) as f:
            opt = yaml.load(f, Loader=yaml.SafeLoader)
    except yaml.constructor.ConstructorError as e:
        raise GsrError(f'{path}: rejected YAML tag ({e.problem}); option files may hold only plain data') from e
    except yaml.YAMLError as e:
        raise GsrError(f'{path}: invalid YAML: {e}') from e
    if not isinstance(opt, dict):
        raise GsrError(f'{path}: expected a mapping of options at the top level')
    return opt


def _get(opt: Dict[str, Any], dotted: str) -> Optional[Any]:
    node: Any = opt
    for part in dotted.split('.'):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _gsr_names(registry) -> str:
    return ', '.join(sorted(name for name, obj in registry if obj.__module__.startswith('gsr.')))


def _check_type(where: str, name: Any, registry, path: str) -> Any:
    if name is None:
        raise GsrError(f'{path}: {where} is missing')
    if name not in registry:
        raise GsrError(f'{path}: unknown {where} {name!r}; gsr provides: {_gsr_names(registry)} '
                       f'(BasicSR\'s own {registry._name} names work too)')
    return registry.get(name)


def _check_number(where: str, value: Any, kind: type, path: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        hint = ' (in YAML write 2.0e-4 or !!float 2e-4, not 2e-4)' if isinstance(value, str) else ''
        raise GsrError(f'{path}: {where} must be {"an integer" if kind is int else "a number"}, '
                       f'got {value!r}{hint}')


def _check_loss(where: str, cfg: Dict[str, Any], path: str) -> None:
    from basicsr.utils.registry import LOSS_REGISTRY
    cls = _check_type(f'{where}.type', cfg.get('type'), LOSS_REGISTRY, path)
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p != 'self']
    unknown = sorted(set(cfg) - set(accepted) - {'type'})
    if unknown:
        raise GsrError(f'{path}: {where}: unknown key(s) {", ".join(unknown)} for {cls.__name__}; '
                       f'accepted: {", ".join(accepted)}')
    _check_number(f'{where}.loss_weight', cfg.get('loss_weight'), float, path)
    try:  # gsr's losses annotate their keys (a Literal lists the choices); BasicSR's have no annotations
        check_arguments(cls.__init__, {k: v for k, v in cfg.items() if k != 'type'}, where)
    except GsrError as e:
        raise GsrError(f'{path}: {e}') from e


def _check_datasets(opt: Dict[str, Any], path: str, skip: Iterable[str]) -> None:
    from basicsr.utils.registry import DATASET_REGISTRY
    for phase, ds in opt['datasets'].items():
        where = f'datasets.{phase}'
        if not isinstance(ds, dict):
            raise GsrError(f'{path}: {where} must be a mapping')
        dataset = _check_type(f'{where}.type', ds.get('type'), DATASET_REGISTRY, path)
        if hasattr(dataset, 'OPTIONS'):  # gsr's datasets: their own keys, typed, before BasicSR makes any folder
            try:
                given = {k: v for k, v in ds.items() if f'{where}.{k}' not in skip}
                dataset_options(dataset.OPTIONS, dict(given, phase=phase))
            except GsrError as e:
                raise GsrError(f'{path}: {e}') from e
        for key, kind in NUMERIC_DATASET_KEYS:
            _check_number(f'{where}.{key}', ds.get(key), kind, path)
        for key in POSITIVE_DATASET_KEYS:
            if isinstance(ds.get(key), (int, float)) and ds[key] <= 0:
                raise GsrError(f'{path}: {where}.{key} must be positive, got {ds[key]}')
        _check_crop(where, ds, opt.get('scale'), path)
        backend = (ds.get('io_backend') or {}).get('type', 'disk')
        if backend not in IO_BACKENDS:
            raise GsrError(f'{path}: {where}.io_backend.type {backend!r} is not one of {", ".join(IO_BACKENDS)}')
        if backend == 'disk' and str(ds.get('dataroot_gt', '')).rstrip('/').endswith('.lmdb'):
            raise GsrError(f'{path}: {where}.dataroot_gt {ds["dataroot_gt"]} is an LMDB but io_backend is disk: '
                           'set io_backend: {type: lmdb}')


def _check_data_roots(opt: Dict[str, Any], path: str, skip: Iterable[str]) -> None:
    for phase, ds in opt['datasets'].items():
        where = f'datasets.{phase}'
        for key in ('dataroot_gt', 'dataroot_lq'):
            root = ds.get(key)
            if isinstance(root, str) and root.startswith(EMBEDDED):
                continue
            if root is not None and f'{where}.{key}' not in skip and not os.path.exists(os.path.expanduser(root)):
                where_abs = '' if os.path.isabs(root) else f' (from {os.getcwd()}: {os.path.abspath(root)})'
                raise GsrError(f'{path}: {where}.{key} does not exist: {root}{where_abs} — see docs/DATASETS.md '
                               'for how to download and prepare it (e.g. gsr prepare subimages)')


def _check_crop(where: str, ds: Dict[str, Any], scale: Any, path: str) -> None:
    """The final GT crop must fit in the crop the dataset makes and be a multiple of the scale."""
    gt_size, crop = ds.get('gt_size'), ds.get('crop_pad_size')
    if not isinstance(gt_size, int):
        return
    if isinstance(crop, int) and gt_size > crop:
        raise GsrError(f'{path}: {where}.gt_size {gt_size} is larger than crop_pad_size {crop}, the crop it is '
                       'taken from')
    if isinstance(scale, int) and scale > 0 and gt_size % scale:
        raise GsrError(f'{path}: {where}.gt_size {gt_size} is not a multiple of scale {scale}')


def _check_runtime(opt: Dict[str, Any], path: str) -> None:
    """Positive sizes, metrics BasicSR knows, and GPUs that exist."""
    import torch
    from basicsr.utils.registry import METRIC_REGISTRY
    for key in POSITIVE_KEYS:
        value = _get(opt, key)
        if isinstance(value, (int, float)) and value <= 0:
            raise GsrError(f'{path}: {key} must be positive, got {value}')
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        _check_type(f'val.metrics.{name}.type', (metric or {}).get('type'), METRIC_REGISTRY, path)
    num_gpu = opt.get('num_gpu')
    if isinstance(num_gpu, int) and num_gpu > torch.cuda.device_count():
        raise GsrError(f'{path}: num_gpu is {num_gpu} but {torch.cuda.device_count()} CUDA device(s) are visible; '
                       'use num_gpu: 0 for the CPU or auto')


def _check_paths(opt: Dict[str, Any], path: str) -> None:
    """The ``path:`` block as BasicSR reads it: checkpoints and resume states are file names (or empty),
    ``strict_load_*`` booleans, ``param_key_*`` names, and every other entry a folder BasicSR creates."""
    block = opt.get('path')
    if block is None:
        return
    if not isinstance(block, dict):
        raise GsrError(f'{path}: path must be a mapping (pretrain_network_g, resume_state, ...), got '
                       f'{reprlib.repr(block)}')
    for key, value in block.items():
        if key.startswith('strict_load'):
            ok, kind = isinstance(value, bool), 'true or false'
        elif key.startswith(('pretrain_network', 'resume')):
            ok, kind = value is None or isinstance(value, str), 'a file name or ~'
        else:  # param_key_* names a checkpoint entry; anything else is a folder BasicSR creates with os.makedirs
            ok, kind = isinstance(value, str), 'a name' if key.startswith('param_key') else 'a folder name'
        if not ok:
            raise GsrError(f'{path}: path.{key} must be {kind}, got {type(value).__name__} {reprlib.repr(value)}')


def _check_keywords(where: str, cfg: Dict[str, Any], target, path: str, skip: Iterable[str] = ()) -> None:
    """Keys of ``cfg`` must be parameters of ``target`` (unless it takes ``**kwargs``), and a value must have the
    kind of the parameter's default (bool, int, number, string, list) where it has one."""
    params = inspect.signature(target).parameters
    open_ended = any(p.kind == p.VAR_KEYWORD for p in params.values())
    accepted = [p for p in params if p not in ('self', 'params')]
    unknown = sorted(k for k in cfg if k not in params and k != 'type')
    if unknown and not open_ended:
        name = getattr(target, '__name__', target)
        raise GsrError(f'{path}: {where}: unknown key(s) {", ".join(unknown)} for {name}; '
                       f'accepted: {", ".join(accepted)}')
    for key, value in cfg.items():
        default = params[key].default if key in params else None
        if f'{where}.{key}' in skip or default is None or default is inspect.Parameter.empty:
            continue
        kinds = ((bool, 'true or false'), (int, 'an integer'), (float, 'a number'), (str, 'a string'),
                 ((list, tuple), 'a list'))
        for kind, text in kinds:
            if isinstance(default, kind):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else (
                    isinstance(value, kind) and (kind is bool or not isinstance(value, bool)))
                if not ok:
                    raise GsrError(f'{path}: {where}.{key} must be {text}, got {value!r}')
                break
    if getattr(target, '__module__', '').startswith('gsr.'):  # gsr's own annotate their keys (a Literal: choices)
        init = target.__init__ if inspect.isclass(target) else target
        try:
            check_arguments(init, {k: v for k, v in cfg.items() if k in params}, where)
        except GsrError as e:
            raise GsrError(f'{path}: {e}') from e


def _check_networks_and_optimizers(opt: Dict[str, Any], path: str, skip: Iterable[str]) -> None:
    """Every ``network_<name>`` block (type and keywords) and every ``train.optim_<name>`` (type, keywords, lr)."""
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY
    for key, cfg in opt.items():
        if key.startswith('network_'):
            if not isinstance(cfg, dict):
                raise GsrError(f'{path}: {key} must be a mapping with a type')
            arch = _check_type(f'{key}.type', cfg.get('type'), ARCH_REGISTRY, path)
            _check_keywords(key, cfg, arch, path, skip)
            if key == 'network_g':
                _check_upscale(opt, cfg, arch, path)
    for key, cfg in (opt.get('train') or {}).items():
        if key.startswith('optim_') and isinstance(cfg, dict):
            kind = cfg.get('type')
            if kind not in OPTIMIZERS:
                raise GsrError(f'{path}: train.{key}.type {kind!r} is not an optimizer BasicSR builds; '
                               f'choose from {", ".join(OPTIMIZERS)}')
            _check_number(f'train.{key}.lr', cfg.get('lr'), float, path)
            if isinstance(cfg.get('lr'), (int, float)) and cfg['lr'] < 0:
                raise GsrError(f'{path}: train.{key}.lr must not be negative, got {cfg["lr"]}')
            _check_keywords(f'train.{key}', cfg, getattr(torch.optim, kind), path, skip)
    scheduler = (opt.get('train') or {}).get('scheduler')
    if isinstance(scheduler, dict) and scheduler.get('type') not in SCHEDULERS:
        raise GsrError(f'{path}: train.scheduler.type {scheduler.get("type")!r} is not a scheduler BasicSR builds; '
                       f'choose from {", ".join(SCHEDULERS)}')
    if isinstance(scheduler, dict) and scheduler.get('type') == 'CosineAnnealingRestartLR':
        periods, total = scheduler.get('periods') or [], _get(opt, 'train.total_iter')
        if isinstance(total, (int, float)) and all(isinstance(p, (int, float)) for p in periods) and \
                total > sum(periods):
            raise GsrError(f'{path}: train.total_iter {total:g} is beyond the end of train.scheduler.periods '
                           f'(sum {sum(periods):g}): the cosine schedule would have no learning rate there')


def _check_upscale(opt: Dict[str, Any], cfg: Dict[str, Any], arch, path: str) -> None:
    """The network's own upscale factor (``upscale``, or RRDBNet's ``scale``) must be the option file's ``scale``."""
    params = inspect.signature(arch).parameters
    for name in ('upscale', 'scale'):
        if name in params and isinstance(opt.get('scale'), int):
            value = cfg.get(name, params[name].default)
            if isinstance(value, int) and value != opt['scale']:
                raise GsrError(f'{path}: network_g.{name} is {value} but scale is {opt["scale"]}: '
                               'the network must upscale by the option file\'s scale')
            return


def _check_model(opt: Dict[str, Any], path: str) -> None:
    """The model's own top-level keys, for models that declare them (gsr's)."""
    from basicsr.utils.registry import MODEL_REGISTRY
    model = MODEL_REGISTRY.get(opt['model_type'])
    if hasattr(model, 'check_options'):
        try:
            model.check_options(opt)
        except GsrError as e:
            raise GsrError(f'{path}: {e}') from e


def check_options(opt: Dict[str, Any], path: str, skip: Iterable[str] = ()) -> None:
    """Validate registry names, numbers, loss keys, networks, optimizers, the model's own keys and data roots.

    ``skip`` lists dotted keys overridden on the command line (``--force_yml``), which are not checked.
    """
    from basicsr.utils.registry import LOSS_REGISTRY, MODEL_REGISTRY
    skip = set(skip)
    missing = [k for k in REQUIRED_TOP_LEVEL if k not in opt]
    if missing:
        raise GsrError(f'{path}: missing top-level key(s): {", ".join(missing)}')
    _check_type('model_type', opt.get('model_type'), MODEL_REGISTRY, path)
    _check_runtime(opt, path)
    _check_paths(opt, path)
    _check_networks_and_optimizers(opt, path, skip)
    for key, kind in NUMERIC_KEYS:
        if key not in skip:
            _check_number(key, _get(opt, key), kind, path)
    train = opt.get('train') or {}
    for key, cfg in train.items():
        if key.endswith('_opt') and isinstance(cfg, dict):
            _check_loss(f'train.{key}', cfg, path)
    for name, cfg in (train.get('regularizers') or {}).items():
        _check_loss(f'train.regularizers.{name}', cfg, path)
        if not issubclass(LOSS_REGISTRY.get(cfg['type']), Regularizer):
            raise GsrError(f'{path}: train.regularizers.{name}: {cfg["type"]} is not a regularizer (it does not take '
                           'the step\'s LossContext); put pixel losses under pixel_opt')
    _check_datasets(opt, path, skip)
    _check_model(opt, path)
    _check_data_roots(opt, path, skip)
