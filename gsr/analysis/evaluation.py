"""Models x datasets x degradation settings -> PSNR / SSIM / LPIPS rows, cached per image, and their reports.

``write_reports`` writes to the output folder: ``per_image.jsonl`` (the cache: an interrupted run resumes from it),
``results.csv`` and ``results.json`` (one row per model, dataset and setting), ``table.md`` (the papers'
layout: a row per model, an "Improvement" row under each model against the reference, columns
dataset x setting, one table per metric) and ``gains.png`` (PSNR gain over the reference per setting,
averaged over datasets). PSNR/SSIM are BasicSR's, on RGB with ``crop_border`` = scale by default.
See ``options/evaluate_alignment.yml`` for the config keys; ``gsr evaluate`` is the command.
"""
import csv
import hashlib
import io
import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from tqdm import tqdm

from gsr.archs.network_checkpoint import load_network
from gsr.data.eval_protocol import degrade_file, settings_list
from gsr.metrics.lpips_metric import lpips_distance, maybe_lpips
from gsr.models.option_check import load_option_file
from gsr.utils.checkpoint import atomic_write_text, file_sha256
from gsr.utils.default_data import resolve_root
from gsr.utils.errors import GsrError, check_at_least
from gsr.utils.execution import default_device, execution_options, inference_network
from gsr.utils.image_io import image_size, list_images
from gsr.utils.inference import bicubic_upscale, super_resolve
from gsr.utils.plotting import pyplot, save_figure

METRICS = ('psnr', 'ssim', 'lpips')
BICUBIC = 'bicubic'
KEY_FIELDS = ('model', 'dataset', 'setting', 'image')
Key = Tuple[str, str, str, str]


SSIM_WINDOW = 11  # BasicSR's SSIM: an 11x11 Gaussian window over the valid region
PROTOCOL_KEYS = ('scale', 'crop_border', 'noise_sigma', 'seed', 'tile', 'metrics', 'lpips_net', 'band_mape')


def is_bicubic(spec) -> bool:
    """A ``models`` entry given as the word ``bicubic``: MATLAB bicubic upscaling, no option file or checkpoint."""
    return spec == BICUBIC


