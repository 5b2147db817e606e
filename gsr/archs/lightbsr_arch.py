"""LightBSR (Yuan et al., ICCV 2025, arXiv 2506.22710): an IDR encoder and an SR network adapted by the implicit
degradation representation (IDR), as described from the official code in ``shared/research/lightbsr_and_savl.md``
part A.2 (the code is read, not copied).

``LightBSR`` (registered) is encoder + SR network. The student (``prior_channels: 0``) sees the LR image only and is
the deployable network (``gsr infer``, ``gsr evaluate``, ``gsr export``). The teacher (``prior_channels`` > 0) also
receives a degradation prior broadcast over the image (the kernel's PCA code, plus the noise level), and with
``contrastive: true`` carries a MoCo projection head, a momentum key encoder and a queue of keys as buffers, so
they are saved in ``net_g``'s checkpoints and resumed with it.
"""
import copy
import itertools
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from gsr.utils.options import checked_init

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def conv(in_ch: int, out_ch: int, size: int = 3, bias: bool = True, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, size, padding=size // 2, bias=bias, **kwargs)


class ConvNeXtMLP(nn.Module):
    """GELU (optional) -> depthwise 7x7 -> LayerNorm -> 64->128->64 MLP -> layer scale (1e-6): the residual branch
    of a ConvNeXt block (A.2.1, step 2 of an adaptation block and the block after each group's eight)."""

    def __init__(self, channels: int, expansion: int = 2, gelu_first: bool = False):
        super().__init__()
        self.gelu_first = gelu_first
        self.dwconv = conv(channels, channels, 7, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.fc1 = nn.Linear(channels, channels * expansion)
        self.fc2 = nn.Linear(channels * expansion, channels)
        self.gamma = nn.Parameter(torch.full((channels, ), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(F.gelu(x) if self.gelu_first else x).permute(0, 2, 3, 1)
        x = self.fc2(F.gelu(self.fc1(self.norm(x)))) * self.gamma
        return x.permute(0, 3, 1, 2)


class IDRAdaptBlock(nn.Module):
    """An adaptation block (``IDR_AB``): a quarter of the channels is modulated spatially by the spatial IDR and
    then mixed by a 5x5 partial convolution; the other three quarters are scaled per channel from their pooled
    values and the channel IDR; then a ConvNeXt branch, added to the block's input (A.2.1, step 1 and 2)."""

    def __init__(self, channels: int = 64, spatial_idr: int = 8, channel_idr: int = 48, split: int = 4):
        super().__init__()
        self.spatial = channels // split
        self.channel = channels - self.spatial
        self.mask_in = conv(spatial_idr + self.spatial, self.spatial, 1, bias=False)
        self.mask_out = conv(self.spatial, self.spatial, 3, bias=False)
        self.partial_conv = conv(self.spatial, self.spatial, 5, bias=False)
        self.scale_in = nn.Linear(self.channel + channel_idr, self.channel // 2, bias=False)
        self.scale_out = nn.Linear(self.channel // 2, self.channel, bias=False)
        self.mlp = ConvNeXtMLP(channels, gelu_first=True)

    def forward(self, x: torch.Tensor, ca: torch.Tensor, xk: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.split([self.spatial, self.channel], 1)
        mask = torch.sigmoid(self.mask_out(F.gelu(self.mask_in(torch.cat([xk, x1], 1)))))
        x1 = self.partial_conv(x1 * mask)
        scale = torch.sigmoid(self.scale_out(F.gelu(self.scale_in(torch.cat([x2.mean((2, 3)), ca], 1)))))
        x2 = x2 * scale[:, :, None, None]
        return x + self.mlp(torch.cat([x1, x2], 1))


class IDRAdaptGroup(nn.Module):
    """An adaptation group (``IDR_AG``): refines both IDRs residually (passed on to the next group), runs its
    blocks, one plain ConvNeXt block and a 3x3 conv, with a group residual (A.2.1)."""

    def __init__(self, channels: int = 64, blocks: int = 8, spatial_idr: int = 8, channel_idr: int = 48):
        super().__init__()
        self.refine_channel = nn.Sequential(nn.Linear(channel_idr, 2 * channel_idr), nn.GELU(),
                                            nn.Linear(2 * channel_idr, channel_idr), nn.GELU())
        self.refine_spatial = nn.Sequential(conv(spatial_idr, 2 * spatial_idr), nn.GELU(),
                                            conv(2 * spatial_idr, spatial_idr), nn.GELU())
        self.blocks = nn.ModuleList(IDRAdaptBlock(channels, spatial_idr, channel_idr) for _ in range(blocks))
        self.convnext = ConvNeXtMLP(channels)
        self.conv = conv(channels, channels)

    def forward(self, x: torch.Tensor, ca: torch.Tensor,
                xk: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ca = ca + self.refine_channel(ca)
        xk = xk + self.refine_spatial(xk)
        y = x
        for block in self.blocks:
            y = block(y, ca, xk)
        y = y + self.convnext(y)
        return x + self.conv(y), ca, xk


class LightBSRSR(nn.Module):
    """The SR network: mean shift, head, IDR converter, groups, long skip, EDSR x4 upsampler, tail (A.2.1)."""

    def __init__(self, channels: int = 64, groups: int = 8, blocks: int = 8, encoder_channels: int = 128,
                 channel_idr: int = 48, encoder_stride: int = 4, scale: int = 4):
        super().__init__()
        self.encoder_stride = encoder_stride
        self.register_buffer('mean', torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = conv(3, channels)
        self.to_channel_idr = nn.Sequential(nn.Linear(encoder_channels, channel_idr, bias=False), nn.GELU())
        spatial_idr = encoder_channels // encoder_stride**2
        self.spatial_idr_conv = conv(spatial_idr, spatial_idr)
        self.groups = nn.ModuleList(
            IDRAdaptGroup(channels, blocks, spatial_idr, channel_idr) for _ in range(groups))
        self.body_conv = conv(channels, channels)
        upsample = []
        for _ in range(int(scale).bit_length() - 1):  # x2 stages (EDSR's Upsampler for powers of two)
            upsample += [conv(channels, 4 * channels), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*upsample)
        self.tail = conv(channels, 3)

    def convert(self, fea: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The channel IDR ``ca`` (pool, linear, GELU) and the spatial IDR ``xk`` (pixel shuffle of the encoder's
        map to LR resolution, cropped to the LR size (A.2.1: the code's negative padding), 3x3 conv, GELU)."""
        ca = self.to_channel_idr(fea.mean((2, 3)))
        xk = F.pixel_shuffle(fea, self.encoder_stride)[..., :size[0], :size[1]]
        return ca, F.gelu(self.spatial_idr_conv(xk))

    def forward(self, x: torch.Tensor, fea: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sr, ca, xk)``: the converted IDRs are returned before the groups refine them (what is distilled)."""
        x = x - self.mean
        ca, xk = self.convert(fea, x.shape[-2:])
        feat = self.head(x)
        y, ca_refined, xk_refined = feat, ca, xk
        for group in self.groups:
            y, ca_refined, xk_refined = group(y, ca_refined, xk_refined)
        sr = self.tail(self.upsample(feat + self.body_conv(y))) + self.mean
        return sr, ca, xk


class IDREncoder(nn.Module):
    """Six 3x3 conv + BatchNorm + LeakyReLU(0.1) layers, two of stride 2: a 128-channel map at 1/4 of the LR size
    (A.2.2); the input is the LR image, with the teacher's prior channels concatenated."""

    def __init__(self, in_channels: int = 3, widths: Tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        layers, previous = [], in_channels
        for i, width in enumerate(widths):
            for stride in ((1, 1) if i == 0 else (2, 1)):
                layers += [conv(previous, width, stride=stride), nn.BatchNorm2d(width), nn.LeakyReLU(0.1, True)]
                previous = width
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def projection_head(channels: int, dim: int) -> nn.Sequential:
    """GAP -> linear -> LeakyReLU(0.1) -> linear: the teacher's contrastive embedding (A.2.2)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, dim), nn.LeakyReLU(0.1, True),
                         nn.Linear(dim, dim))


@ARCH_REGISTRY.register()
class LightBSR(nn.Module):
    """IDR encoder + SR network (module docstring). ``forward(lr, prior=None) -> sr``; with ``outputs`` it returns
    what training needs (``sr``, the IDRs ``ca`` / ``xk``, the teacher's contrastive ``logits``)."""

    @checked_init('LightBSR')  # upscale: the EDSR upsampler of powers of two
    def __init__(self, num_feat: int = 64, num_group: int = 8, num_block: int = 8, channel_idr: int = 48,
                 encoder_widths: Tuple[int, int, int] = (32, 64, 128), prior_channels: int = 0,
                 upscale: Literal[2, 4, 8] = 4,
                 contrastive: bool = False, dim: int = 128, queue_size: int = 8192, momentum: float = 0.999,
                 temperature: float = 0.07):
        super().__init__()
        if contrastive and prior_channels == 0:
            raise ValueError('contrastive: true is the teacher, which needs prior_channels > 0')
        self.prior_channels, self.upscale, self.num_feat = prior_channels, upscale, num_feat
        self.encoder = IDREncoder(3 + prior_channels, tuple(encoder_widths))
        self.sr = LightBSRSR(num_feat, num_group, num_block, encoder_widths[-1], channel_idr, 4, upscale)
        self.contrastive = contrastive
        if contrastive:
            self.momentum, self.temperature = momentum, temperature
            self.head = projection_head(encoder_widths[-1], dim)
            self.key_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            self.key_head = copy.deepcopy(self.head).requires_grad_(False)
            self.register_buffer('queue', F.normalize(torch.randn(dim, queue_size), dim=0))
            self.register_buffer('queue_ptr', torch.zeros(1, dtype=torch.long))

    def encoder_input(self, lr: torch.Tensor, prior: Optional[torch.Tensor]) -> torch.Tensor:
        """LR, with the teacher's prior (B, P) broadcast over the image as P extra channels."""
        if self.prior_channels == 0:
            return lr
        if prior is None or prior.shape != (lr.shape[0], self.prior_channels):
            raise ValueError(f'this LightBSR teacher needs a degradation prior of shape ({lr.shape[0]}, '
                             f'{self.prior_channels}), got {None if prior is None else tuple(prior.shape)}')
        return torch.cat([lr, prior[:, :, None, None].expand(-1, -1, *lr.shape[-2:]).to(lr.dtype)], 1)

    def representations(self, lr: torch.Tensor,
                        prior: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(fea, ca, xk)``: the encoder's map and the converted channel and spatial IDRs."""
        fea = self.encoder(self.encoder_input(lr, prior))
        return (fea, ) + self.sr.convert(fea, lr.shape[-2:])

    def forward(self, lr: torch.Tensor, prior: Optional[torch.Tensor] = None, outputs: Optional[Sequence[str]] = None,
                patches: int = 1):
        """Without ``outputs``: the SR image (inference, export). With ``outputs`` (a subset of ``sr``, ``idr``,
        ``logits``): a dict for training, computed here so that DDP, which synchronises what ``forward`` computes,
        sees every term. The rows of ``lr`` (and ``prior``) are ``patches`` groups of crops that share their
        degradation row-wise; ``sr``, ``ca`` and ``xk`` are of the first group, ``logits`` over all groups."""
        if outputs is None:
            return self.sr(lr, self.encoder(self.encoder_input(lr, prior)))[0]
        groups = self.encoder_input(lr, prior).chunk(patches)
        if 'logits' in outputs:
            if not self.contrastive:
                raise ValueError('contrastive logits need a teacher built with contrastive: true')
            maps = [self.encoder(group) for group in groups]
            result: Dict[str, torch.Tensor] = {'logits': self.contrastive_logits(maps, groups)}
            first = maps[0]
        else:
            result, first = {}, self.encoder(groups[0])
        first_lr = lr.chunk(patches)[0]
        if 'sr' in outputs:
            result['sr'], result['ca'], result['xk'] = self.sr(first_lr, first)
        elif 'idr' in outputs:
            result['ca'], result['xk'] = self.sr.convert(first, first_lr.shape[-2:])
        return result

    def contrastive_logits(self, maps: List[torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """MoCo logits over patches that share a degradation (He et al., CVPR 2020; LightBSR A.3.2).

        For every ordered pair (i, j), i != j, of the N patch groups: ``[q_i . k_j, q_i . queue] / T`` with
        ``q_i = normalize(head(map_i))`` and ``k_j = normalize(key_head(key_encoder(input_j)))`` (no gradient), so the
        positive is column 0 (``InfoNCELoss``). In training, the key encoder first moves toward the query encoder,
        ``theta_k <- m theta_k + (1 - m) theta_q``, and the keys of patch 0 are enqueued after (all ranks' keys
        under DDP). Returns (N (N - 1) B, 1 + queue_size) logits.
        """
        queries = [F.normalize(self.head(m), dim=1) for m in maps]
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            keys = [F.normalize(self.key_head(self.key_encoder(x)), dim=1) for x in inputs]
        queue = self.queue.clone().to(queries[0].dtype)
        logits = [torch.cat([(queries[i] * keys[j].to(queries[i].dtype)).sum(1, keepdim=True), queries[i] @ queue], 1)
                  for i, j in itertools.permutations(range(len(maps)), 2)]
        if self.training:
            self.enqueue(keys[0])
        return torch.cat(logits) / self.temperature

    @torch.no_grad()
    def momentum_update(self) -> None:
        for query, key in ((self.encoder, self.key_encoder), (self.head, self.key_head)):
            for q, k in zip(query.parameters(), key.parameters()):
                k.mul_(self.momentum).add_(q.detach(), alpha=1 - self.momentum)
            for q, k in zip(query.buffers(), key.buffers()):
                k.copy_(q)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (all ranks' under DDP) into the queue at its pointer, wrapping around."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, keys.contiguous())
            keys = torch.cat(gathered)
        size, start = self.queue.shape[1], int(self.queue_ptr)
        index = (torch.arange(keys.shape[0], device=keys.device) + start) % size
        self.queue[:, index] = keys.t().to(self.queue.dtype)
        self.queue_ptr[0] = (start + keys.shape[0]) % size
