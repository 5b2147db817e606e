"""Targeted feature denoising, attached to any SR network's features (our reading of Wang et al., "Not All
Degradations Are Equal", arXiv 2509.14841; the paper's layers are not public: ``docs/TFD.md`` says what is ours).

A noise detector reads the tapped feature and gives a logit (per image, optionally per pixel); a dual-path
(spatial + frequency) denoiser predicts the feature's noise component, and the module returns the feature minus
the gated prediction, so clean inputs pass unchanged. In ``training_only`` mode nothing is subtracted: the
detector and the twin-feature loss act on the backbone's own features, and inference uses the bare network.
"""
import math
from typing import Literal, Optional

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from gsr.utils.errors import GsrError
from gsr.utils.options import checked_init


def log_energy(x: torch.Tensor, dims) -> torch.Tensor:
    """log(mean(x²) + 1e-12) over ``dims``, in float32 (features can be small: the epsilon is below them)."""
    return torch.log(x.float().pow(2).mean(dims) + 1e-12)


class NoiseDetector(nn.Module):
    """A logit per image (and, with ``pixel_map``, per position) that the feature carries noise.

    r = f − mean₃ₓ₃(f), the high-pass residual where i.i.d. noise lives and smooth content does not; then conv3x3
    (C -> C/2), LReLU, conv3x3 stride 2, LReLU (proposal §5.3), and log-energy pooling log(mean z²) per channel ->
    BatchNorm -> linear. The fixed high-pass front end, the energy pooling and the normalisation are ours: with plain
    average pooling the same layers stayed at chance, as noise raises the variance of features, not their mean, and
    without the normalisation the head's bias had to travel to the log-energies' level before anything was learnt
    (tests/test_tfd.py shows the detector learning). The per-pixel head: a 1x1 conv on log(mean₃ₓ₃ r²).
    """

    def __init__(self, num_feat: int, pixel_map: bool = False):
        super().__init__()
        hidden = max(num_feat // 2, 4)
        self.body = nn.Sequential(
            nn.Conv2d(num_feat, hidden, 3, 1, 1), nn.LeakyReLU(0.1, True), nn.Conv2d(hidden, hidden, 3, 2, 1),
            nn.LeakyReLU(0.1, True))
        self.norm = nn.BatchNorm1d(hidden)
        self.image_head = nn.Linear(hidden, 1)
        self.pixel_head = nn.Conv2d(num_feat, 1, 1) if pixel_map else None

    def forward(self, f: torch.Tensor):
        residual = f - F.avg_pool2d(f, 3, 1, 1, count_include_pad=False)
        image_logit = self.image_head(self.norm(log_energy(self.body(residual), (2, 3))).to(f.dtype)).squeeze(1)
        if self.pixel_head is None:
            return image_logit, None
        local = torch.log(F.avg_pool2d(residual.float().pow(2), 3, 1, 1, count_include_pad=False) + 1e-12)
        return image_logit, self.pixel_head(local.to(f.dtype))


class FrequencyPath(nn.Module):
    """``rfft2`` -> a learnable 1x1 mixing of the stacked real and imaginary parts of every channel -> a learnable
    radial soft mask (sigmoid of a per-band logit, initialised to pass everything) -> ``irfft2``. Computed in
    float32 whatever the autocast dtype: FFTs of half-precision features lose too much and some backends refuse them.
    """

    def __init__(self, num_feat: int, bands: int = 8):
        super().__init__()
        self.mix = nn.Conv2d(2 * num_feat, 2 * num_feat, 1)
        self.band_logits = nn.Parameter(torch.full((bands, ), 4.0))  # sigmoid(4) ~ 0.98: pass everything

    def radial_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Per rfft2 bin, the soft weight of its radial band (bands of equal width up to the Nyquist radius).

        The bin frequencies are ``torch.fft.fftfreq(h)`` and ``rfftfreq(w)`` written with ``arange``: those two
        take the size as a Python number, which fixes it when the network is traced, so ``gsr export`` could not
        give the ONNX graph a dynamic height and width."""
        k = torch.arange(h, device=device, dtype=torch.float32)
        fy = (torch.where(k < (h + 1) // 2, k, k - h) / h)[:, None]
        fx = (torch.arange(w // 2 + 1, device=device, dtype=torch.float32) / w)[None, :]
        radius = torch.sqrt(fy**2 + fx**2) / math.sqrt(0.5)
        band = (radius * len(self.band_logits)).long().clamp(max=len(self.band_logits) - 1)
        return torch.sigmoid(self.band_logits.float())[band]

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        with torch.autocast(f.device.type, enabled=False):
            x = f.float()
            h, w = x.shape[-2:]
            spectrum = torch.fft.rfft2(x, norm='ortho')
            mixed = F.conv2d(torch.cat([spectrum.real, spectrum.imag], 1), self.mix.weight.float(),
                             self.mix.bias.float())
            real, imag = mixed.chunk(2, dim=1)
            spectrum = torch.complex(real, imag) * self.radial_mask(h, w, x.device)
            return torch.fft.irfft2(spectrum, s=(h, w), norm='ortho').to(f.dtype)


class FeatureDenoiser(nn.Module):
    """Predicted noise component n̂ = fuse([spatial(f), frequency(f)]): spatial = depthwise 3x3, pointwise,
    LReLU, pointwise; fuse = 1x1 conv, zero-initialised so that n̂ = 0 at the start (proposal §5.4)."""

    def __init__(self, num_feat: int):
        super().__init__()
        self.spatial = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1, groups=num_feat), nn.Conv2d(num_feat, num_feat, 1),
            nn.LeakyReLU(0.1, True), nn.Conv2d(num_feat, num_feat, 1))
        self.frequency = FrequencyPath(num_feat)
        self.fuse = nn.Conv2d(2 * num_feat, num_feat, 1)
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.spatial(f), self.frequency(f)], 1))


@ARCH_REGISTRY.register()
class TargetedFeatureDenoising(nn.Module):
    """Attached module (``attach: {tfd: {type: TargetedFeatureDenoising, num_feat, ...}}``).

    ``inline``: f' = f − g · n̂ with g = σ(detector logit) per image (per pixel with ``pixel_map``), n̂ from the
    ``FeatureDenoiser``. ``training_only``: f' = f (the module only detects; drop it at inference with
    ``inference: false``). ``detach_detector``: the detector reads a stop-gradient copy, so its loss does not push
    the backbone to encode noise. ``detector_layer``: the detector reads the output of that earlier backbone layer
    (``detector_channels`` wide, ``num_feat`` by default) instead of the feature it gates: the twin loss strips the
    noise from the gated feature, so a detector reading it loses its evidence as that loss succeeds. Every
    training forward records ``input``, ``logit``, ``pixel_logit`` and (inline) ``output`` and ``removed`` (g · n̂)
    for the losses (``LossContext.records``). In inline mode the gate is not detached: the pixel and twin losses
    train the detector through it, besides its own loss.
    """

    @checked_init('TargetedFeatureDenoising')
    def __init__(self, num_feat: int = 64, mode: Literal['inline', 'training_only'] = 'inline',
                 detach_detector: bool = True, pixel_map: bool = False, detector_layer: Optional[str] = None,
                 detector_channels: Optional[int] = None):
        super().__init__()
        self.num_feat, self.mode, self.detach_detector = num_feat, mode, detach_detector
        self.observed_layer = detector_layer  # AttachedNetwork calls ``observe`` with that layer's output
        self.detector_channels = detector_channels or num_feat
        self.detector = NoiseDetector(self.detector_channels, pixel_map)
        self.denoiser = FeatureDenoiser(num_feat) if mode == 'inline' else None
        self.record = {}
        self.observed: Optional[torch.Tensor] = None

    def observe(self, x: torch.Tensor) -> None:
        """The ``detector_layer`` output of the current forward pass (read, then dropped, by ``forward``)."""
        self.observed = x

    def detector_input(self, f: torch.Tensor) -> torch.Tensor:
        if self.observed_layer is None:
            source = f
        elif self.observed is None or self.observed.shape[0] != f.shape[0]:
            raise GsrError(f'TargetedFeatureDenoising: detector_layer {self.observed_layer!r} produced nothing for '
                           'this forward pass: it must run before the layer the module is attached to')
        else:
            source, self.observed = self.observed, None
        return source.detach() if self.detach_detector else source

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        logit, pixel_logit = self.detector(self.detector_input(f))
        if self.training:
            self.record = {'input': f, 'logit': logit}
            if pixel_logit is not None:
                self.record['pixel_logit'] = pixel_logit
        if self.denoiser is None:
            return f
        if pixel_logit is not None and pixel_logit.shape[-2:] != f.shape[-2:]:
            pixel_logit = F.interpolate(pixel_logit, size=f.shape[-2:], mode='bilinear', align_corners=False)
        gate = torch.sigmoid(pixel_logit if pixel_logit is not None else logit[:, None, None, None])
        removed = gate.to(f.dtype) * self.denoiser(f)
        out = f - removed
        if self.training:
            self.record.update(output=out, removed=removed)
        return out
