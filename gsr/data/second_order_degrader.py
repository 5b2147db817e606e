"""Batched, device-agnostic Real-ESRGAN second-order degradation that records what it applied.

The pipeline is Real-ESRNet's ``feed_data`` (BasicSR ``realesrnet_model.py``; Wang et al., Real-ESRGAN,
ICCVW 2021, Sec. 3): blur -> resize -> noise -> JPEG, a second blur/resize/noise stage, then
[resize -> sinc -> JPEG] or [JPEG -> resize -> sinc] and 8-bit quantisation. It reuses BasicSR's
``filter2D``, ``DiffJPEG`` and noise generators and runs on whatever device the GT batch is on.

All random draws are made first (``sample``) and then applied (``apply``). The draws are returned as
per-sample label tensors, and applying the same draws with ``add_noise=False`` gives the noise-free twin.
Label names: ``blur1_<field>``/``blur2_<field>`` (``kernels.KERNEL_INFO_FIELDS``), ``blur2_applied``,
``resize{1,2}_scale``, ``resize{1,2}_mode`` (index into ``RESIZE_MODES``), ``noise{1,2}_kind``
(0 none, 1 Gaussian, 2 Poisson), ``noise{1,2}_sigma`` (Gaussian sigma in 0-255 units, 0 unless
applied), ``noise{1,2}_poisson_scale``, ``noise{1,2}_gray``, ``jpeg{1,2}_quality``, ``jpeg{1,2}_applied`` (1 where
the stage's JPEG ran), ``final_order`` (0: resize-sinc-JPEG, 1: JPEG-resize-sinc), ``final_resize_mode``,
``sinc_applied``, ``sinc_omega_c``.
"""
import math
import random
from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from basicsr.data.degradations import generate_gaussian_noise_pt, generate_poisson_noise_pt
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D

from gsr.data.kernels import KERNEL_INFO_FIELDS
from gsr.utils.errors import GsrError
from gsr.utils.options import check_fraction, check_probabilities, check_range, option

RESIZE_MODES = ('area', 'bilinear', 'bicubic')


