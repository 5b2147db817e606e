"""Paired comparisons for the reproduction study: a variant against a reference, trained with the same seeds and
measured on the same images.

Two levels, both reported: per seed (the mean difference over images and settings for each seed: the spread of
these is the training noise), and across seeds x images (every paired difference: a two-sided one-sample t-test
and a two-sided sign test of the median). The verdict rule is ``verdict``'s.
"""
from dataclasses import asdict, dataclass
from typing import Dict

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass
class PairedComparison:
    """Differences variant - reference (positive: the variant is higher)."""
    mean: float            # mean over all paired differences
    seed_means: list       # mean difference per seed
    seed_std: float        # standard deviation of the per-seed means (ddof 1; 0 for one seed)
    n: int                 # paired differences (seeds x images [x settings averaged per image])
    t_p: float             # two-sided one-sample t-test of the differences against 0
    sign_p: float          # two-sided sign test (zeros dropped)
    positive: int          # differences > 0
    negative: int          # differences < 0

    def as_dict(self) -> Dict:
        return asdict(self)


def paired_comparison(differences: np.ndarray) -> PairedComparison:
    """``differences``: (seeds, images) paired differences variant - reference."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f'differences must be a non-empty (seeds, images) array, got shape {d.shape}')
    flat = d.ravel()
    seed_means = d.mean(axis=1)
    positive, negative = int((flat > 0).sum()), int((flat < 0).sum())
    t_p = float(stats.ttest_1samp(flat, 0.0).pvalue) if flat.size > 1 and flat.std() > 0 else (
        0.0 if flat.size > 1 and flat.mean() != 0 else 1.0)
    sign_p = float(stats.binomtest(positive, positive + negative, 0.5).pvalue) if positive + negative else 1.0
    return PairedComparison(mean=float(flat.mean()), seed_means=[float(v) for v in seed_means],
                            seed_std=float(seed_means.std(ddof=1)) if len(seed_means) > 1 else 0.0, n=int(flat.size),
                            t_p=t_p, sign_p=sign_p, positive=positive, negative=negative)


def verdict(comparison: PairedComparison, claimed_sign: int = 1) -> str:
    """``holds`` when the mean difference has the claimed sign, every seed agrees and the t-test across seeds x
    images gives p < 0.05; ``does not hold`` when all of that is true of the opposite sign; else ``inconclusive``.
    (Images of one seed share that seed's training noise, so the per-seed agreement guards the test; with one seed
    that noise is not measured at all, and the verdict is ``inconclusive (one seed)``.)"""
    seeds = np.sign(comparison.seed_means)
    if len(seeds) < 2:
        return 'inconclusive (one seed)'
    significant = comparison.t_p < ALPHA
    if significant and np.sign(comparison.mean) == claimed_sign and (seeds == claimed_sign).all():
        return 'holds'
    if significant and np.sign(comparison.mean) == -claimed_sign and (seeds == -claimed_sign).all():
        return 'does not hold'
    return 'inconclusive'
