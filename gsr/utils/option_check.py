"""Checks an option file before BasicSR runs it, so bad input fails at once with one clear line."""
import inspect
import os
from typing import Any, Dict, Iterable, Optional

import yaml

from gsr.utils.errors import GsrError

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
)  # yapf: disable
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


def _check_datasets(opt: Dict[str, Any], path: str, skip: Iterable[str]) -> None:
    from basicsr.utils.registry import DATASET_REGISTRY
    for phase, ds in opt['datasets'].items():
        where = f'datasets.{phase}'
        if not isinstance(ds, dict):
            raise GsrError(f'{path}: {where} must be a mapping')
        _check_type(f'{where}.type', ds.get('type'), DATASET_REGISTRY, path)
        for key, kind in NUMERIC_DATASET_KEYS:
            _check_number(f'{where}.{key}', ds.get(key), kind, path)
        for key in ('dataroot_gt', 'dataroot_lq'):
            root = ds.get(key)
            if root is not None and f'{where}.{key}' not in skip and not os.path.exists(os.path.expanduser(root)):
                where_abs = '' if os.path.isabs(root) else f' (from {os.getcwd()}: {os.path.abspath(root)})'
                raise GsrError(f'{path}: {where}.{key} does not exist: {root}{where_abs} — see docs/DATASETS.md '
                               'for how to download and prepare it (e.g. gsr prepare subimages)')


def check_options(opt: Dict[str, Any], path: str, skip: Iterable[str] = ()) -> None:
    """Validate registry names, numbers, loss keys and data roots of a parsed option file.

    ``skip`` lists dotted keys overridden on the command line (``--force_yml``), which are not checked.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
    skip = set(skip)
    missing = [k for k in REQUIRED_TOP_LEVEL if k not in opt]
    if missing:
        raise GsrError(f'{path}: missing top-level key(s): {", ".join(missing)}')
    _check_type('model_type', opt.get('model_type'), MODEL_REGISTRY, path)
    _check_type('network_g.type', _get(opt, 'network_g.type'), ARCH_REGISTRY, path)
    for key, kind in NUMERIC_KEYS:
        if key not in skip:
            _check_number(key, _get(opt, key), kind, path)
    _check_datasets(opt, path, skip)
    train = opt.get('train') or {}
    for key, cfg in train.items():
        if key.endswith('_opt') and isinstance(cfg, dict):
            _check_loss(f'train.{key}', cfg, path)
    for name, cfg in (train.get('regularizers') or {}).items():
        _check_loss(f'train.regularizers.{name}', cfg, path)
