"""MSRN (Li et al., "Multi-scale Residual Network for Image Super-Resolution", ECCV 2018)."""
import torch
from basicsr.archs.arch_util import Upsample
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


class MultiScaleResidualBlock(nn.Module):
    """MSRB (Sec. 3.1): two rounds of parallel 3x3 / 5x5 convs that exchange features, fused by a 1x1 conv.

    S1 = σ(w3 * x), P1 = σ(w5 * x); S2 = σ(w3' * [S1, P1]), P2 = σ(w5' * [S1, P1]); out = w1 * [S2, P2] + x.
    """

    def __init__(self, num_feat: int = 64):
        super().__init__()
        self.conv3_1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv5_1 = nn.Conv2d(num_feat, num_feat, 5, 1, 2)
        self.conv3_2 = nn.Conv2d(num_feat * 2, num_feat * 2, 3, 1, 1)
        self.conv5_2 = nn.Conv2d(num_feat * 2, num_feat * 2, 5, 1, 2)
        self.fuse = nn.Conv2d(num_feat * 4, num_feat, 1, 1, 0)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1, p1 = self.relu(self.conv3_1(x)), self.relu(self.conv5_1(x))
        mixed = torch.cat([s1, p1], 1)
        s2, p2 = self.relu(self.conv3_2(mixed)), self.relu(self.conv5_2(mixed))
        return self.fuse(torch.cat([s2, p2], 1)) + x


@ARCH_REGISTRY.register()
class MSRN(nn.Module):
    """MSRN (Sec. 3.2): head conv, ``num_block`` MSRBs, hierarchical feature fusion of the head and every block
    output (1x1 then 3x3 conv), pixel-shuffle upsampling and ``conv_last`` (the layer gsr's feature tap reads).

    Images are in [0, 1]; like BasicSR's SwinIR the DIV2K mean is subtracted (``img_range`` scales it).
    """

    def __init__(self,
                 num_in_ch: int = 3,
                 num_out_ch: int = 3,
                 num_feat: int = 64,
                 num_block: int = 8,
                 upscale: int = 4,
                 img_range: float = 1.,
                 rgb_mean=(0.4488, 0.4371, 0.4040)):
        super().__init__()
        self.img_range = img_range
        self.register_buffer('mean',
                             torch.tensor(rgb_mean).view(1, 3, 1, 1) if num_in_ch == 3 else torch.zeros(1, 1, 1, 1))
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.ModuleList(MultiScaleResidualBlock(num_feat) for _ in range(num_block))
        self.fusion = nn.Sequential(
            nn.Conv2d(num_feat * (num_block + 1), num_feat, 1, 1, 0), nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.img_range
        feat = self.conv_first(x)
        outs = [feat]
        for block in self.body:
            outs.append(block(outs[-1]))
        out = self.conv_last(self.upsample(self.fusion(torch.cat(outs, 1))))
        return out / self.img_range + self.mean
