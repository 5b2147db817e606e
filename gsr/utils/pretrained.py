"""Networks shipped inside the package (``gsr/pretrained/``): SRResNets trained by the reproduction studies,
named in ``manifest.json`` with their network, weights' sha256 and how they were trained. ``gsr infer --model``
and ``gsr demo`` use them; ``gsr repro STUDY --ship`` writes them."""
import json
import os
from typing import Any, Dict, List

import torch

from gsr.utils.checkpoint import atomic_torch_save, atomic_write_text, file_sha256
from gsr.utils.errors import GsrError

FOLDER = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'pretrained')
MANIFEST = 'manifest.json'


def manifest(folder: str = FOLDER) -> Dict[str, Dict[str, Any]]:
    """The shipped networks' manifest (name -> entry); a damaged file is one error naming it."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            entries = json.load(f)
    except ValueError as e:
        raise GsrError(f'{path}: not valid JSON ({e}); restore it from the package (git checkout or reinstall)') from e
    if not isinstance(entries, dict):
        raise GsrError(f'{path}: expected a mapping of shipped networks, got {type(entries).__name__}')
    return entries


def shipped(name: str, folder: str = FOLDER) -> Dict[str, Any]:
    """The manifest entry of ``name`` with ``checkpoint`` (its path), after checking the file's sha256."""
    entries = manifest(folder)
    if name not in entries:
        raise GsrError(f'--model {name!r}: no such shipped network (shipped: {", ".join(entries) or "none"})')
    entry = dict(entries[name], checkpoint=os.path.join(folder, entries[name]['file']))
    if not os.path.isfile(entry['checkpoint']) or file_sha256(entry['checkpoint']) != entry['sha256']:
        raise GsrError(f'--model {name!r}: {entry["checkpoint"]} is missing or does not match the sha256 of '
                       f'{os.path.join(folder, MANIFEST)}; reinstall gsr')
    return entry


HALF_ABOVE_BYTES = 4 * 2**20  # networks larger than this in float32 are stored in float16 (the package stays small)
STORAGE = {'float32': torch.float32, 'float16': torch.float16}


def storage_for(weights: Dict[str, torch.Tensor]) -> str:
    """``float16`` when the weights would take more than ``HALF_ABOVE_BYTES`` in float32, else ``float32``."""
    return 'float16' if sum(v.numel() * 4 for v in weights.values()) > HALF_ABOVE_BYTES else 'float32'


def stored(weights: Dict[str, torch.Tensor], storage: str) -> Dict[str, torch.Tensor]:
    """The weights as they are stored (floating tensors cast to ``storage``, on the CPU); loading casts them back
    into the float32 network (``load_state_dict`` copies)."""
    return {k: (v.to(STORAGE[storage]) if v.is_floating_point() else v).cpu() for k, v in weights.items()}


def ship(name: str, weights: Dict[str, torch.Tensor], options: Dict[str, Any], provenance: Dict[str, Any],
         folder: str = FOLDER, storage: str = 'float32') -> str:
    """Write ``weights`` as ``<name>.pth`` (under ``params``, in ``storage``) and its manifest entry; returns the
    path."""
    path = os.path.join(folder, f'{name}.pth')
    atomic_torch_save({'params': stored(weights, storage)}, path)
    entries = manifest(folder)
    entries[name] = dict(provenance, file=f'{name}.pth', sha256=file_sha256(path), param_key='params',
                         storage=storage, scale=options.get('scale', 4), network_g=options['network_g'])
    atomic_write_text(os.path.join(folder, MANIFEST), json.dumps(entries, indent=1, sort_keys=True))
    return path


def withdraw(names: List[str], folder: str = FOLDER) -> None:
    """Take ``names`` out of the package: the manifest first (a network it does not name is never served), then
    their files."""
    entries = manifest(folder)
    files = [entries.pop(name)['file'] for name in names if name in entries]
    if not files:
        return
    atomic_write_text(os.path.join(folder, MANIFEST), json.dumps(entries, indent=1, sort_keys=True))
    for name in files:
        if os.path.isfile(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
