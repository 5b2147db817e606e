"""Turns a ``PairedDegradationDataset`` batch (HR crops + kernels) into a ``DegradedBatch`` on the model's device.

Two groupings (``BatchOptions.grouping``):

* ``copies`` — each crop is degraded ``copies`` times with independent draws, and all copies are cropped at one
  place: rows ``[copy 1; ...; copy K]`` share content row-wise (Wang et al., CVPR 2024, Sec. 3.1).
* ``shared_degradation`` — each crop is degraded once and cut into ``copies`` sub-crops at different places:
  rows share a degradation, not content (the positives of a contrastive degradation encoder, e.g. DASR/LightBSR).

The degrader is the Real-ESRGAN second-order pipeline (``SecondOrderDegrader``, kernels drawn by the dataset) or,
with ``classic``, the blur + bicubic + noise of the DASR / LightBSR line (``ClassicDegrader``, drawn on the device).
With ``noise_free_twin`` the same draws are applied without noise (``lq_noise_free``) and the per-pixel label
``noise_map`` holds ``mean_c |LQ − twin|``, the noise that survived the pipeline, cropped with the images.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from basicsr.data.transforms import paired_random_crop

from gsr.data.classic_degrader import ClassicDegradationOptions, ClassicDegrader
from gsr.data.degraded_batch import DegradedBatch
from gsr.data.second_order_degrader import DegradationOptions, SecondOrderDegrader
from gsr.utils.errors import GsrError

KERNEL_KEYS = ('kernel1', 'kernel2', 'sinc_kernel', 'kernel1_info', 'kernel2_info', 'sinc_info')
GROUPINGS = ('copies', 'shared_degradation')


@dataclass
class BatchOptions:
    """How training rows are made from a batch of HR crops (see module docstring)."""
    copies: int = 2
    grouping: str = 'copies'
    gt_size: Optional[int] = None
    noise_free_twin: bool = False
    degradation: DegradationOptions = field(default_factory=DegradationOptions)
    classic: Optional[ClassicDegradationOptions] = None


def batch_options(copies: int, noise_free_twin: bool, degradation: DegradationOptions, train: Dict[str, Any],
                  grouping: str = 'copies', classic: Optional[ClassicDegradationOptions] = None) -> BatchOptions:
    """A model's batch options; ``train`` is its ``datasets.train`` block, which gives the final crop (``gt_size``)
    and the kernel sets the dataset draws per crop (``kernel_sets``: more sets than copies would be drawn and never
    used, so that is an error)."""
    kernel_sets = train.get('kernel_sets')
    if isinstance(kernel_sets, int) and not isinstance(kernel_sets, bool) and kernel_sets > copies:
        raise GsrError(f'datasets.train.kernel_sets is {kernel_sets} but the model degrades each crop {copies} '
                       f'time(s){" (paired: false)" if copies == 1 else ""}: set kernel_sets to {copies}')
    if grouping not in GROUPINGS:
        raise GsrError(f'batch grouping must be one of {", ".join(GROUPINGS)}, got {grouping!r}')
    return BatchOptions(copies, grouping, train.get('gt_size'), noise_free_twin, degradation, classic)


class DegradedBatchBuilder(torch.nn.Module):
    """Degrades HR crops on their device with ``SecondOrderDegrader`` and groups the rows (module docstring)."""

    def __init__(self, options: BatchOptions, scale: int):
        super().__init__()
        self.options, self.scale = options, scale
        self.degrader = (ClassicDegrader(options.classic, scale) if options.classic is not None else
                         SecondOrderDegrader(options.degradation, scale))
        self.register_buffer('anchor', torch.zeros(0), persistent=False)  # follows .to(device)

    def degrades(self, data: Dict[str, Any]) -> bool:
        """Whether ``data`` is a batch this builder degrades: HR crops (``classic``) or HR crops with the
        Real-ESRGAN kernels of a ``PairedDegradationDataset``. A batch that brings its own ``lq`` (validation, test,
        real pairs) is never degraded again: it is scored as given."""
        return 'gt' in data and 'lq' not in data and (self.options.classic is not None or 'kernel1' in data)

    @torch.no_grad()
    def forward(self, data: Dict[str, torch.Tensor]) -> DegradedBatch:
        classic = self.options.classic is not None
        missing = [k for k in KERNEL_KEYS if k not in data and not classic]
        if missing:
            raise GsrError(f'training batch lacks {", ".join(missing)}: on-the-fly degradation needs a '
                           'PairedDegradationDataset (datasets.train.type)')
        device = self.anchor.device
        gt = data['gt'].to(device)
        crops = gt.shape[1] if gt.dim() == 5 else 0  # the dataset's crops_per_image, cut anywhere in each image
        if crops and (self.options.grouping != 'shared_degradation' or crops != self.options.copies):
            raise GsrError(f'the dataset gives {crops} crops per image (datasets.train.crops_per_image), but the '
                           f'model cuts {self.options.copies} crops sharing a degradation (patches) from each')
        if not classic:
            gt = self.degrader.sharpen(gt.flatten(0, 1)).view(gt.shape) if crops else self.degrader.sharpen(gt)
        kernels = {} if classic else {k: data[k].to(device) for k in KERNEL_KEYS}
        if crops:  # each crop degraded on its own with its image's draws (LightBSR's code degrades each patch)
            first = gt[:, 0]
            draws = self._sample(first, kernels, 0)
            sources = [self._degrade(gt[:, i], draws) for i in range(crops)]
            return self._shared(sources, first.shape[0], device)
        degradations = self.options.copies if self.options.grouping == 'copies' else 1
        degraded = [self._degrade(gt, self._sample(gt, kernels, copy)) for copy in range(degradations)]
        if self.options.grouping == 'shared_degradation':  # one degraded region, cut at copies places
            return self._shared(degraded * self.options.copies, gt.shape[0], device)
        b = gt.shape[0]
        lq = torch.cat([d[1] for d in degraded])
        twin = torch.cat([d[2] for d in degraded]) if self.options.noise_free_twin else None
        per_sample = {k: torch.cat([d[3][k] for d in degraded]) for k in degraded[0][3]}
        per_pixel = {'noise_map': (lq - twin).abs().mean(1, keepdim=True)} if twin is not None else {}
        return self._crop(gt.repeat(degradations, 1, 1, 1), lq, twin, per_sample, per_pixel,
                          content=torch.arange(b, device=device).repeat(degradations),
                          degradation=torch.arange(b * degradations, device=device))

    def _sample(self, gt: torch.Tensor, kernels: Dict[str, torch.Tensor], copy: int) -> Dict[str, torch.Tensor]:
        """One draw per row of ``gt`` (the ``copy``-th kernel set of the dataset's, the last one if it has fewer)."""
        if self.options.classic is not None:
            return self.degrader.sample(gt)
        kernel_set = min(copy, kernels['kernel1'].shape[1] - 1)
        return self.degrader.sample(gt, *(kernels[k][:, kernel_set] for k in KERNEL_KEYS))

    def _degrade(self, gt: torch.Tensor, draws: Dict[str, torch.Tensor]):
        """(gt, LQ, noise-free twin or None, per-sample labels) of one application of ``draws``."""
        lq = self.degrader.apply(gt, draws)
        twin = self.degrader.apply(gt, draws, add_noise=False) if self.options.noise_free_twin else None
        return gt, lq, twin, self.degrader.labels(draws)

    def _shared(self, sources: List, b: int, device: torch.device) -> DegradedBatch:
        """Rows ``[crop 1 of every image; crop 2; ...]``, crop i cut from ``sources[i]``: rows share a
        degradation (``degradation`` = the image), not content."""
        crops = []
        for i, (gt, lq, twin, per_sample) in enumerate(sources):
            per_pixel = {'noise_map': (lq - twin).abs().mean(1, keepdim=True)} if twin is not None else {}
            crops.append(self._crop(gt, lq, twin, per_sample, per_pixel, torch.arange(b, device=device) + i * b,
                                    torch.arange(b, device=device)))
        return DegradedBatch(
            gt=torch.cat([c.gt for c in crops]), lq=torch.cat([c.lq for c in crops]),
            content=torch.cat([c.content for c in crops]), degradation=torch.cat([c.degradation for c in crops]),
            labels={k: torch.cat([c.labels[k] for c in crops]) for k in crops[0].labels},
            lq_noise_free=torch.cat([c.lq_noise_free for c in crops]) if crops[0].lq_noise_free is not None else None)

    def _crop(self, gt: torch.Tensor, lq: torch.Tensor, twin: Optional[torch.Tensor], per_sample: Dict,
              per_pixel: Dict, content: torch.Tensor, degradation: torch.Tensor) -> DegradedBatch:
        """Crop GT, LQ, twin and per-pixel labels at one random place (BasicSR's ``paired_random_crop``)."""
        low_res: List[torch.Tensor] = [lq] + ([twin] if twin is not None else []) + list(per_pixel.values())
        if self.options.gt_size:
            gt, low_res = paired_random_crop(gt, low_res, self.options.gt_size, self.scale)
            low_res = low_res if isinstance(low_res, list) else [low_res]
        low_res = [t.contiguous() for t in low_res]
        twin_out = low_res[1] if twin is not None else None
        pixel_maps = dict(zip(per_pixel, low_res[1 + (twin is not None):]))
        return DegradedBatch(gt=gt.contiguous(), lq=low_res[0], content=content, degradation=degradation,
                             labels={**per_sample, **pixel_maps}, lq_noise_free=twin_out)