@dataclass
class DegradationOptions:
    """The model's ``degradation:`` block. Defaults are Real-ESRNet x4plus's (``train_realesrnet_x4plus.yml``)."""
    gt_usm: bool = option(True, 'unsharp-mask the GT; the sharpened GT is both the target and the input of the '
                          'degradation')
    usm_weight: float = option(0.5, 'USM weight (BasicSR `USMSharp`)')
    usm_radius: int = option(50, 'USM Gaussian kernel size')
    usm_threshold: float = option(10., 'USM mask threshold (0-255 units)')
    resize_prob: List[float] = option(doc='stage 1: probabilities of up / down / keep', factory=lambda: [0.2, 0.7, 0.1])
    resize_range: Tuple[float, float] = option((0.15, 1.5), 'stage 1: the range of the resize scale')
    gaussian_noise_prob: float = option(0.5, 'stage 1: Gaussian (else Poisson) noise, chosen per batch')
    noise_range: Tuple[float, float] = option((1., 30.), 'stage 1: Gaussian noise sigma (0-255 units), per sample')
    poisson_scale_range: Tuple[float, float] = option((0.05, 3.), 'stage 1: Poisson noise scale, per sample')
    gray_noise_prob: float = option(0.4, 'stage 1: probability of gray (one channel) noise, per sample')
    jpeg_range: Tuple[float, float] = option((30., 95.), 'stage 1: JPEG quality, per sample')
    second_blur_prob: float = option(0.8, 'probability of the second blur (per batch)')
    resize_prob2: List[float] = option(doc='stage 2: probabilities of up / down / keep',
                                       factory=lambda: [0.3, 0.4, 0.3])
    resize_range2: Tuple[float, float] = option((0.3, 1.2), 'stage 2: the range of the resize scale')
    gaussian_noise_prob2: float = option(0.5, 'stage 2: Gaussian (else Poisson) noise, chosen per batch')
    noise_range2: Tuple[float, float] = option((1., 25.), 'stage 2: Gaussian noise sigma (0-255 units), per sample')
    poisson_scale_range2: Tuple[float, float] = option((0.05, 2.5), 'stage 2: Poisson noise scale, per sample')
    gray_noise_prob2: float = option(0.4, 'stage 2: probability of gray noise, per sample')
    jpeg_range2: Tuple[float, float] = option((30., 95.), 'final JPEG quality, per sample')
    final_order_prob: float = option(0.5, 'probability of the final order resize → sinc → JPEG (else JPEG → resize → '
                                     'sinc)')
    noise_prob: float = option(1.0, 'probability, per sample and stage, that noise is added at all (1.0 reproduces '
                               'Real-ESRGAN)')
    jpeg_prob: float = option(1.0, "probability, per sample and stage, that the stage's JPEG compression is applied "
                              '(1.0 reproduces Real-ESRGAN, which compresses every sample twice)')
    second_order_prob: float = option(
        1.0, 'probability, per batch, that the second stage (first JPEG, second blur, resize and noise) runs; '
        'otherwise the batch is first-order, as `RealESRNetModel_onedegra` of the Dropout paper\'s code: blur, resize '
        'and noise once, then the final resize, sinc and JPEG (the skipped steps are labelled not applied; 1.0 is '
        'Real-ESRGAN and draws nothing)')
    first_order_noise: Literal['stage', 'lr'] = option(
        'stage', 'where a first-order batch (`second_order_prob` < 1) adds its noise: `stage`, after the stage\'s '
        'random resize and before the final resize (`RealESRNetModel_onedegra`; the final resize then shrinks and '
        'correlates it, docs/SCALING.md), or `lr`, after the final resize and sinc, white at the LR resolution as the '
        'protocol\'s noise (before the JPEG in the resize-sinc-JPEG order); second-order batches are unchanged')

    def __post_init__(self):
        for stage in ('', '2'):
            check_probabilities(f'resize_prob{stage}', getattr(self, f'resize_prob{stage}'), 3)
            check_range(f'resize_range{stage}', getattr(self, f'resize_range{stage}'), 1e-3)
            check_range(f'noise_range{stage}', getattr(self, f'noise_range{stage}'), 0)
            check_range(f'poisson_scale_range{stage}', getattr(self, f'poisson_scale_range{stage}'), 0)
            check_range(f'jpeg_range{stage}', getattr(self, f'jpeg_range{stage}'), 1, 100)
        for name in ('gaussian_noise_prob', 'gaussian_noise_prob2', 'gray_noise_prob', 'gray_noise_prob2',
                     'second_blur_prob', 'final_order_prob', 'noise_prob', 'jpeg_prob', 'second_order_prob'):
            check_fraction(name, getattr(self, name))


POISSON_STD_PER_SCALE = 255 * math.sqrt(0.5 / 256)  # ~ 11.3 (see effective_noise_std)


