"""A BasicSR SR network with trainable (or parameter-free) modules attached at named layers.

The attached modules are submodules of one network, so everything BasicSR does with ``net_g`` — optimising,
saving, resuming, the EMA copy, validation — and gsr's inference and evaluation see them. The backbone itself is
unchanged: its weights are saved under BasicSR's usual ``params`` / ``params_ema`` keys (loadable into the bare
architecture with strict keys) and the attached modules' beside them under ``params_attached`` /
``params_ema_attached`` (``gsr.utils.checkpoint``).
"""
import functools
from dataclasses import dataclass
from typing import Any, Dict, Literal, Optional

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from gsr.utils.errors import GsrError
from gsr.utils.options import check_arguments, option, options_from_dict

Capture = Literal['input', 'output']  # the tensor entering a layer, or the one it returns


@dataclass
class AttachmentOptions:
    """One entry of ``attach:`` besides the module's own keys (``type`` and its keyword arguments)."""
    layer: str = option('conv_last', 'the backbone layer the module is attached at')
    capture: Capture = option(
        'input', '`input`: the module transforms the tensor entering the layer; `output`: the one it returns')
    lr: Optional[float] = option(None, 'a learning rate of its own (a parameter group of `optim_g`); absent: the '
                                 'network\'s')
    inference: bool = option(True, '`false`: a training-time auxiliary, which `gsr infer` / `gsr evaluate` leave out '
                             'of the network they build')


def build_registered(opt: Dict[str, Any]) -> nn.Module:
    """``ARCH_REGISTRY[type](**rest)``: BasicSR's ``build_network`` without its log line, which would set up
    BasicSR's logger (without its log file) when an option file is checked before training."""
    kwargs = dict(opt)
    return ARCH_REGISTRY.get(kwargs.pop('type'))(**kwargs)


def unwrap(net: nn.Module) -> nn.Module:
    """Unwrap DataParallel / DistributedDataParallel."""
    return net.module if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else net


def backbone_of(net: nn.Module) -> nn.Module:
    """The SR architecture inside ``net`` (DDP/DP and ``AttachedNetwork`` unwrapped)."""
    net = unwrap(net)
    return net.backbone if isinstance(net, AttachedNetwork) else net


def resolve_layer(net: nn.Module, layer: str, key: str) -> nn.Module:
    """The submodule ``layer`` of ``net``'s backbone; the error names ``key`` and the backbone's last convs."""
    backbone = backbone_of(net)
    try:
        return backbone.get_submodule(layer)
    except AttributeError as e:
        convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)][-5:]
        raise GsrError(f'{key} {layer!r} is not a layer of {backbone.__class__.__name__}; '
                       f'its last conv layers are: {", ".join(convs)}') from e


@ARCH_REGISTRY.register()
class AttachedNetwork(nn.Module):
    """``backbone`` (a ``network_g``-style dict) plus ``attachments``: name -> {type, layer, capture, lr, ...}.

    A module attached with ``capture: input`` transforms the tensor entering ``layer``; with ``capture: output``
    the tensor it returns. Modules at the same layer act in the order given. ``for_inference`` leaves out the
    modules marked ``inference: false`` (training-time auxiliaries). The modules act through hooks on the backbone's
    layers, so calling ``backbone`` itself runs them too: the bare network is ``network_g`` built on its own.
    """

    def __init__(self,
                 backbone: Dict[str, Any],
                 attachments: Optional[Dict[str, Dict[str, Any]]] = None,
                 for_inference: bool = False):
        super().__init__()
        self.backbone = build_registered(backbone)
        self.attached = nn.ModuleDict()
        self.points: Dict[str, AttachmentOptions] = {}
        for name, cfg in (attachments or {}).items():
            point, module_opt = split_attachment(name, cfg)
            if point.inference or not for_inference:
                self.attach(name, build_registered(module_opt), point)

    def attach(self, name: str, module: nn.Module, point: AttachmentOptions) -> None:
        layer = resolve_layer(self, point.layer, f'attach.{name}.layer')
        check_channels(name, module, layer, point.capture)
        self.attached[name] = module
        self.points[name] = point
        if point.capture == 'input':
            layer.register_forward_pre_hook(functools.partial(_transform_input, module))
        else:
            layer.register_forward_hook(functools.partial(_transform_output, module))
        observed = getattr(module, 'observed_layer', None)
        if observed is not None:  # a module that also reads an earlier layer's output (e.g. TFD's detector)
            source = resolve_layer(self, observed, f'attach.{name}.detector_layer')
            if isinstance(source, nn.Conv2d) and source.out_channels != module.detector_channels:
                raise GsrError(f'attach.{name}: its detector reads {source.out_channels} channels at {observed!r} '
                               f'but has detector_channels {module.detector_channels}')
            source.register_forward_hook(functools.partial(_observe, module))

    def forward(self, x: torch.Tensor, *args, **kwargs):
        """The backbone's forward; further arguments are the backbone's own (e.g. LightBSR's prior)."""
        return self.backbone(x, *args, **kwargs)


