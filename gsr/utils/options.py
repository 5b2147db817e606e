"""Option blocks as dataclasses: unknown keys and wrongly typed values fail with the key's full name."""
import copy
import dataclasses
import difflib
import functools
import inspect
import typing
from typing import Any, Callable, Dict, Mapping, Optional, Type, TypeVar

from gsr.utils.errors import GsrError

T = TypeVar('T')


def option(default: Any = dataclasses.MISSING, doc: str = '', *, factory: Any = dataclasses.MISSING) -> Any:
    """A field of an option dataclass with its description: the schema ``docs/OPTIONS.md`` is generated from
    (``scripts/generate_options_doc.py``). ``factory`` makes a mutable default (``dataclasses.field``'s
    ``default_factory``); neither default nor factory: the key is required."""
    return dataclasses.field(default=default, default_factory=factory, metadata={'doc': doc})


def describe(annotation: Any) -> str:
    """What a value of ``annotation`` is, in the words of the error messages."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return 'one of ' + ', '.join(str(c) for c in typing.get_args(annotation))
    if origin is typing.Union:
        return ' or '.join(describe(a) for a in typing.get_args(annotation) if a is not type(None))
    if dataclasses.is_dataclass(annotation) or origin is dict:
        return 'a mapping'
    if origin in (tuple, list):
        return 'a list'
    names = {float: 'a number', int: 'an integer', bool: 'true or false', str: 'a string'}
    return names.get(annotation, getattr(annotation, '__name__', str(annotation)))


def _same_container(value: Any, annotation: Any) -> bool:
    """A list for a list or tuple annotation, a mapping for a dict or dataclass one."""
    if isinstance(value, (list, tuple)):
        return typing.get_origin(annotation) in (list, tuple)
    mapping = dataclasses.is_dataclass(annotation) or typing.get_origin(annotation) is dict
    return isinstance(value, Mapping) and mapping


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        # `True in (1,)` holds in Python: compare types too, so a YAML true is not the integer 1
        if not any(value == c and type(value) is type(c) for c in choices):
            raise GsrError(f'{where} must be {describe(annotation)}, got {value!r}')
        return value
    if dataclasses.is_dataclass(annotation):
        if value is not None and not isinstance(value, Mapping):
            raise GsrError(f'{where} must be a mapping of keys, got {value!r}')
        return options_from_dict(annotation, value, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise GsrError(f'{where} must be a mapping, got {value!r}')
        item = typing.get_args(annotation)[1]
        return {k: _check_value(v, item, f'{where}.{k}') for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GsrError(f'{where} must be a number, got {value!r} ({type(value).__name__}); '
                           'in YAML write 2.0e-4 or !!float 2e-4, not 2e-4')
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GsrError(f'{where} must be an integer, got {value!r} ({type(value).__name__})')
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise GsrError(f'{where} must be true or false, got {value!r}')
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise GsrError(f'{where} must be a string, got {value!r}')
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise GsrError(f'{where} must be a list, got {value!r}')
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise GsrError(f'{where} must have {len(args)} entries, got {list(value)!r}')
            return tuple(_check_value(v, a, f'{where}[{i}]') for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return origin(_check_value(v, item, f'{where}[{i}]') for i, v in enumerate(value))
    if origin is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        if len(members) == 1:  # Optional[X]: X's own message
            return _check_value(value, members[0], where)
        errors = []
        for member in members:  # the first member the value fits, in the order written
            try:
                return _check_value(value, member, where)
            except GsrError as e:
                errors.append(e)
        for member, error in zip(members, errors):  # a list or mapping member: what inside it is wrong
            if _same_container(value, member):
                raise error
        raise GsrError(f'{where} must be {describe(annotation)}, got {value!r}')
    return value


def unknown_keys_error(where: str, unknown, known) -> GsrError:
    """One error naming the unknown keys of ``where``, the closest known ones, and all known ones."""
    known = list(known)
    close = [m for u in unknown for m in difflib.get_close_matches(u, known, 1)]
    hint = f' (did you mean {", ".join(close)}?)' if close else ''
    return GsrError(f'{where + ": " if where else ""}unknown key(s) {", ".join(unknown)}{hint}; '
                    f'accepted: {", ".join(known)}')


def check_arguments(func: Callable[..., Any], values: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """``values`` (keyword arguments of ``func``) checked against ``func``'s annotations as option values are
    (a ``Literal`` is a choice, a ``float`` accepts an integer and becomes a float); ``where`` names the block in
    the errors. Arguments without an annotation pass unchecked."""
    hints = typing.get_type_hints(func)
    return {k: _check_value(v, hints[k], f'{where}.{k}') if k in hints else v for k, v in values.items()}


def checked_init(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator of an ``__init__``: its arguments pass ``check_arguments`` (``name`` heads the errors) before it
    runs, whoever builds the object (BasicSR's registries, an option check or a script)."""

    def decorate(init: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(init)

        @functools.wraps(init)
        def checked(self, *args, **kwargs):
            bound = signature.bind(self, *args, **kwargs)
            values = {k: v for k, v in bound.arguments.items() if k != 'self'}
            init(self, **check_arguments(init, values, name))

        return checked

    return decorate


def options_from_dict(cls: Type[T], values: Optional[Mapping[str, Any]], where: str) -> T:
    """Build dataclass ``cls`` from ``values``; ``where`` names the YAML block in error messages ('' for the top
    level). A key whose value is null keeps its default; a key without a default must be given."""
    values = {k: v for k, v in dict(values or {}).items() if v is not None}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise unknown_keys_error(where, unknown, names)
    required = [f.name for f in dataclasses.fields(cls) if f.name not in values and f.init
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        keys = ', '.join(f'{where}.{k}' if where else k for k in required)
        raise GsrError(f'missing required key{"s" if len(required) > 1 else ""}: {keys}')
    checked = {k: _check_value(v, hints[k], f'{where}.{k}' if where else k) for k, v in values.items()}
    try:
        return cls(**checked)
    except GsrError as e:  # a dataclass's own check (``__post_init__``) names the key within the block
        raise GsrError(f'{where}.{e}' if where else str(e)) from e


def check_range(name: str, values, low: float = float('-inf'), high: float = float('inf')) -> None:
    """``values`` = [a, b] with low <= a <= b <= high; the error names the key."""
    if not low <= values[0] <= values[1] <= high:
        raise GsrError(f'{name} must be [low, high] within [{low:g}, {high:g}], got {list(values)}')


def check_fraction(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise GsrError(f'{name} must be a probability in [0, 1], got {value}')


def check_probabilities(name: str, values, count: int) -> None:
    """``count`` probabilities in [0, 1] that sum to 1."""
    if len(values) != count or any(not 0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise GsrError(f'{name} must be {count} probabilities that sum to 1, got {list(values)}')


# keys of a ``datasets.<phase>`` block that BasicSR itself reads (loader, sampler, phase); datasets ignore them
BASICSR_DATASET_KEYS = ('name', 'type', 'phase', 'scale', 'num_worker_per_gpu', 'batch_size_per_gpu',
                        'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers',
                        'num_prefetch_queue', 'use_shuffle', 'gt_size', 'io_backend')


def dataset_options(cls: Type[T], opt: Mapping[str, Any]) -> T:
    """Build a dataset's own options from its ``datasets.<phase>`` block (BasicSR's keys left out); the errors name
    the block by its key (``phase``, which BasicSR adds), else by the dataset's ``name``."""
    own = {k: v for k, v in opt.items() if k not in BASICSR_DATASET_KEYS}
    return options_from_dict(cls, own, f'datasets.{opt.get("phase", opt.get("name", "?"))}')


def merge(base: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``overrides`` merged, the rule of every composed option file (study variants, option templates):
    mappings key by key, other values replaced, ``None`` removes the key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