def result_id(cfg: Dict, model: str) -> str:
    """What a cached per-image result depends on: the checkpoint's content, the network it is loaded into, the
    weights chosen, and every protocol and metric option. A cached row is reused only when this matches."""
    spec = cfg['models'][model]
    if is_bicubic(spec):
        inputs = {'model': BICUBIC, 'protocol': {k: cfg.get(k) for k in PROTOCOL_KEYS}}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    opt = load_option_file(spec['option_file'])
    inputs = {
        'checkpoint_sha256': checkpoint_id(spec),
        'network': {k: opt.get(k) for k in ('network_g', 'attach', 'dropout', 'feature_tap')},
        'param_key': spec.get('param_key', 'params_ema'),
        'protocol': {k: cfg.get(k) for k in PROTOCOL_KEYS},
        # bf16 changes the outputs; channels_last may change the last bits
        'execution': [cfg['execution'].precision, cfg['execution'].channels_last],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_id(spec: Dict) -> str:
    """The checkpoint's sha256: of the file, or, where the file is not here, the ``checkpoint_sha256`` the entry
    gives (a study's recorded run, ``gsr.repro.records``: its rows come from the cache)."""
    return file_sha256(spec['checkpoint']) if os.path.isfile(spec['checkpoint']) else spec['checkpoint_sha256']


class ResultCache:
    """Per-image results, appended one JSON line at a time; a torn last line (killed run) is ignored."""

    def __init__(self, path: str):
        self.path = path
        self.rows: Dict[Key, Dict] = {}
        if os.path.isfile(path):
            with open(path) as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and all(k in row for k in KEY_FIELDS):  # else not a row gsr wrote
                        self.rows[self.key(row)] = row

    @staticmethod
    def key(row: Dict) -> Key:
        return tuple(row[k] for k in KEY_FIELDS)

    def get(self, key: Key, model_id: str, image_sha256: str) -> Optional[Dict]:
        """The cached row of ``key`` if it was computed by the same model and protocol on the same image content."""
        row = self.rows.get(key)
        fresh = row is not None and row.get('model_id') == model_id and row.get('image_sha256') == image_sha256
        return row if fresh else None

    def add(self, row: Dict) -> None:
        try:
            with open(self.path, 'a') as f:
                f.write(json.dumps(row) + '\n')
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a torn last line is ignored when the cache is read back: the rows before it stay
            raise GsrError(f'could not write {self.path}: {e}') from e
        self.rows[self.key(row)] = row


def load_config(path: str, overrides: Optional[Dict] = None) -> Dict:
    """The evaluation config with its defaults; ``overrides`` (command-line flags) replace its keys."""
    cfg = load_option_file(path)
    cfg.update(overrides or {})
    for key in ('models', 'datasets'):
        if not isinstance(cfg.get(key), dict) or not cfg[key]:
            raise GsrError(f'{path}: {key} must map names to entries')
    cfg.setdefault('name', os.path.splitext(os.path.basename(path))[0])
    cfg.setdefault('output', os.path.join('results', cfg['name']))
    cfg.setdefault('scale', 4)
    cfg.setdefault('crop_border', cfg['scale'])
    cfg['settings'] = settings_list(cfg.get('settings', ['all']))
    cfg.setdefault('metrics', list(METRICS))
    unknown = [m for m in cfg['metrics'] if m not in METRICS] if isinstance(cfg['metrics'], list) else [cfg['metrics']]
    if unknown or not cfg['metrics']:
        raise GsrError(f'{path}: metrics must be a non-empty list of {", ".join(METRICS)}, got {cfg["metrics"]!r}')
    for key, default in (('noise_sigma', 20), ('seed', 0), ('tile', 0), ('lpips_net', 'alex'), ('band_mape', 0)):
        cfg.setdefault(key, default)
    if not isinstance(cfg['scale'], int) or isinstance(cfg['scale'], bool):
        raise GsrError(f'{path}: scale must be an integer, got {cfg["scale"]!r}')
    for key, minimum in (('scale', 1), ('crop_border', 0), ('noise_sigma', 0), ('tile', 0), ('band_mape', 0)):
        check_at_least(f'{path}: {key}', cfg[key], minimum)
    device = default_device(cfg.get('device'))
    try:
        cfg['execution'] = execution_options(cfg, '', device.type)
    except GsrError as e:
        raise GsrError(f'{path}: {e}') from e
    cfg.setdefault('reference', next(iter(cfg['models'])))
    if cfg['reference'] not in cfg['models']:
        raise GsrError(f'{path}: reference {cfg["reference"]!r} is not one of the models')
    for name, model in cfg['models'].items():
        if is_bicubic(model):
            continue
        if not isinstance(model, dict):
            raise GsrError(f'{path}: models.{name} must be a mapping (option_file, checkpoint, param_key) or the '
                           f'word {BICUBIC}, got {model!r}')
        if model.get('param_key', 'params_ema') not in ('params_ema', 'params'):
            raise GsrError(f'{path}: models.{name}.param_key must be params_ema or params, got '
                           f'{model["param_key"]!r}')
        for key in ('option_file', 'checkpoint'):
            if key not in model:
                raise GsrError(f'{path}: models.{name}.{key} is missing')
            if not os.path.isfile(model[key]) and not (key == 'checkpoint' and model.get('checkpoint_sha256')):
                raise GsrError(f'{path}: models.{name}.{key} not found: {model[key]}')
    cfg['datasets'] = {name: resolve_root(folder) for name, folder in cfg['datasets'].items()}
    for name, folder in cfg['datasets'].items():
        for image in list_images(folder):
            check_border_fits(path, image, cfg)
    return cfg


def check_border_fits(path: str, image: str, cfg: Dict) -> None:
    """``crop_border`` must leave pixels to score on every image (SSIM: its 11-pixel window), checked from the
    image's header before any work (review case E6: cv2 failed in SSIM after every network had run)."""
    side = min(image_size(image)) // cfg['scale'] * cfg['scale']
    needed = SSIM_WINDOW if 'ssim' in cfg['metrics'] else 1
    if side - 2 * cfg['crop_border'] < needed:
        raise GsrError(f'{path}: crop_border {cfg["crop_border"]} leaves {max(side - 2 * cfg["crop_border"], 0)} '
                       f'pixels of {image} ({side} on its short side) to score; '
                       f'{"SSIM needs" if needed > 1 else "at least"} {needed}')


class Measurement:
    """Computes one per-image result; keeps the current network and HR image so each is loaded once."""

    def __init__(self, cfg: Dict):
        self.cfg = cfg
        self.device = default_device(cfg.get('device'))
        lpips_model = maybe_lpips(cfg['lpips_net']) if 'lpips' in cfg['metrics'] else None
        self.lpips = lpips_model.to(self.device) if lpips_model is not None else None
        self._net: Tuple[Optional[str], Optional[torch.nn.Module]] = (None, None)

    def network(self, model: str) -> torch.nn.Module:
        if self._net[0] != model:
            spec = self.cfg['models'][model]
            if not os.path.isfile(spec['checkpoint']):
                raise GsrError(f'models.{model}: {spec["checkpoint"]} is not here (an entry named by its '
                               'checkpoint_sha256 has only its cached rows), so a result not in the cache cannot be '
                               'computed')
            net = load_network(load_option_file(spec['option_file']), spec['checkpoint'],
                               spec.get('param_key', 'params_ema'), self.device)
            self._net = (model, inference_network(net, self.cfg['execution'], self.device.type, ''))
        return self._net[1]

    def __call__(self, model: str, path: str, setting: str) -> Dict[str, float]:
        scale, crop = int(self.cfg['scale']), int(self.cfg['crop_border'])
        hr, lrs = degrade_file(path, [setting], scale, self.cfg['noise_sigma'], self.cfg['seed'])
        lr = lrs[setting]
        if is_bicubic(self.cfg['models'][model]):
            sr = bicubic_upscale(lr, scale)
        else:
            sr = super_resolve(self.network(model), lr, scale, self.cfg['tile'])
        result = {'psnr': calculate_psnr(sr, hr, crop), 'ssim': calculate_ssim(sr, hr, crop)}
        if self.lpips is not None:
            inner = (slice(crop, -crop or None), ) * 2
            result['lpips'] = lpips_distance(self.lpips, sr[inner], hr[inner])
        if self.cfg['band_mape']:
            from gsr.analysis.measures import band_mape
            mape = band_mape(sr, hr, int(self.cfg['band_mape']))
            result.update((f'mape_band_{b + 1}', float(v)) for b, v in enumerate(mape))
        return result


def evaluate(cfg: Dict, progress: bool = True) -> List[Dict]:
    """Every per-image result, computed or read from the cache (ordered model, dataset, image, setting)."""
    os.makedirs(cfg['output'], exist_ok=True)
    cache = ResultCache(os.path.join(cfg['output'], 'per_image.jsonl'))
    model_ids = {model: result_id(cfg, model) for model in cfg['models']}
    tasks = [(model, dataset, path, setting) for model in cfg['models'] for dataset, folder in cfg['datasets'].items()
             for path in list_images(folder) for setting in cfg['settings']]
    image_ids = {path: file_sha256(path) for path in {task[2] for task in tasks}}  # a replaced image is a new one
    measure = Measurement(cfg)
    rows = []
    for model, dataset, path, setting in tqdm(tasks, desc='evaluate', unit='img', disable=not progress):
        image = os.path.splitext(os.path.basename(path))[0]
        key = (model, dataset, setting, image)
        row = cache.get(key, model_ids[model], image_ids[path])
        if row is None:
            row = dict(zip(KEY_FIELDS, key), model_id=model_ids[model], image_sha256=image_ids[path],
                       **measure(model, path, setting))
            cache.add(row)
        rows.append(row)
    return rows


def summarize(rows: List[Dict], metrics: List[str]) -> List[Dict]:
    """Mean over images per (model, dataset, setting), in first-seen order."""
    groups: Dict[Tuple[str, str, str], List[Dict]] = OrderedDict()
    for row in rows:
        groups.setdefault((row['model'], row['dataset'], row['setting']), []).append(row)
    out = []
    for (model, dataset, setting), items in groups.items():
        entry = {'model': model, 'dataset': dataset, 'setting': setting, 'images': len(items)}
        for m in metrics:
            values = [r[m] for r in items if m in r]
            if values:
                entry[m] = float(np.mean(values))
        out.append(entry)
    return out


def markdown_tables(summary: List[Dict], metrics: List[str], reference: str) -> str:
    """Papers' layout: rows = models (+ Improvement rows vs ``reference``), columns = dataset x setting."""
    columns = list(OrderedDict.fromkeys((s['dataset'], s['setting']) for s in summary))
    models = list(OrderedDict.fromkeys(s['model'] for s in summary))
    value = {(s['model'], s['dataset'], s['setting']): s for s in summary}
    digits = {'psnr': 2, 'ssim': 4, 'lpips': 4}
    parts = []
    for m in metrics:
        if not any(m in s for s in summary):
            continue
        lines = [
            f'### {m.upper()}', '', '| model | ' + ' | '.join(f'{d} {s}' for d, s in columns) + ' |',
            '|---|' + '---|' * len(columns)
        ]
        for model in models:
            cells = [value[(model, d, s)].get(m) for d, s in columns]
            lines.append(f'| {model} | ' + ' | '.join('' if c is None else f'{c:.{digits[m]}f}' for c in cells) + ' |')
            if model != reference:
                ref = [value[(reference, d, s)].get(m) for d, s in columns]
                gains = ['' if c is None or r is None else f'{c - r:+.{digits[m]}f}' for c, r in zip(cells, ref)]
                lines.append(f'| Improvement ({model} vs {reference}) | ' + ' | '.join(gains) + ' |')
        parts.append('\n'.join(lines))
    return '\n\n'.join(parts) + '\n'


def gains_chart(summary: List[Dict], reference: str, path: str) -> None:
    """Bar chart of the PSNR gain over ``reference`` per setting (mean over datasets), one bar group per model."""
    plt = pyplot()
    settings = list(OrderedDict.fromkeys(s['setting'] for s in summary))
    models = [m for m in OrderedDict.fromkeys(s['model'] for s in summary) if m != reference]
    ref = {(s['dataset'], s['setting']): s['psnr'] for s in summary if s['model'] == reference}
    fig, ax = plt.subplots(figsize=(max(6, len(settings) * 1.2), 3.5))
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        gains = [
            np.mean(
                [s['psnr'] - ref[(s['dataset'], st)] for s in summary if s['model'] == model and s['setting'] == st])
            for st in settings
        ]
        ax.bar(np.arange(len(settings)) + i * width, gains, width, label=model)
    ax.axhline(0, color='black', linewidth=0.8)
    ax.set_xticks(np.arange(len(settings)) + width * (len(models) - 1) / 2, settings)
    ax.set_ylabel(f'PSNR gain over {reference} (dB)')
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_reports(cfg: Dict, rows: List[Dict]) -> Dict[str, str]:
    metrics = [m for m in cfg['metrics'] if any(m in r for r in rows)]
    summary = summarize(rows, metrics)
    out = cfg['output']
    paths = {
        k: os.path.join(out, f)
        for k, f in (('csv', 'results.csv'), ('json', 'results.json'), ('md', 'table.md'), ('png', 'gains.png'))
    }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=['model', 'dataset', 'setting', 'images'] + metrics)
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_text(paths['csv'], buf.getvalue())
    atomic_write_text(paths['json'],
                      json.dumps({
                          'config': {
                              k: v
                              for k, v in cfg.items()
                          },
                          'results': summary
                      }, indent=1, default=str))
    atomic_write_text(paths['md'], f'# {cfg["name"]}\n\n' + markdown_tables(summary, metrics, cfg['reference']))
    if 'psnr' in metrics:
        gains_chart(summary, cfg['reference'], paths['png'])
    else:
        paths.pop('png')
    return paths
