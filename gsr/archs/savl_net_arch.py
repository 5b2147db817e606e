"""SAVL's SR network (ICLR 2026, OpenReview IOmPy7P1y4): a residual hybrid-attention backbone whose blocks are each
preceded by a degradation-guided modulation (DSCA): channel-wise from the posterior mean, spatially from the
variance-derived severity map. The paper builds on HAT; its layer details are not public, so these blocks are the
PROPOSAL of ``shared/research/lightbsr_and_savl.md`` B.7.4, our reading (``docs/SAVL.md``): Swin-style (shifted)
window attention with a relative position bias and HAT's parallel channel-attention conv branch; no OCAB.
"""
from typing import Optional, Sequence, Tuple

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from gsr.archs.savl_arch import SAVLEstimator

SPATIAL_MODES = ('bias', 'multiply')


def severity_map(log_var: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """s(u) = 1 - (v(u) - mean v) / Var v with v = sigma^2 averaged over the latent dimensions and the statistics
    taken over each image (SAVL Sec. 3.4 as reported), clamped to [-1, 3] for stability (our reading). (N, 1, h, w)."""
    v = log_var.exp().mean(1, keepdim=True)
    mean, var = v.mean((2, 3), keepdim=True), v.var((2, 3), keepdim=True)
    return (1 - (v - mean) / (var + eps)).clamp(-1, 3)


def windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N * H/size * W/size, size * size, C)."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // size, size, w // size, size).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, size * size, c)


