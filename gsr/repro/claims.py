"""The papers' claims, each tested by paired comparisons of the study's runs (``gsr.repro.stats``).

Variant names are the roles the claims refer to: ``baseline``, ``paired_baseline``, ``dropout``,
``adaptive_dropout``, ``align``,
``featmatch``, ``baseline_noise_half`` (TFD's training data without the module), ``tfd_inline``,
``tfd_training_only``, ``align_tfd`` (and any ``*_acting`` variant with a weight scaled to act). A claim whose
variants the study did not run is reported as not run; one made in part names what its missing comparisons lack (a
variant not benchmarked, a metric not measured).
"""
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np

from gsr.repro.stats import paired_comparison, verdict

FAR_SETTINGS = ('clean', 'blur', 'noise', 'jpeg')
METRIC_NAMES = {'psnr': 'PSNR', 'ssim': 'SSIM', 'lpips': 'LPIPS', 'mape_high': 'high-band MAPE'}
NOISE_SETTINGS = ('noise', 'b+n', 'n+j', 'b+n+j')


class Measurements:
    """Per-image results of every run: ``value(variant, metric, settings)`` -> (seeds, images) array averaged over
    ``settings``; ``mape_high`` is the mean MAPE of the upper half of the radial bands."""

    def __init__(self, rows: List[Dict], seeds: List[int], settings: List[str], analyses: Dict[str, Dict]):
        self.seeds, self.settings, self.analyses = seeds, settings, analyses
        self.table: Dict[tuple, Dict] = {}
        images = OrderedDict()
        for row in rows:
            variant, seed = row['model'].rsplit('/seed', 1)
            self.table[(variant, int(seed), row['dataset'], row['image'], row['setting'])] = row
            images[(row['dataset'], row['image'])] = None
        self.images = list(images)
        self.variants = list(OrderedDict.fromkeys(r['model'].rsplit('/seed', 1)[0] for r in rows))
        self.runs = {(variant, seed) for variant, seed, *_ in self.table}

    def has(self, *variants: str) -> bool:
        return all(v in self.variants for v in variants)

    def metric(self, row: Dict, metric: str) -> float:
        if metric == 'mape_high':
            bands = sorted(k for k in row if k.startswith('mape_band_'))
            return float(np.mean([row[k] for k in bands[len(bands) // 2:]])) if bands else float('nan')
        return float(row.get(metric, float('nan')))

    def seeds_of(self, *variants: str) -> List[int]:
        """The seeds every one of ``variants`` was benchmarked at (a variant may run fewer than the study)."""
        return [seed for seed in self.seeds if all((v, seed) in self.runs for v in variants)]

    def value(self, variant: str, metric: str, settings: Optional[tuple] = None,
              seeds: Optional[List[int]] = None) -> np.ndarray:
        settings = settings or tuple(self.settings)
        return np.array([[np.mean([self.metric(self.table[(variant, seed, d, i, s)], metric) for s in settings])
                          for d, i in self.images] for seed in (seeds or self.seeds_of(variant))])

    def available(self, metric: str) -> bool:
        return any(not np.isnan(self.metric(row, metric)) for row in self.table.values())


def not_made(why: str) -> Dict:
    """What a comparison function returns when the study lacks what it compares (a variant, a metric, a setting,
    an analysis): the claim's verdict names ``why``."""
    return {'missing': why}


def runs_lacking(m: Measurements, *variants: str) -> Dict:
    return not_made(f'no {" or ".join(v for v in variants if not m.has(v))} run')


def comparison(label: str, differences: np.ndarray, sign: int, unit: str) -> Dict:
    result = paired_comparison(differences).as_dict()
    result.update(label=label, claimed_sign=sign, unit=unit, verdict=verdict(paired_comparison(differences), sign))
    return result


def metric_comparison(m: Measurements, label: str, variant: str, reference: str, metric: str, sign: int,
                      settings: Optional[tuple] = None) -> Dict:
    if not m.has(variant, reference):
        return runs_lacking(m, variant, reference)
    if not m.available(metric):
        return not_made(f'{METRIC_NAMES[metric]} not measured')
    seeds = m.seeds_of(variant, reference)
    differences = m.value(variant, metric, settings, seeds) - m.value(reference, metric, settings, seeds)
    unit = {'psnr': 'dB', 'ssim': '', 'lpips': '', 'mape_high': '%'}[metric]
    return comparison(label, differences, sign, unit)


def far_minus_combined(m: Measurements, variant: str, reference: str) -> Dict:
    if not m.has(variant, reference):
        return runs_lacking(m, variant, reference)
    seeds = m.seeds_of(variant, reference)
    gain = lambda s: m.value(variant, 'psnr', s, seeds) - m.value(reference, 'psnr', s, seeds)  # noqa: E731
    far = tuple(s for s in FAR_SETTINGS if s in m.settings)
    if not far or 'b+n+j' not in m.settings:
        return not_made('the far settings or b+n+j not benchmarked')
    return comparison(f'gain of {variant} over {reference}: far settings ({", ".join(far)}) minus b+n+j',
                      gain(far) - gain(('b+n+j', )), 1, 'dB')


def cossim_noise_lowest(m: Measurements) -> Dict:
    runs = [m.analyses.get(f'baseline/seed{s}') for s in m.seeds_of('baseline')]
    if not runs or not all(runs):
        return not_made('no analysed baseline run')
    cos = {k: np.array([r['cossim'][k] for r in runs]) for k in ('blur', 'noise', 'jpeg')}
    return comparison('baseline: min(cos blur, cos jpeg) - cos noise (clean vs degraded features)',
                      np.minimum(cos['blur'], cos['jpeg']) - cos['noise'], 1, '')


def chi_comparison(m: Measurements, kind: str) -> Dict:
    runs = {v: [m.analyses.get(f'{v}/seed{s}') for s in m.seeds_of('align', 'baseline')] for v in ('align', 'baseline')}
    if not runs['align'] or not all(all(r) for r in runs.values()):
        return not_made('no analysed align and baseline runs')
    differences = np.array([[a[kind] - b[kind]] for a, b in zip(runs['align'], runs['baseline'])])
    return comparison(f'CHI ({"pooled features" if kind == "chi_pooled" else "2-D t-SNE"}): align - baseline',
                      differences, -1, '')


def combined_verdict(comparisons: List[Dict]) -> str:
    verdicts = [c['verdict'] for c in comparisons]
    if not verdicts:
        return 'not run'
    if all(v == 'holds' for v in verdicts):
        return 'holds'
    if any(v == 'does not hold' for v in verdicts):
        return 'does not hold' if all(v != 'holds' for v in verdicts) else 'partly holds'
    return 'partly holds' if any(v == 'holds' for v in verdicts) else 'inconclusive'


def claims(m: Measurements) -> List[Dict]:
    noise = tuple(s for s in NOISE_SETTINGS if s in m.settings)
    acting = [v for v in m.variants if v.endswith('_acting')]
    spec = [
        ('1', 'Alignment improves over the baseline on average, more on the settings furthest from training than on '
              'b+n+j, and over the paired baseline', 'alignment paper, Table 1',
         [metric_comparison(m, 'align - baseline (PSNR, all settings)', 'align', 'baseline', 'psnr', 1),
          far_minus_combined(m, 'align', 'baseline'),
          metric_comparison(m, 'align - paired_baseline (PSNR, all settings)', 'align', 'paired_baseline', 'psnr', 1)]
         + [metric_comparison(m, f'{v} - paired_baseline (PSNR, all settings)', v, 'paired_baseline', 'psnr', 1)
            for v in acting]),
        ('2', 'Alignment beats channel Dropout on average; Dropout beats the baseline',
         'alignment paper, Fig. 6; Dropout paper',
         [metric_comparison(m, 'align - dropout (PSNR)', 'align', 'dropout', 'psnr', 1),
          metric_comparison(m, 'dropout - baseline (PSNR)', 'dropout', 'baseline', 'psnr', 1)]),
        ('3', 'Dropout costs high-frequency detail: higher high-band MAPE (and LPIPS) than baseline and alignment',
         'alignment paper, Sec. 3 and Table 2',
         [metric_comparison(m, 'dropout - baseline (high-band MAPE)', 'dropout', 'baseline', 'mape_high', 1),
          metric_comparison(m, 'dropout - align (high-band MAPE)', 'dropout', 'align', 'mape_high', 1),
          metric_comparison(m, 'dropout - baseline (LPIPS)', 'dropout', 'baseline', 'lpips', 1),
          metric_comparison(m, 'dropout - align (LPIPS)', 'dropout', 'align', 'lpips', 1)]),
        ('4a', 'Models overfit mostly to noise: their features move furthest from the clean image\'s under noise',
         'TFD (arXiv 2509.14841), the analysis', [cossim_noise_lowest(m)]),
        ('4b', 'Targeted feature denoising improves generalisation beyond what its training data does (against the '
               'baseline trained on the same data, noise skipped half the time)', 'TFD (arXiv 2509.14841), the method',
         [metric_comparison(m, f'{v} - baseline_noise_half (PSNR, {label})', v, 'baseline_noise_half', 'psnr', 1,
                            settings) for v in ('tfd_inline', 'tfd_training_only')
          for label, settings in (('all settings', None), ('noise settings', noise))]),
        ('5', 'The Calinski-Harabasz index of the deep degradation representation is lower with alignment',
         'alignment paper, Sec. 5', [chi_comparison(m, 'chi_pooled'), chi_comparison(m, 'chi_tsne')]),
        ('6', 'Adaptive Dropout improves over the baseline and beats channel Dropout and alignment',
         'Adaptive Dropout paper (CVPR 2025), abstract and main table',
         [metric_comparison(m, f'adaptive_dropout - {v} (PSNR)', 'adaptive_dropout', v, 'psnr', 1)
          for v in ('baseline', 'dropout', 'align')]),
    ]
    # shown beside claim 4b but not counted: the TFD variants train with noise skipped half the time and align with
    # noise always on, so these compare training data as much as methods (baseline_noise_half isolates the module)
    context = {'4b': [metric_comparison(m, f'{v} - align (PSNR, {label})', v, 'align', 'psnr', 1, settings)
                      for v in ('tfd_inline', 'tfd_training_only')
                      for label, settings in (('all settings', None), ('noise settings', noise))]}
    out = []
    for number, title, source, comparisons in spec:
        made = [c for c in comparisons if 'missing' not in c]
        verdict = combined_verdict(made)
        if made and len(made) < len(comparisons):
            lacking = OrderedDict.fromkeys(c['missing'] for c in comparisons if 'missing' in c)
            verdict += f' ({len(comparisons) - len(made)} of {len(comparisons)} comparisons not made: ' \
                       f'{"; ".join(lacking)})'
        out.append({'claim': number, 'title': title, 'source': source, 'comparisons': made, 'verdict': verdict,
                    'context': [c for c in context.get(number, []) if 'missing' not in c]})
    return out
