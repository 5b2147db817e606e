"""Running a trained network on 8-bit images: padding to the size multiple and tiled inference with bounded memory.

Validation during training (``GsrModel.test``), ``gsr infer``, ``gsr evaluate``, ``gsr analyze`` and the demo
all go through ``run_piece``: whole images or tiles, on float batches or uint8 images. The network is handed in
(loading it from an option file and checkpoint: ``gsr.archs.network_checkpoint.load_network``).
"""
from typing import Iterator, Tuple

import numpy as np
import torch
from torch import nn

from gsr.utils.errors import GsrError


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The floor every SR result is read against: MATLAB's bicubic upscaling (BasicSR's ``imresize``, as the
    papers' "Bicubic" rows) of a uint8 RGB image, rounded back to uint8."""
    from basicsr.utils.matlab_functions import imresize
    up = imresize(lr.astype(np.float32) / 255., scale)
    return np.clip(np.round(up * 255.), 0, 255).astype(np.uint8)


def to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 255.).permute(2, 0, 1).unsqueeze(0).to(device)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.squeeze(0).permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255.).round().astype(np.uint8)


Box = Tuple[int, int, int, int]  # top, left, bottom, right


def tiles(h: int, w: int, tile: int, pad: int) -> Iterator[Tuple[Box, Box]]:
    """(inner box, padded box) of every ``tile`` x ``tile`` piece of an h x w image; the padded box adds up to
    ``pad`` pixels of context on every side. With ``tile <= 0``, one piece: the whole image."""
    if tile <= 0:
        yield (0, 0, h, w), (0, 0, h, w)
        return
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            yield (top, left, bottom, right), (max(top - pad, 0), max(left - pad, 0), min(bottom + pad, h),
                                               min(right + pad, w))


def size_multiple(net: nn.Module) -> int:
    """The multiple of which a network's input height and width must be: the window of window-attention networks
    (BasicSR's SwinIR has ``window_size`` and does not pad; its official test script pads), else 1. Found through
    any wrapper (attached modules, DDP, ``ExecutedNetwork``)."""
    return next((m.window_size for m in net.modules() if isinstance(getattr(m, 'window_size', None), int)), 1)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` extended at the bottom and right to a multiple of ``multiple`` by mirroring its last rows and columns
    (SwinIR's test-time padding); written with shape arithmetic only, so ONNX export keeps height and width
    dynamic."""
    if multiple <= 1:
        return x
    h, w = x.shape[-2:]
    x = torch.cat([x, x.flip(-2)], -2)[..., :h + (-h) % multiple, :]
    return torch.cat([x, x.flip(-1)], -1)[..., :w + (-w) % multiple]


def run_piece(net: nn.Module, piece: torch.Tensor, scale: int, inner: Box, padded: Box, multiple: int) -> torch.Tensor:
    """The network's output for ``piece`` (the padded box), cut to the inner box; the piece is first padded to
    ``multiple`` (the network's ``size_multiple``). The output must be ``scale`` times the input, or tiles would be
    placed wrongly."""
    extended = pad_to_multiple(piece, multiple)
    out = net(extended)
    if out.shape[-2:] != tuple(scale * s for s in extended.shape[-2:]):
        raise GsrError(f'the network turns a {tuple(extended.shape[-2:])} input into {tuple(out.shape[-2:])}, which '
                       f'is not the scale {scale} of the option file: set scale to the network\'s upscale')
    top, left = (inner[0] - padded[0]) * scale, (inner[1] - padded[1]) * scale
    return out[..., top:top + (inner[2] - inner[0]) * scale, left:left + (inner[3] - inner[1]) * scale]


@torch.no_grad()
def super_resolve_tensor(net: nn.Module, lq: torch.Tensor, scale: int, tile: int = 0,
                         tile_pad: int = 16) -> torch.Tensor:
    """SR of an (N, 3, h, w) float batch on its device, whole or in tiles (validation during training)."""
    n, c, h, w = lq.shape
    multiple = size_multiple(net)
    if tile <= 0:
        return run_piece(net, lq, scale, (0, 0, h, w), (0, 0, h, w), multiple)
    out = lq.new_empty(n, c, h * scale, w * scale)
    for inner, padded in tiles(h, w, tile, tile_pad):
        out[..., inner[0] * scale:inner[2] * scale, inner[1] * scale:inner[3] * scale] = run_piece(
            net, lq[..., padded[0]:padded[2], padded[1]:padded[3]], scale, inner, padded, multiple)
    return out


@torch.no_grad()
def super_resolve(net: nn.Module, lr: np.ndarray, scale: int, tile: int = 0, tile_pad: int = 16) -> np.ndarray:
    """SR of one uint8 RGB image on the network's device; returns uint8 RGB (``gsr infer``, ``gsr evaluate``,
    ``gsr analyze``, the demo). With ``tile > 0`` each tile goes to the device on its own and its result is written
    straight into the uint8 output, so memory beyond that output is bounded by the tile size."""
    device, multiple = next(net.parameters()).device, size_multiple(net)
    h, w = lr.shape[:2]
    out = np.empty((h * scale, w * scale, 3), np.uint8)
    for inner, padded in tiles(h, w, tile, tile_pad):
        piece = to_tensor(lr[padded[0]:padded[2], padded[1]:padded[3]], device)
        out[inner[0] * scale:inner[2] * scale, inner[1] * scale:inner[3] * scale] = to_uint8(
            run_piece(net, piece, scale, inner, padded, multiple))
    return out