def _transform_input(module: nn.Module, layer: nn.Module, args):
    return (module(args[0]), ) + tuple(args[1:])


def _transform_output(module: nn.Module, layer: nn.Module, args, output):
    return module(output)


def _observe(module: nn.Module, layer: nn.Module, args, output) -> torch.Tensor:
    # what follows may modify the output in place (e.g. LeakyReLU(inplace=True)): the module keeps the original
    module.observe(output)
    return output.clone()


def split_attachment(name: str, cfg: Dict[str, Any]):
    """(``AttachmentOptions``, the module's ``build_network`` dict) from one ``attach:`` entry."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise GsrError(f'attach.{name} must be a mapping with a type (a registered network), got {cfg!r}')
    if cfg['type'] not in ARCH_REGISTRY:
        raise GsrError(f'attach.{name}.type {cfg["type"]!r} is not a registered network')
    point_keys = set(AttachmentOptions.__dataclass_fields__)
    point = options_from_dict(AttachmentOptions, {k: v for k, v in cfg.items() if k in point_keys}, f'attach.{name}')
    module = {k: v for k, v in cfg.items() if k not in point_keys}
    # the module's own annotated keys (a Literal lists the choices), named in full before it is built
    check_arguments(ARCH_REGISTRY.get(cfg['type']).__init__, {k: v for k, v in module.items() if k != 'type'},
                    f'attach.{name}')
    return point, module


def check_channels(name: str, module: nn.Module, layer: nn.Module, capture: str) -> None:
    """A module that declares ``num_feat`` must match the channels a conv layer takes (input) or gives (output)."""
    if not isinstance(layer, nn.Conv2d) or not hasattr(module, 'num_feat'):
        return
    channels = layer.in_channels if capture == 'input' else layer.out_channels
    if module.num_feat != channels:
        raise GsrError(f'attach.{name}: the module has num_feat {module.num_feat} but the {capture} of its layer '
                       f'has {channels} channels')


def network_from_options(opt: Dict[str, Any], for_inference: bool = False) -> AttachedNetwork:
    """``network_g`` with the modules of ``attach:`` (and ``adaptive_dropout:``'s, and ``dropout:``, channel Dropout
    at the feature tap); for inference without the modules marked ``inference: false``."""
    attachments = dict(opt.get('attach') or {})
    if opt.get('adaptive_dropout') is not None:
        from gsr.archs.adaptive_dropout_arch import adaptive_dropout_attachments
        attachments.update(adaptive_dropout_attachments(opt['adaptive_dropout'], opt['network_g']))
    if opt.get('dropout') is not None:
        tap = opt.get('feature_tap') or {}
        attachments['dropout'] = dict(
            type='ChannelDropout', layer=tap.get('layer', 'conv_last'), capture=tap.get('capture', 'input'),
            **opt['dropout'])
    return AttachedNetwork(opt['network_g'], attachments, for_inference)
