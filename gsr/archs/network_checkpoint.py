"""What a trained network is saved as, and loading it back: the checkpoint format of ``AttachedNetwork``.

A checkpoint holds the backbone under BasicSR's ``params`` / ``params_ema`` (loadable into the bare ``network_g``
architecture with strict keys) and, when attached modules have weights, ``<param_key>_attached`` beside them,
with ``attached_at_inference`` naming those that act at inference.
"""
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from gsr.archs.attached_arch import AttachedNetwork, network_from_options
from gsr.utils.checkpoint import checkpoint_entry, load_checkpoint, load_weights
from gsr.utils.errors import GsrError

ATTACHED_SUFFIX = '_attached'
INLINE_ATTACHED = 'attached_at_inference'  # names of the attached modules a checkpoint's network runs at inference


def _cpu(state: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    return OrderedDict((k[7:] if k.startswith('module.') else k, v.cpu()) for k, v in state.items())


def checkpoint_entries(net: torch.nn.Module, param_key: str) -> Dict[str, 'OrderedDict[str, torch.Tensor]']:
    """What ``net`` (bare) is saved as: ``{param_key: weights}``; an ``AttachedNetwork`` saves its backbone under
    ``param_key`` (loadable into the bare architecture) and its attached modules, if they have any state, under
    ``param_key + '_attached'``, and the names of those that act at inference under ``INLINE_ATTACHED`` (a loader
    must not run such a network without them)."""
    if not isinstance(net, AttachedNetwork):
        return {param_key: _cpu(net.state_dict())}
    entries = {param_key: _cpu(net.backbone.state_dict())}
    attached = net.attached.state_dict()
    if attached:
        entries[param_key + ATTACHED_SUFFIX] = _cpu(attached)
        entries[INLINE_ATTACHED] = sorted(name for name, module in net.attached.items()
                                          if net.points[name].inference and module.state_dict())
    return entries


def load_network_checkpoint(net: torch.nn.Module, path: str, param_key: str = 'params', strict: bool = True) -> None:
    """Load ``path`` into ``net`` (bare); the inverse of ``checkpoint_entries``. The backbone's weights come from
    ``param_key`` (``params`` where that is absent); the attached modules' from the matching ``_attached`` entry,
    which with ``strict`` must exist whenever they have state (a bare backbone checkpoint loads with
    ``strict: false``, leaving the attached modules as initialised). With ``strict``, a checkpoint whose attached
    modules act at inference (``INLINE_ATTACHED``) is refused for a network that does not attach them: the bare
    backbone would run silently without its trained inline module."""
    state = load_checkpoint(path)
    missing = sorted(set(state.get(INLINE_ATTACHED, ())) -
                     set(net.attached.keys() if isinstance(net, AttachedNetwork) else ()))
    if strict and missing:
        raise GsrError(f'checkpoint {path} was trained with the attached module(s) {", ".join(missing)}, which act '
                       'at inference, but the option file does not attach them; use the option file it was trained '
                       'with (its attach: block)')
    if not isinstance(net, AttachedNetwork):
        load_weights(net, checkpoint_entry(state, path, param_key), path, strict)
        return
    key = param_key if param_key in state else 'params'
    load_weights(net.backbone, checkpoint_entry(state, path, key), path, strict)
    expected = net.attached.state_dict()
    if not expected:
        return
    if key + ATTACHED_SUFFIX not in state:
        if strict:
            raise GsrError(f'checkpoint {path} has no weights for the attached module(s) '
                           f'{", ".join(net.attached.keys())} (no {key + ATTACHED_SUFFIX!r} entry; it has: '
                           f'{", ".join(map(str, state))})')
        return
    stored = checkpoint_entry(state, path, key + ATTACHED_SUFFIX)
    present = set(net.attached.keys())  # modules left out for inference (``inference: false``) are not loaded
    load_weights(net.attached, OrderedDict((k, v) for k, v in stored.items() if k.split('.')[0] in present), path,
                 strict)


def load_network(opt: Dict[str, Any],
                 checkpoint: str,
                 param_key: str = 'params_ema',
                 device: Optional[torch.device] = None,
                 lr_alone: bool = True) -> nn.Module:
    """The network an option file trains (``network_g`` with its ``attach:`` modules), loaded from ``checkpoint``
    (``param_key``, falling back to ``params``), in eval mode on ``device``. With ``lr_alone`` (every command that
    super-resolves images) a network that needs more than the LR image is refused: a LightBSR teacher takes the
    true degradation as its prior, which a real LR image does not come with."""
    net = network_from_options(opt, for_inference=True)
    if lr_alone and getattr(net.backbone, 'prior_channels', 0):
        raise GsrError(f'{checkpoint}: this network is a LightBSR teacher: it takes the true degradation (a prior '
                       f'of {net.backbone.prior_channels} values) besides the LR image, so it cannot super-resolve '
                       'an image alone; use a student distilled from it (options/train_lightbsr_student*.yml)')
    load_network_checkpoint(net, checkpoint, param_key)
    return net.eval().to(device or torch.device('cpu'))
