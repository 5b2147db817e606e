"""What a gsr training step consumes: the degraded rows, how they are grouped, and what was drawn for each."""
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from gsr.utils.errors import GsrError


@dataclass
class DegradedBatch:
    """N training rows with their grouping and labels.

    ``content[i] == content[j]``: rows i and j show the same HR crop (the paired copies of Wang et al.).
    ``degradation[i] == degradation[j]``: rows i and j carry the same degradation draws (the positives of a
    contrastive degradation encoder). ``labels`` holds, per name, a per-sample value ``(N,)``, a per-sample
    vector ``(N, D)`` (e.g. a flattened blur kernel) or a per-pixel map ``(N, C, h, w)`` at LQ resolution (cropped
    together with ``lq``). ``lq_noise_free`` is the
    noise-free twin: the same draws applied with every noise step skipped.
    """
    gt: torch.Tensor
    lq: torch.Tensor
    content: torch.Tensor
    degradation: torch.Tensor
    labels: Dict[str, torch.Tensor] = field(default_factory=dict)
    lq_noise_free: Optional[torch.Tensor] = None

    def __post_init__(self):
        n, lq_hw = self.lq.shape[0], self.lq.shape[-2:]
        for name, t in (('gt', self.gt), ('content', self.content), ('degradation', self.degradation)):
            if t.shape[0] != n:
                raise GsrError(f'degraded batch: {name} has {t.shape[0]} rows, lq has {n}')
        if self.lq_noise_free is not None and self.lq_noise_free.shape != self.lq.shape:
            raise GsrError(f'degraded batch: twin {tuple(self.lq_noise_free.shape)} != lq {tuple(self.lq.shape)}')
        for name, t in self.labels.items():
            if t.shape[0] != n or t.dim() not in (1, 2, 4) or (t.dim() == 4 and t.shape[-2:] != lq_hw):
                raise GsrError(f'degraded batch: label {name!r} has shape {tuple(t.shape)}; labels are (N,) or (N, D) '
                               f'per sample or (N, C, {lq_hw[0]}, {lq_hw[1]}) per pixel, with N = {n}')

    @classmethod
    def of_pairs(cls, lq: torch.Tensor, gt: torch.Tensor) -> 'DegradedBatch':
        """Rows that come with their own LQ (a real LQ/GT dataset): every row its own content and degradation."""
        rows = torch.arange(lq.shape[0], device=lq.device)
        return cls(gt=gt, lq=lq, content=rows, degradation=rows.clone())

    def copies(self) -> int:
        """K when the rows are K stacked copies of the same B crops, ``[copy 1; ...; copy K]``; else 1."""
        content = self.content.tolist()  # one transfer, not a device sync per candidate K
        n = len(content)
        for k in range(n, 1, -1):
            if n % k == 0 and content == content[:n // k] * k:
                return k
        return 1

    def first_rows(self, count: int) -> 'DegradedBatch':
        """The first ``count`` rows (e.g. the first crop of each image in a ``shared_degradation`` batch)."""
        return DegradedBatch(self.gt[:count], self.lq[:count], self.content[:count], self.degradation[:count],
                             {name: t[:count] for name, t in self.labels.items()},
                             None if self.lq_noise_free is None else self.lq_noise_free[:count])
