"""Everything the study measured, gathered into one JSON-ready dict (``results.json``; ``RESULTS.md`` is made
from it alone)."""
import json
import os
import platform
from collections import OrderedDict
from typing import Any, Dict, List

import numpy as np

from gsr.losses.regularizer import logged_metric
from gsr.repro.claims import Measurements, claims
from gsr.repro.report import summarize_by_setting
from gsr.repro.runner import growth, late_median, training_curves, validation_curves
from gsr.repro.study import Study


def machine() -> str:
    import torch
    if torch.cuda.is_available():
        return f'{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores'
    return f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU'


def versions() -> str:
    from importlib.metadata import version
    return ', '.join(f'{p} {version(p)}' for p in ('gsr', 'basicsr', 'torch', 'numpy'))


def first_seed_curves(study: Study) -> Dict[str, Dict]:
    """Each variant's first-seed training curves (``training_curves``), read once."""
    return OrderedDict((run.variant, training_curves(run)) for run in study.runs if run.seed == study.options.seeds[0])


def logged_metrics(curves: Dict[str, List], term: str) -> Dict[str, float]:
    """The late medians of what regularizer ``term`` logs besides its value (``GsrModel.regularizer_metrics``, named
    by ``metric_log_name``; e.g. TFD's detector's balanced accuracy ``bacc_det``)."""
    return OrderedDict((metric, late_median(curve)) for key, curve in curves.items()
                       if (metric := logged_metric(key, term)) is not None)


def regularizer_activity(study: Study, curves: Dict[str, Dict]) -> Dict:
    """Per variant (first seed): each regularizer's late-median value, gradient ratio and logged metrics."""
    out = OrderedDict()
    for run in study.runs:
        if run.seed != study.options.seeds[0]:
            continue
        logged = curves[run.variant]
        terms = OrderedDict((term, {'value': late_median(logged.get(term, [])),
                                    'ratio': late_median(logged.get(f'grad_{term}', [])),
                                    'metrics': logged_metrics(logged, term)})
                            for term in (run.options['train'].get('regularizers') or {}))
        if terms:
            out[run.variant] = terms
    return out


def pixel_loss(study: Study, curves: Dict[str, Dict]) -> Dict:
    """Per run: the late median and the largest logged value of the pixel loss ``l_pix``, and the growth of the
    total loss ``l_total`` (a diverging run shows here before its benchmark rows do)."""
    out = OrderedDict()
    for run in study.runs:
        logged = curves[run.variant] if run.seed == study.options.seeds[0] else training_curves(run)
        curve = logged.get('l_pix', [])
        out[run.key] = {'late_median': late_median(curve),
                        'max': float(max((v for _, v in curve), default=float('nan'))),
                        'total_growth': growth(logged.get('l_total', curve))}
    return out


def gradient_curves(curves: Dict[str, Dict]) -> Dict[str, List]:
    return OrderedDict((f'{variant}: {key[5:]}', curve) for variant, per_key in curves.items()
                       for key, curve in per_key.items() if key.startswith('grad_'))


def floor_by_setting(bicubic: List[Dict], settings: List[str]) -> Dict[str, float]:
    """Bicubic PSNR per setting and its mean over the settings, images of every dataset pooled (as the variants')."""
    per_setting = OrderedDict((s, float(np.mean([r['psnr'] for r in bicubic if r['setting'] == s])))
                              for s in settings)
    per_setting['mean'] = float(np.mean(list(per_setting.values())))
    return per_setting


def learning_curves(study: Study, bicubic: List[Dict]) -> Dict:
    """Per variant (first seed, ``curves:``): iterations, training minutes and validation PSNR per curve setting,
    images of every dataset pooled; and the bicubic level of the same images."""
    if study.options.curves is None:
        return {}
    counts = OrderedDict((d, len({r['image'] for r in bicubic if r['dataset'] == d})) for d in study.datasets)
    settings = study.options.curves.settings
    out = OrderedDict(bicubic={s: float(np.mean([r['psnr'] for r in bicubic if r['setting'] == s]))
                               for s in settings}, variants=OrderedDict())
    for run in study.runs:
        if run.seed != study.options.seeds[0]:
            continue
        logged = validation_curves(run)
        minutes = dict(logged['minutes'])
        per_key = {k: dict(v) for k, v in logged['psnr'].items()}
        iterations = sorted(set.intersection(*(set(per_key.get(f'{d}_{s}', {})) for d in counts for s in settings)))
        pooled = {s: [sum(counts[d] * per_key[f'{d}_{s}'][it] for d in counts) / sum(counts.values())
                      for it in iterations] for s in settings}
        out['variants'][run.variant] = {'iterations': iterations, 'minutes': [minutes.get(it) for it in iterations],
                                        'psnr': pooled}
    return out


