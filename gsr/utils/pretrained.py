"""Networks shipped inside the package (``gsr/pretrained/``): small SRResNets trained by the reproduction study,
named in ``manifest.json`` with their network, weights' sha256 and how they were trained. ``gsr infer --model``
and ``gsr demo`` use them; ``gsr repro STUDY --ship`` writes them."""
import json
import os
from typing import Any, Dict

import torch

from gsr.utils.checkpoint import atomic_torch_save, atomic_write_text
from gsr.utils.errors import GsrError

FOLDER = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'pretrained')
MANIFEST = 'manifest.json'


def manifest(folder: str = FOLDER) -> Dict[str, Dict[str, Any]]:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def shipped(name: str, folder: str = FOLDER) -> Dict[str, Any]:
    """The manifest entry of ``name`` with ``checkpoint`` (its path), after checking the file's sha256."""
    from gsr.tools.evaluate import file_sha256
    entries = manifest(folder)
    if name not in entries:
        raise GsrError(f'--model {name!r}: no such shipped network (shipped: {", ".join(entries) or "none"})')
    entry = dict(entries[name], checkpoint=os.path.join(folder, entries[name]['file']))
    if not os.path.isfile(entry['checkpoint']) or file_sha256(entry['checkpoint']) != entry['sha256']:
        raise GsrError(f'--model {name!r}: {entry["checkpoint"]} is missing or does not match the sha256 of '
                       f'{os.path.join(folder, MANIFEST)}; reinstall gsr')
    return entry


def ship(name: str, weights: Dict[str, torch.Tensor], options: Dict[str, Any], provenance: Dict[str, Any],
         folder: str = FOLDER) -> str:
    """Write ``weights`` as ``<name>.pth`` (under ``params``, float32) and its manifest entry; returns the path."""
    from gsr.tools.evaluate import file_sha256
    path = os.path.join(folder, f'{name}.pth')
    atomic_torch_save({'params': {k: v.float().cpu() for k, v in weights.items()}}, path)
    entries = manifest(folder)
    entries[name] = dict(provenance, file=f'{name}.pth', sha256=file_sha256(path), param_key='params',
                         scale=options.get('scale', 4), network_g=options['network_g'])
    atomic_write_text(os.path.join(folder, MANIFEST), json.dumps(entries, indent=1, sort_keys=True))
    return path
