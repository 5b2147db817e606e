"""Crash-safe checkpoint writing and safe loading.

Every checkpoint and training state is written to a temporary file in the target folder and renamed over
the final name, so a reader (e.g. ``--auto_resume``) never sees a partial file. Loading always uses
``weights_only=True``; training states additionally allow exactly the Python types BasicSR's schedulers
store (``collections.Counter``).
"""
import collections
import errno
import hashlib
import os
import pickle
import tempfile
from collections import OrderedDict
from typing import Any, Dict, Mapping

import torch

from gsr.utils.errors import GsrError

TRAINING_STATE_GLOBALS = [collections.Counter]
TEMPORARY_NAME_KEEP = 200  # characters of a file's name kept in its temporary name (+ ~14 random and suffix)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def training_states(folder: str) -> Dict[int, str]:
    """iteration -> file name of every complete ``<iter>.state`` in ``folder`` (temporary files are not)."""
    if not os.path.isdir(folder):
        return {}
    stems = (f[:-len('.state')] for f in os.listdir(folder) if f.endswith('.state'))
    return {int(stem): f'{stem}.state' for stem in stems if stem.isdigit()}


def temporary_prefix(path: str) -> str:
    """The prefix of a temporary name beside ``path``: hidden, recognisable, and short enough that the random part
    and suffix keep a legal name (255 bytes) even when ``path``'s own name is nearly that long."""
    return f'.{os.path.basename(path)[:TEMPORARY_NAME_KEEP]}.'


def is_write_failure(e: BaseException) -> bool:
    """An OS error, or torch's report of one: ``torch.save`` writes through its stream writer, which raises a
    RuntimeError ("... write ..." or, on a full disk, "unexpected pos N vs M")."""
    return isinstance(e, OSError) or (isinstance(e, RuntimeError) and any(
        mark in str(e).lower() for mark in ('write', 'unexpected pos')))


def atomic_write(path: str, write) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically; remove the temp file on failure. A
    failed write (``is_write_failure``) is one error naming ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix='.tmp', dir=folder)
        os.close(fd)
    except OSError as e:
        raise GsrError(f'could not write {path}: {e}') from e
    try:
        write(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; keep what the user's umask asks for
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if is_write_failure(e):
            raise GsrError(f'could not write {path}: {e}') from e
        raise


def check_can_write(path: str) -> None:
    """Fail now, in one line, where ``atomic_write(path)`` would fail after the work (a folder in the way, a parent
    that is a file or read-only), creating nothing: a temporary file is made and removed in the nearest existing
    folder above ``path``."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise GsrError(f'could not write {path}: it is a folder')
    folder = os.path.dirname(target)
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    try:
        if not os.path.isdir(folder):
            raise NotADirectoryError(errno.ENOTDIR, 'not a folder', folder)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix='.tmp', dir=folder)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise GsrError(f'could not write {path}: {e}') from e


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that never leaves a partial file at ``path``.

    It writes through a file object: given a path, torch names the archive's inner folder after the (temporary,
    random) file name, so equal weights would give different bytes on every save.
    """

    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)

    atomic_write(path, write)


def _load(path: str, what: str, safe_globals=()) -> Any:
    if not os.path.isfile(path):
        raise GsrError(f'{what} not found: {path}')
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise GsrError(f'{what} {path} holds objects that are not allowed when loading safely: {first}') from e
    except (RuntimeError, EOFError) as e:
        raise GsrError(f'{what} {path} is truncated or not a torch checkpoint: {e}') from e


def file_sha256(path: str) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks: what caches and manifests key a file's content on."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str) -> Mapping[str, Any]:
    """Load a network checkpoint (tensors and plain containers only)."""
    return _load(path, 'checkpoint', ())


def load_training_state(path: str) -> Mapping[str, Any]:
    """Load a BasicSR training state: tensors, containers and the scheduler's ``Counter``."""
    return _load(path, 'training state', TRAINING_STATE_GLOBALS)


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor]) -> str:
    """Describe missing, unexpected and wrongly shaped keys; empty when the two match."""
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    shapes = sorted(k for k in set(expected) & set(loaded) if expected[k].shape != loaded[k].shape)
    parts = []
    for label, keys in (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatch', shapes)):
        if keys:
            shown = ', '.join(keys[:8]) + (f' (+{len(keys) - 8} more)' if len(keys) > 8 else '')
            parts.append(f'{label}: {shown}')
    return '; '.join(parts)


def network_weights(path: str, param_key: str = 'params') -> 'OrderedDict[str, torch.Tensor]':
    """The state dict stored under ``param_key`` (``params`` when that is absent; the whole file when None),
    with DDP's ``module.`` prefixes removed."""
    return checkpoint_entry(load_checkpoint(path), path, param_key)


def require_weights_of(net: torch.nn.Module, path: str, param_key: str, key: str, what: str) -> None:
    """One line naming ``key`` when ``path`` is missing or its weights do not fit ``net`` (which may live on the
    meta device: only names and shapes are compared)."""
    if not os.path.isfile(path):
        raise GsrError(f'{key}: checkpoint not found: {path}')
    mismatch = state_dict_mismatch(net.state_dict(), network_weights(path, param_key))
    if mismatch:
        raise GsrError(f'{key}: {path} is not {what} ({mismatch})')


def checkpoint_entry(state: Mapping[str, Any], path: str, param_key: str) -> 'OrderedDict[str, torch.Tensor]':
    """``network_weights`` of an already loaded checkpoint."""
    if param_key is not None:
        key = param_key if param_key in state else 'params'
        if key not in state:
            raise GsrError(f'checkpoint {path} has neither {param_key!r} nor \'params\' '
                           f'(it has: {", ".join(map(str, state))})')
        state = state[key]
    return OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())


def load_weights(net: torch.nn.Module, weights: Mapping[str, torch.Tensor], path: str, strict: bool = True) -> None:
    """``net.load_state_dict``; with ``strict`` a mismatch is one error listing missing/unexpected/mis-shaped keys."""
    if strict:
        mismatch = state_dict_mismatch(net.state_dict(), weights)
        if mismatch:
            raise GsrError(f'checkpoint {path} does not fit {net.__class__.__name__}: {mismatch}')
    net.load_state_dict(weights, strict=strict)