def merge_windows(x: torch.Tensor, size: int, shape: Tuple[int, int, int, int]) -> torch.Tensor:
    n, c, h, w = shape
    x = x.view(n, h // size, w // size, size, size, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, c, h, w)


class DegradationModulation(nn.Module):
    """DSCA's channel path: features scaled by ``2 sigmoid(MLP(GAP(conv3x3(mu))))``; the last layer starts at zero,
    so the modulation starts as the identity (our reading of "per-channel modulation vectors from the mean")."""

    def __init__(self, num_feat: int, latent_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(latent_dim, num_feat, 3, padding=1)
        self.mlp = nn.Sequential(nn.Linear(num_feat, num_feat // 2), nn.GELU(), nn.Linear(num_feat // 2, num_feat))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        scale = 2 * torch.sigmoid(self.mlp(self.conv(mean).mean((2, 3))))
        return x * scale[:, :, None, None]


class SeverityWindowAttention(nn.Module):
    """Multi-head self-attention in windows with a relative position bias (Swin), and DSCA's spatial path: pixels of
    similar severity attend to each other more, through ``-gamma_h |s_i - s_j|`` added to the logits (``bias``) or
    ``(1 - gamma_h |s_i - s_j|)`` multiplied into the renormalised attention (``multiply``); gamma_h >= 0 per head,
    starting at 0 (identity at initialisation)."""

    def __init__(self, num_feat: int, window_size: int, num_heads: int, spatial_mode: str = 'bias'):
        super().__init__()
        if spatial_mode not in SPATIAL_MODES:
            raise ValueError(f'spatial_mode must be bias or multiply, got {spatial_mode!r}')
        self.num_heads, self.window_size, self.spatial_mode = num_heads, window_size, spatial_mode
        self.scale = (num_feat // num_heads)**-0.5
        self.qkv = nn.Linear(num_feat, 3 * num_feat)
        self.proj = nn.Linear(num_feat, num_feat)
        self.relative_bias = nn.Parameter(torch.zeros((2 * window_size - 1)**2, num_heads))
        nn.init.trunc_normal_(self.relative_bias, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
        relative = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]) + window_size - 1
        self.register_buffer('relative_index', relative[0] * (2 * window_size - 1) + relative[1], persistent=False)
        self.gamma = nn.Parameter(torch.zeros(num_heads))

    def forward(self, x: torch.Tensor, severity: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``x``: (B, L, C) windows; ``severity``: (B, L); ``mask``: (windows per image, L, L) or None."""
        b, length, c = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        logits = logits + self.relative_bias[self.relative_index].permute(2, 0, 1)[None]
        if mask is not None:
            logits = (logits.view(-1, mask.shape[0], self.num_heads, length, length) +
                      mask[None, :, None]).view(b, self.num_heads, length, length)
        gap = (severity[:, None, :, None] - severity[:, None, None, :]).abs() * self.gamma.clamp(min=0)[None, :, None,
                                                                                                        None]
        if self.spatial_mode == 'bias':
            attention = (logits - gap).softmax(-1)
        else:
            attention = logits.softmax(-1) * (1 - gap).clamp(min=0)
            attention = attention / attention.sum(-1, keepdim=True).clamp(min=1e-6)
        return self.proj((attention @ v).transpose(1, 2).reshape(b, length, c))


class HybridAttentionBlock(nn.Module):
    """DSCA, then (shifted) window attention with HAT's parallel channel-attention conv branch (weight 0.01), then an
    MLP, each residual with a LayerNorm in front."""

    def __init__(self, num_feat: int, latent_dim: int, window_size: int, num_heads: int, shift: int,
                 spatial_mode: str, mlp_ratio: float = 2.0):
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.modulation = DegradationModulation(num_feat, latent_dim)
        self.norm1 = nn.LayerNorm(num_feat)
        self.attention = SeverityWindowAttention(num_feat, window_size, num_heads, spatial_mode)
        squeeze = max(num_feat // 16, 1)
        self.channel_branch = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // 3 or 1, 3, padding=1), nn.GELU(), nn.Conv2d(num_feat // 3 or 1, num_feat, 3,
                                                                                        padding=1),
            ChannelAttention(num_feat, squeeze))
        self.norm2 = nn.LayerNorm(num_feat)
        hidden = int(num_feat * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(num_feat, hidden), nn.GELU(), nn.Linear(hidden, num_feat))

    def forward(self, x: torch.Tensor, mean: torch.Tensor, severity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask``: ``shift_mask`` of the feature size, used by the shifted blocks."""
        x = self.modulation(x, mean)
        n, c, h, w = x.shape
        normed = self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        shifted, sev = normed, severity
        if self.shift:
            shifted = torch.roll(normed, (-self.shift, -self.shift), (2, 3))
            sev = torch.roll(severity, (-self.shift, -self.shift), (2, 3))
        out = self.attention(windows(shifted, self.window_size), windows(sev, self.window_size)[..., 0],
                             mask if self.shift else None)
        out = merge_windows(out, self.window_size, (n, c, h, w))
        if self.shift:
            out = torch.roll(out, (self.shift, self.shift), (2, 3))
        x = x + out + 0.01 * self.channel_branch(normed)
        y = x.permute(0, 2, 3, 1)
        return x + self.mlp(self.norm2(y)).permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (HAT's CAB ends with it)."""

    def __init__(self, num_feat: int, squeeze: int):
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, squeeze, 1), nn.ReLU(True),
                                  nn.Conv2d(squeeze, num_feat, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


def shift_mask(h: int, w: int, size: int, shift: int, device: torch.device) -> torch.Tensor:
    """Swin's mask for shifted windows: -100 between positions that come from different regions after the roll.
    Built from index comparisons (rows and columns in [0, h - size), [h - size, h - shift), [h - shift, h) are
    regions 0, 1, 2), so an exported graph keeps height and width dynamic. (nW, size^2, size^2)."""

    def region(n: int) -> torch.Tensor:
        index = torch.arange(n, device=device)
        return (index >= n - size).long() + (index >= n - shift).long()

    regions = (region(h)[:, None] * 3 + region(w)[None, :]).float()[None, None]
    ids = windows(regions, size)[..., 0]
    return (ids[:, :, None] != ids[:, None, :]).float() * -100.0


@ARCH_REGISTRY.register()
class SAVLNet(nn.Module):
    """Estimator + SR network: ``forward(lr) -> sr``. The estimator (``SAVLEstimator``) gives mu and log sigma^2 at LR
    resolution; every block is modulated by mu (channels) and the severity map of sigma^2 (attention); groups of
    ``depths[i]`` blocks with a conv and a residual each, a long skip, pixel-shuffle x``upscale``. The defaults are
    the paper-size configuration (14.2 M parameters against the paper's 14.0 M)."""

    def __init__(self, num_feat: int = 128, depths: Sequence[int] = (6, 6, 6, 6, 6, 6), num_heads: int = 8,
                 window_size: int = 16, latent_dim: int = 64, estimator_feat: int = 64, upscale: int = 4,
                 spatial_mode: str = 'bias', img_range: float = 1.0):
        super().__init__()
        self.window_size, self.upscale, self.img_range = window_size, upscale, img_range
        self.estimator = SAVLEstimator(3, estimator_feat, latent_dim)
        self.conv_first = nn.Conv2d(3, num_feat, 3, padding=1)
        self.groups = nn.ModuleList()
        self.group_convs = nn.ModuleList()
        for depth in depths:
            self.groups.append(nn.ModuleList(
                HybridAttentionBlock(num_feat, latent_dim, window_size, num_heads, (i % 2) * (window_size // 2),
                                     spatial_mode) for i in range(depth)))
            self.group_convs.append(nn.Conv2d(num_feat, num_feat, 3, padding=1))
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        upsample = []
        for _ in range(int(upscale).bit_length() - 1):
            upsample += [nn.Conv2d(num_feat, 4 * num_feat, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*upsample)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, padding=1)

    def forward(self, lr: torch.Tensor, with_posterior: bool = False):
        """The SR image; with ``with_posterior`` (training, so that DDP sees the estimator's outputs) also the
        posterior ``(sr, mean, log_var)``. The LR size must be a multiple of ``window_size`` (gsr's inference pads
        to it, ``size_multiple``)."""
        mean, log_var = self.estimator(lr)
        sr = self.super_resolve(lr, mean, log_var)
        return (sr, mean, log_var) if with_posterior else sr

    def super_resolve(self, lr: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        severity = severity_map(log_var)
        feat = self.conv_first(lr * self.img_range)
        mask = shift_mask(lr.shape[2], lr.shape[3], self.window_size, self.window_size // 2, lr.device)
        x = feat
        for blocks, conv in zip(self.groups, self.group_convs):
            y = x
            for block in blocks:
                y = block(y, mean, severity, mask)
            x = x + conv(y)
        x = feat + self.conv_after_body(x)
        return self.conv_last(self.upsample(x)) / self.img_range
