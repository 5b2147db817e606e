"""Running a trained network on 8-bit images: checkpoint loading and tiled inference with bounded memory.

Validation during training (``GsrModel.test``), ``gsr infer``, ``gsr evaluate``, ``gsr analyze`` and the demo
all go through ``super_resolve_tensor``.
"""
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from gsr.archs.attached_arch import network_from_options
from gsr.utils.checkpoint import load_network_checkpoint


def load_network(opt: Dict[str, Any],
                 checkpoint: str,
                 param_key: str = 'params_ema',
                 device: Optional[torch.device] = None) -> nn.Module:
    """The network an option file trains (``network_g`` with its ``attach:`` modules), loaded from ``checkpoint``
    (``param_key``, falling back to ``params``), in eval mode on ``device``."""
    net = network_from_options(opt)
    load_network_checkpoint(net, checkpoint, param_key)
    return net.eval().to(device or torch.device('cpu'))


def to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 255.).permute(2, 0, 1).unsqueeze(0).to(device)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.squeeze(0).permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255.).round().astype(np.uint8)


@torch.no_grad()
def super_resolve_tensor(net: nn.Module,
                         lq: torch.Tensor,
                         scale: int,
                         tile: int = 0,
                         tile_pad: int = 16) -> torch.Tensor:
    """SR of a (1, 3, h, w) batch; with ``tile > 0`` the input is processed in ``tile``-sized pieces, each with
    ``tile_pad`` pixels of context on every side that are cut away again, so memory depends on ``tile`` only."""
    if tile <= 0:
        return net(lq)
    _, c, h, w = lq.shape
    out = lq.new_zeros(1, c, h * scale, w * scale)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - tile_pad, 0), max(left - tile_pad, 0)
            t1, l1 = min(bottom + tile_pad, h), min(right + tile_pad, w)
            piece = net(lq[:, :, t0:t1, l0:l1])
            out[:, :, top * scale:bottom * scale,
                left * scale:right * scale] = piece[:, :, (top - t0) * scale:(bottom - t0) * scale,
                                                    (left - l0) * scale:(right - l0) * scale]
    return out


def super_resolve(net: nn.Module, lr: np.ndarray, scale: int, tile: int = 0, tile_pad: int = 16) -> np.ndarray:
    """SR of one uint8 RGB image on the network's device; returns uint8 RGB."""
    device = next(net.parameters()).device
    return to_uint8(super_resolve_tensor(net, to_tensor(lr, device), scale, tile, tile_pad))