def effective_noise_std(labels: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Per sample, the noise of both stages as one standard deviation in 0-255 units (TFD proposal §5.1):

    s_eff = sqrt(s_1² + s_2²), s_k = the Gaussian sigma of stage k, or for Poisson noise its std at mean intensity
    0.5: BasicSR adds scale·(poisson(v·I)/v − I) with v = 256 levels for 8-bit content, whose std at I = 0.5 is
    scale·sqrt(0.5/256), i.e. 11.3·scale in 0-255 units. An approximation where stage-1 noise is resized afterwards
    (second-order batches, and first-order ones with ``first_order_noise: stage``).
    """
    stages = [labels[f'noise{k}_sigma'] + POISSON_STD_PER_SCALE * labels[f'noise{k}_poisson_scale'] for k in (1, 2)]
    return torch.sqrt(stages[0]**2 + stages[1]**2)


def reflect_filter_matrix(taps: torch.Tensor, n: int) -> torch.Tensor:
    """The n x n matrix M with (M x) = conv1d(reflect_pad(x), taps) for a length-n signal x.

    Output i sums taps[k + r]·x[reflect(i + k)] for k in [-r, r]; reflect(s) = |s| below 0 and 2(n-1) - s
    above n - 1 (PyTorch's 'reflect' padding), so the padding is folded into the matrix.
    """
    r = taps.numel() // 2
    index = (torch.arange(n, device=taps.device)[:, None] + torch.arange(-r, r + 1, device=taps.device)).abs()
    index = torch.where(index > n - 1, 2 * (n - 1) - index, index)
    return torch.zeros(n, n, dtype=taps.dtype, device=taps.device).scatter_add_(1, index, taps.expand(n, -1))


class SeparableUSMSharp(USMSharp):
    """BasicSR's ``USMSharp`` with the Gaussian blur done as two 1-D passes, each one matrix product.

    The 2-D kernel is the outer product ``g gᵀ`` of OpenCV's 1-D Gaussian ``g``, so blurring image X with
    reflect padding equals ``M_h X M_wᵀ`` with ``M_n = reflect_filter_matrix(g, n)``: the same result as
    BasicSR's 51x51 ``filter2D`` (to float rounding), computed with dense matrix products, which run far
    faster than a 51-tap convolution on CPUs and GPUs alike. Sharpening:
    ``out = m·clip(I + w(I − G*I)) + (1 − m)·I`` with the soft mask ``m = G * 1[|I − G*I|·255 > t]``.
    """

    def __init__(self, radius: int = 50, sigma: float = 0):
        super().__init__(radius, sigma)
        taps = cv2.getGaussianKernel(self.radius, sigma).reshape(-1)
        self.register_buffer('taps', torch.tensor(taps, dtype=torch.float32))
        self._matrices: Dict[Tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def _matrix(self, n: int, like: torch.Tensor) -> torch.Tensor:
        key = (n, like.device, like.dtype)
        if key not in self._matrices:
            self._matrices[key] = reflect_filter_matrix(self.taps.to(like), n)
        return self._matrices[key]

    def blur(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        return self._matrix(h, img) @ img @ self._matrix(w, img).t()

    def forward(self, img: torch.Tensor, weight: float = 0.5, threshold: float = 10) -> torch.Tensor:
        residual = img - self.blur(img)
        soft_mask = self.blur((residual.abs() * 255 > threshold).float())
        sharp = torch.clip(img + weight * residual, 0, 1)
        return soft_mask * sharp + (1 - soft_mask) * img


def _batch_choice(values: List, probs: Optional[List[float]] = None):
    return random.choices(values, probs)[0] if probs else random.choice(values)


def _resize_scale(prob: List[float], scale_range: Tuple[float, float]) -> float:
    kind = _batch_choice(['up', 'down', 'keep'], prob)
    if kind == 'up':
        return float(np.random.uniform(1, scale_range[1]))
    if kind == 'down':
        return float(np.random.uniform(scale_range[0], 1))
    return 1.


class SecondOrderDegrader(torch.nn.Module):
    """Degrades a GT batch the Real-ESRGAN way and returns labels of every draw (see module docstring)."""

    def __init__(self, opt: DegradationOptions, scale: int = 4):
        super().__init__()
        self.opt = opt
        self.scale = scale
        self.jpeger = DiffJPEG(differentiable=False)
        self.usm = SeparableUSMSharp(opt.usm_radius)

    def sharpen(self, gt: torch.Tensor) -> torch.Tensor:
        """Unsharp-mask the GT when ``gt_usm`` is on (Real-ESRNet trains on, and degrades, the sharpened GT)."""
        if not self.opt.gt_usm:
            return gt
        return self.usm(gt, self.opt.usm_weight, self.opt.usm_threshold)

    # ------------------------------------------------------------------------------------------- draws
    def _noise_draws(self, b: int, device, stage: str) -> Dict[str, torch.Tensor]:
        o = self.opt
        suffix = '2' if stage == '2' else ''
        gaussian = np.random.uniform() < getattr(o, f'gaussian_noise_prob{suffix}')
        applied = (torch.rand(b, device=device) < o.noise_prob).float()
        lo, hi = getattr(o, f'noise_range{suffix}') if gaussian else getattr(o, f'poisson_scale_range{suffix}')
        level = (torch.rand(b, device=device) * (hi - lo) + lo) * applied
        gray = (torch.rand(b, device=device) < getattr(o, f'gray_noise_prob{suffix}')).float() * applied
        zeros = torch.zeros(b, device=device)
        return {
            f'noise{stage}_kind': applied * (1 if gaussian else 2),
            f'noise{stage}_sigma': level if gaussian else zeros,
            f'noise{stage}_poisson_scale': zeros if gaussian else level,
            f'noise{stage}_gray': gray,
        }

    def sample(self, gt: torch.Tensor, kernel1: torch.Tensor, kernel2: torch.Tensor, sinc_kernel: torch.Tensor,
               kernel1_info: torch.Tensor, kernel2_info: torch.Tensor,
               sinc_info: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Draw every random choice for the batch; kernels (B, 21, 21) and their infos come from the dataset."""
        o, b, dev = self.opt, gt.shape[0], gt.device

        def full(value: float) -> torch.Tensor:
            return torch.full((b, ), float(value), device=dev)

        def quality(jpeg_range: Tuple[float, float]) -> torch.Tensor:
            return torch.empty(b, device=dev).uniform_(*jpeg_range)

        def jpeg_applied() -> torch.Tensor:
            # drawn only below 1.0, so the default (Real-ESRGAN's always-on JPEG) keeps its random stream
            return (torch.rand(b, device=dev) < o.jpeg_prob).float() if o.jpeg_prob < 1 else full(1)

        p = {'kernel1': kernel1, 'kernel2': kernel2, 'sinc_kernel': sinc_kernel}
        for i, name in enumerate(KERNEL_INFO_FIELDS):
            p[f'blur1_{name}'] = kernel1_info[:, i].to(dev)
            p[f'blur2_{name}'] = kernel2_info[:, i].to(dev)
        p['resize1_scale'] = full(_resize_scale(o.resize_prob, o.resize_range))
        p['resize1_mode'] = full(RESIZE_MODES.index(_batch_choice(list(RESIZE_MODES))))
        p.update(self._noise_draws(b, dev, '1'))
        p['jpeg1_quality'] = quality(o.jpeg_range)
        p['jpeg1_applied'] = jpeg_applied()
        p['blur2_applied'] = full(np.random.uniform() < o.second_blur_prob)
        p['resize2_scale'] = full(_resize_scale(o.resize_prob2, o.resize_range2))
        p['resize2_mode'] = full(RESIZE_MODES.index(_batch_choice(list(RESIZE_MODES))))
        p.update(self._noise_draws(b, dev, '2'))
        p['final_order'] = full(np.random.uniform() >= o.final_order_prob)
        p['final_resize_mode'] = full(RESIZE_MODES.index(_batch_choice(list(RESIZE_MODES))))
        p['jpeg2_quality'] = quality(o.jpeg_range2)
        p['jpeg2_applied'] = jpeg_applied()
        p['sinc_applied'] = sinc_info[:, 0].to(dev)
        p['sinc_omega_c'] = sinc_info[:, 1].to(dev)
        if o.second_order_prob < 1:  # drawn only below 1.0: the default keeps Real-ESRGAN's random stream
            p['second_order'] = full(np.random.uniform() < o.second_order_prob)
            if not bool(p['second_order'][0]):
                self._skip_second_stage(p)
        else:
            p['second_order'] = full(1)
        return p

    @staticmethod
    def _skip_second_stage(p: Dict[str, torch.Tensor]) -> None:
        """Make the draws ``p`` first-order, as the Dropout paper's ``RealESRNetModel_onedegra`` (XPixelGroup/RDSR):
        blur, resize and noise once, then the final resize, sinc and JPEG; the first stage's JPEG and the second
        stage's blur, resize and noise are labelled not applied, so the labels (noise levels, ``jpeg1_applied``)
        describe the image that was made."""
        p['jpeg1_applied'] = torch.zeros_like(p['jpeg1_applied'])
        p['blur2_applied'] = torch.zeros_like(p['blur2_applied'])
        p['resize2_scale'] = torch.ones_like(p['resize2_scale'])
        for key in ('noise2_kind', 'noise2_sigma', 'noise2_poisson_scale', 'noise2_gray'):
            p[key] = torch.zeros_like(p[key])

    # ------------------------------------------------------------------------------------------- apply
    @staticmethod
    def _noise(out: torch.Tensor, p: Dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        sigma, scale = p[f'noise{stage}_sigma'], p[f'noise{stage}_poisson_scale']
        gray = p[f'noise{stage}_gray']
        if bool((sigma > 0).any()):
            out = out + generate_gaussian_noise_pt(out, sigma, gray)
        if bool((scale > 0).any()):
            out = out + generate_poisson_noise_pt(out, scale, gray)
        return out.clamp(0, 1)

    def _jpeg(self, out: torch.Tensor, p: Dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """Compress stage ``stage``'s rows whose ``jpeg<stage>_applied`` is 1; the others pass through (clamped)."""
        out = out.clamp(0, 1).contiguous()
        applied = p[f'jpeg{stage}_applied']
        if not bool(applied.any()):
            return out
        # DiffJPEG overwrites its quality tensor in place: give it a copy so the label survives
        compressed = self.jpeger(out, quality=p[f'jpeg{stage}_quality'].clone())
        if bool(applied.all()):
            return compressed
        return torch.where(applied.bool().view(-1, 1, 1, 1), compressed, out)

    @staticmethod
    def _mode(p: Dict[str, torch.Tensor], key: str) -> str:
        return RESIZE_MODES[int(p[key][0])]

    def minimum_gt_size(self) -> int:
        """Smallest GT side for which every reflect-padded filter still fits (21-tap kernels need > 10 px)."""
        o = self.opt
        return max(math.ceil(11 / min(o.resize_range[0], 1)), 11 * self.scale, o.usm_radius // 2 + 2)

    def apply(self, gt: torch.Tensor, p: Dict[str, torch.Tensor], add_noise: bool = True) -> torch.Tensor:
        """Apply the draws ``p`` to the (already sharpened) GT batch; returns the quantised LQ batch."""
        h, w = gt.shape[-2:]
        if min(h, w) < self.minimum_gt_size():
            raise GsrError(f'GT crops of {h}x{w} are too small for the second-order degradation: it needs at least '
                           f'{self.minimum_gt_size()} px (datasets.train.crop_pad_size) with resize_range '
                           f'{tuple(self.opt.resize_range)} and scale {self.scale}')
        out = filter2D(gt.contiguous(), p['kernel1'])
        out = F.interpolate(out, scale_factor=float(p['resize1_scale'][0]), mode=self._mode(p, 'resize1_mode'))
        second_order = bool(p['second_order'][0])
        noise_at_lr = not second_order and self.opt.first_order_noise == 'lr'
        out = self._noise(out, p, '1') if add_noise and not noise_at_lr else out.clamp(0, 1)
        if second_order:
            out = self._jpeg(out, p, '1')
            if bool(p['blur2_applied'][0]):
                out = filter2D(out.contiguous(), p['kernel2'])
            s2 = float(p['resize2_scale'][0])
            size2 = (int(h / self.scale * s2), int(w / self.scale * s2))
            out = F.interpolate(out, size=size2, mode=self._mode(p, 'resize2_mode'))
            out = self._noise(out, p, '2') if add_noise else out.clamp(0, 1)
        lq_size = (h // self.scale, w // self.scale)
        final_mode = self._mode(p, 'final_resize_mode')

        def resize_and_sinc(img: torch.Tensor) -> torch.Tensor:
            img = filter2D(F.interpolate(img, size=lq_size, mode=final_mode).contiguous(), p['sinc_kernel'])
            # first_order_noise 'lr': the stage's noise draws land here, white at the LR resolution
            return self._noise(img, p, '1') if add_noise and noise_at_lr else img

        if int(p['final_order'][0]) == 0:
            out = self._jpeg(resize_and_sinc(out), p, '2')
        else:
            out = resize_and_sinc(self._jpeg(out, p, '2'))
        return torch.clamp((out * 255.).round(), 0, 255) / 255.

    @staticmethod
    def labels(p: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The per-sample label tensors of a draw, and the first-order blur kernel flattened, ``kernel1``
        (N, 21 * 21): what a degradation prior projects (LightBSR's kernel PCA code)."""
        return {**{k: v for k, v in p.items() if v.dim() == 1}, 'kernel1': p['kernel1'].flatten(1)}