def collect(study: Study, rows: List[Dict], bicubic: List[Dict], analyses: Dict[str, Dict], factors: Dict[str, float],
            protocol_checks: Dict, meta: Dict) -> Dict:
    bench = study.options.benchmark
    settings = list(OrderedDict.fromkeys(r['setting'] for r in rows))
    m = Measurements(rows, study.options.seeds, settings, analyses)
    curves = first_seed_curves(study)
    psnr = OrderedDict((v, {s: m.value(v, 'psnr', (s, )) for s in settings}) for v in m.variants)
    for v in psnr:
        psnr[v]['mean'] = m.value(v, 'psnr')
    gains = OrderedDict()
    if 'baseline' in psnr:
        def gain(v: str, s: str) -> np.ndarray:
            seeds = m.seeds_of(v, 'baseline')
            settings_of = tuple(settings) if s == 'mean' else (s, )
            return m.value(v, 'psnr', settings_of, seeds) - m.value('baseline', 'psnr', settings_of, seeds)

        gains = OrderedDict((v, {s: gain(v, s) for s in psnr[v]}) for v in psnr if v != 'baseline')
    bands = OrderedDict()
    for v in m.variants:
        keys = sorted((k for k in rows[0] if k.startswith('mape_band_')), key=lambda k: int(k.rsplit('_', 1)[1]))
        if keys:
            bands[v] = [float(np.mean(m.value(v, k))) for k in keys]
    training = 0.0
    for run in study.runs:
        with open(run.done_file) as f:
            training += json.load(f)['seconds']
    return {
        'study': study.options.name,
        'meta': dict(meta, machine=machine(), versions=versions(), training_seconds=training),
        'base': os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(study.path)), study.options.base)),
        'scale_note': scale_note(study),
        'hr': study.hr_name, 'seeds': study.seeds_run, 'settings': settings,
        'seeds_not_run': [s for s in study.options.seeds if s not in study.seeds_run],
        'variant_seeds': OrderedDict((v, study.seeds[v]) for v in study.selected
                                     if study.seeds[v] != study.seeds_run),
        'datasets': [f'{name} ({folder})' for name, folder in study.dataset_names.items()],
        'protocol': {'noise_sigma': bench.noise_sigma, 'weights': bench.weights, 'crop_border': bench.crop_border,
                     'lpips': 'measured' if m.available('lpips') else 'not available (no backbone weights here)'},
        'variant_overrides': OrderedDict((v, json.dumps(o, sort_keys=True)) for v, o in study.overrides.items()
                                         if v in study.selected),
        'variants_not_run': [v for v in study.overrides if v not in study.selected],
        'runs': {run.key: {'folder': os.path.relpath(run.folder, study.output)} for run in study.runs},
        'psnr_by_setting': summarize_by_setting(psnr, settings),
        'bicubic_by_setting': floor_by_setting(bicubic, settings),
        'learning_curves': learning_curves(study, bicubic),
        'gains_by_setting': summarize_by_setting(gains, settings),
        'band_mape': bands,
        'regularizer_activity': regularizer_activity(study, curves),
        'pixel_loss': pixel_loss(study, curves),
        'gradient_curves': gradient_curves(curves),
        'weight_factors': factors,
        'claims': claims(m),
        'protocol_checks': protocol_checks,
    }


def scale_note(study: Study) -> str:
    b, net = study.base, study.base['network_g']
    train = b['datasets']['train']
    size = f'{net.get("type")} {net.get("num_feat", "")}x{net.get("num_block", "")}'.strip()
    return (f'{size}, GT {train.get("gt_size")} crops, {train.get("batch_size_per_gpu")} crops per step, '
            f'{study.options.iterations or b["train"]["total_iter"]} iterations, {pipeline_note(b)}')


def pipeline_note(options: Dict[str, Any]) -> str:
    """The training degradation of an option file in words: which Real-ESRGAN stages run, where a first-order
    batch's noise goes, and how often noise and JPEG are skipped (what a reader needs to compare with a paper that
    trains on the full second-order pipeline)."""
    if 'classic_degradation' in options:
        return 'classic blur + bicubic + noise degradations'
    d = options.get('degradation') or {}
    order = d.get('second_order_prob', 1.0)
    if order >= 1:
        words = ['Real-ESRGAN second-order degradations']
    else:
        stage = 'at the LR resolution' if d.get('first_order_noise', 'stage') == 'lr' else "at the stage's resolution"
        first = ('first-order degradations' if order <= 0 else
                 f'second-order on {order:g} of the batches, else first-order')
        words = [f'{first} (noise {stage})']
    words += [f'noise per sample with probability {d["noise_prob"]:g}'] if d.get('noise_prob', 1.0) < 1 else []
    words += [f'each JPEG per sample with probability {d["jpeg_prob"]:g}'] if d.get('jpeg_prob', 1.0) < 1 else []
    words += ['USM-sharpened GT'] if d.get('gt_usm', True) else ['plain GT']
    return ', '.join(words)
