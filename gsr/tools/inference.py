"""Running a trained network on 8-bit images: checkpoint loading and tiled inference with bounded memory."""
from typing import Any, Dict, Optional

import numpy as np
import torch
from basicsr.archs import build_network
from torch import nn

from gsr.utils.checkpoint import load_weights, network_weights


def load_network(network_opt: Dict[str, Any],
                 checkpoint: str,
                 param_key: str = 'params_ema',
                 device: Optional[torch.device] = None) -> nn.Module:
    """Build ``network_opt`` and load ``param_key`` (falling back to ``params``) from ``checkpoint``."""
    net = build_network(dict(network_opt))
    load_weights(net, network_weights(checkpoint, param_key), checkpoint)
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
