"""A study file (``options/repro/*.yml``) and the runs it defines.

Keys: the fields of ``StudyOptions`` and the classes it nests, each with its description (``docs/OPTIONS.md`` is
generated from them). ``docs/RESULTS.md`` is what ``options/repro/cpu_small.yml`` produces. A run is one variant at
one seed in ``<output>/<variant>/seed<k>``; the evaluation cache and ``results.json`` sit beside the runs; a finished
run's record in ``<records>/<variant>/seed<k>`` (``gsr.repro.records``).
"""
import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple

from gsr.data.eval_protocol import folder_name
from gsr.models.option_check import check_options, load_option_file
from gsr.utils.default_data import EMBEDDED, resolve_root
from gsr.utils.errors import GsrError
from gsr.utils.options import merge, option, options_from_dict

WEIGHTS = {'ema': 'params_ema', 'raw': 'params'}
VARIANT_KEYS = ('from', 'scale_to_ratio', 'option_file', 'seeds')


@dataclass
class BenchmarkOptions:
    """``benchmark:`` — how every run's network is scored; bicubic upscaling is scored in the same run (the
    report's "bicubic" row and "Against bicubic" table)."""
    datasets: Dict[str, List[str]] = option(doc='name -> candidate HR folders (the first that exists)', factory=dict)
    settings: List[str] = option(doc='the protocol\'s settings (`all`: the eight)', factory=lambda: ['all'])
    noise_sigma: float = option(20.0, 'Gaussian noise sigma of the noise settings (0-255 units)')
    weights: Literal['ema', 'raw'] = option('ema', 'the EMA network (`params_ema`) or the trained one (`params`)')
    metrics: List[str] = option(doc='LPIPS where its backbone weights are present',
                                factory=lambda: ['psnr', 'ssim', 'lpips'])
    band_mape: int = option(8, 'N > 0: the MAPE of the FFT amplitude in N radial bands per image (`gsr analyze freq`)')
    crop_border: int = option(4, 'pixels left out of PSNR / SSIM at each border')
    protocol_checks: bool = option(True, 'the first seed\'s baseline and align also under noise sigma 40 and the other '
                                   'weights')


@dataclass
class CurveOptions:
    """``curves:`` — the first seed's runs validate on the benchmark's datasets every ``every`` iterations under
    ``settings`` (the learning curves of the report)."""
    every: int = option(1000, 'validation interval (iterations)')
    settings: List[str] = option(doc='the settings of the curves', factory=lambda: ['clean', 'noise', 'b+n+j'])


@dataclass
class RatioScaling:
    """A variant's ``scale_to_ratio:`` — scale the ``terms``' weights so that their logged gradient ratio in
    ``run``'s first seed becomes ``target``."""
    run: str = option(doc='the variant whose first seed\'s training log is read')
    terms: List[str] = option(doc='the regularizers whose weights are scaled')
    target: float = option(doc='the gradient ratio to reach: the terms\' gradient norm at the tap over the pixel '
                           'loss\'s, logged with `train.gradient_ratio_freq`, its median over the second half of '
                           '`run`\'s log')


@dataclass
class StudyOptions:
    """A study file (``options/repro/*.yml``)."""
    name: str = option(doc='the study\'s name')
    base: str = option(doc='the training option file every variant starts from, relative to the study file')
    seeds: List[int] = option(doc='the `manual_seed` of each run of every variant that does not list its own (at '
                              'least three for a verdict across seeds)')
    variants: Dict[str, Dict[str, Any]] = option(
        doc='name -> overrides merged into the base (`~` removes a key); besides option keys: `option_file: <file>` '
        'starts the variant from that file instead of the base (`options/repro/paper.yml` uses the published option '
        'files); `from: <variant>` inherits its file and overrides; `scale_to_ratio: {run, terms, target}` (below); '
        '`seeds: [...]` trains the variant at a subset of the study\'s seeds that includes the first (inherited '
        'through `from`; its comparisons pair the seeds both sides have). The claims read the variants by their names '
        '(`baseline`, `paired_baseline`, `dropout`, `align`, `featmatch`, `tfd_inline`, `tfd_training_only`, '
        '`align_tfd`, `*_acting`)')
    benchmark: BenchmarkOptions = option(doc='how the networks are scored (keys below)')
    hr: List[str] = option(doc='candidate HR training folders relative to the working directory, the first that '
                           'exists; `embedded:train`', factory=lambda: ['embedded:train'])
    iterations: Optional[int] = option(None, 'replaces `train.total_iter` (and a `CosineAnnealingRestartLR` '
                                       'period)')
    output: str = option('', 'where the runs are written (`experiments/repro/<name>`)')
    report: str = option('', 'the report (`<output>/RESULTS.md`)')
    records: str = option('', 'where `gsr repro --record` keeps each finished run\'s record, in the repository '
                          '(`gsr/repro/records.py`): a recorded run is laid out in `output` and not trained or '
                          'benchmarked again, so a study continues on another machine; none when empty')
    curves: Optional[CurveOptions] = option(
        None, 'the first seed\'s runs validate on the benchmark\'s datasets every `every` iterations with the '
        'training\'s precision (EMA weights where the run keeps them), and the report draws the learning curves '
        'against iterations and training minutes with the bicubic level (keys below)')
    optimizer_protocol: Literal['released_code', 'paper_text'] = option(
        'released_code', '`released_code`: the option files\' Adam beta2 0.99 and cosine restarts at 250k / 500k, as '
        'the alignment paper\'s released code; `paper_text`: beta2 0.999 and one cosine period over the run, as the '
        'paper\'s text states')


@dataclass
class Run:
    """One training: a variant at one seed, in ``folder`` (``options.yml``, BasicSR's ``experiments/``)."""
    variant: str
    seed: int
    folder: str
    options: Dict[str, Any]
    scaling: Optional[RatioScaling] = None
    record: str = ''  # the folder of its record (``gsr.repro.records``); none when empty
    written: Dict[str, str] = field(default_factory=dict)  # a dataset folder as resolved here -> as the study writes it

    @property
    def key(self) -> str:
        return f'{self.variant}/seed{self.seed}'

    @property
    def experiment(self) -> str:
        return os.path.join(self.folder, 'experiments', self.options['name'])

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.experiment, 'models', 'net_g_latest.pth')

    @property
    def done_file(self) -> str:
        return os.path.join(self.folder, 'done.json')

    def portable_options(self) -> Dict[str, Any]:
        """The options with every dataset folder as the study file writes it (``../shared/data/Set5``,
        ``embedded:train``), not as this machine resolved it: what ``options_sha`` hashes (a run or its record is
        the same on a machine whose folders lie elsewhere) and the provenance of a shipped network."""
        datasets = {key: {'dataroot_gt': self.written.get(ds.get('dataroot_gt'), ds.get('dataroot_gt'))}
                    for key, ds in self.options.get('datasets', {}).items()}
        return merge(self.options, {'datasets': datasets})

    def options_sha(self) -> str:
        return hashlib.sha256(json.dumps(self.portable_options(), sort_keys=True).encode()).hexdigest()


def first_existing(candidates: List[str], key: str) -> Tuple[str, str]:
    """(the first candidate that exists, its folder); ``embedded:`` names are materialised."""
    for candidate in candidates:
        if candidate.startswith(EMBEDDED):
            return candidate, resolve_root(candidate)
        if os.path.isdir(candidate):
            return candidate, os.path.abspath(candidate)
    raise GsrError(f'{key}: none of these folders exists: {", ".join(candidates)}')


class Study:
    """The parsed study file: options, the resolved folders and the runs, before anything is written."""

    def __init__(self, path: str, only: Optional[List[str]] = None, first_seeds: Optional[int] = None):
        raw = load_option_file(path)
        self.path = path
        try:
            self.options = options_from_dict(StudyOptions, raw, '')
        except GsrError as e:  # the key's full name and the file it is in
            raise GsrError(f'{path}: {e}') from e
        o = self.options
        here = self.here = os.path.dirname(os.path.abspath(path))
        if not o.seeds or len(set(o.seeds)) != len(o.seeds):
            raise GsrError(f'{path}: seeds must be a non-empty list of distinct integers, got {o.seeds!r}')
        if not o.benchmark.datasets:
            raise GsrError(f'{path}: benchmark.datasets must name at least one HR folder')
        if o.iterations is not None and o.iterations < 1:
            raise GsrError(f'{path}: iterations must be at least 1, got {o.iterations}')
        if o.curves is not None:
            if o.curves.every < 1:
                raise GsrError(f'{path}: curves.every must be at least 1, got {o.curves.every}')
            for setting in o.curves.settings:
                folder_name(setting, o.benchmark.noise_sigma)
        self.output = os.path.abspath(o.output or os.path.join('experiments', 'repro', o.name))
        self.report = os.path.abspath(o.report or os.path.join(self.output, 'RESULTS.md'))
        self.records = os.path.abspath(o.records) if o.records else ''
        base_path = o.base if os.path.isabs(o.base) else os.path.join(here, o.base)
        self.base = load_option_file(base_path)
        self.hr_name, self.hr = first_existing(o.hr, f'{path}: hr')
        found = {name: first_existing(folders, f'{path}: benchmark.datasets.{name}')
                 for name, folders in o.benchmark.datasets.items()}
        self.datasets = {name: folder for name, (_, folder) in found.items()}
        self.dataset_names = {name: candidate for name, (candidate, _) in found.items()}
        self.written = {folder: self.dataset_names[name] for name, folder in self.datasets.items()}
        self.written[self.hr] = self.hr_name
        self.overrides = {name: self.variant_overrides(name, set()) for name in o.variants}
        self.selected = self.selection(only)
        if first_seeds is not None and not 1 <= first_seeds <= len(o.seeds):
            raise GsrError(f'--seeds must be between 1 and the {len(o.seeds)} seeds of {path}, got {first_seeds}')
        self.seeds_run = o.seeds[:first_seeds or len(o.seeds)]
        self.seeds = {name: [s for s in self.variant_seeds(name) if s in self.seeds_run] for name in o.variants}
        self.runs = [self.make_run(name, seed) for name in self.selected for seed in self.seeds[name]]
        for run in self.runs:  # a variant's mistake fails now, not after the runs before it trained for hours
            check_options(copy.deepcopy(run.options), f'{path}: variant {run.variant}, seed {run.seed}')

    def selection(self, only: Optional[List[str]]) -> List[str]:
        """The variants to run: all, or ``only`` (``--variants``), which must include the source of every
        ``scale_to_ratio``."""
        if not only:
            return list(self.options.variants)
        unknown = [v for v in only if v not in self.options.variants]
        if unknown:
            raise GsrError(f'--variants: {", ".join(unknown)} not in {self.path} (it has: '
                           f'{", ".join(self.options.variants)})')
        for name in only:
            scaling = self.scaling(name)
            if scaling is not None and scaling.run not in only:
                raise GsrError(f'--variants: {name} scales its weights from {scaling.run}\'s logs: include it')
        return [v for v in self.options.variants if v in only]

    def variant_overrides(self, name: str, seen: set) -> Dict[str, Any]:
        if name not in self.options.variants:
            raise GsrError(f'{self.path}: variants.{next(iter(seen), name)}.from: no variant {name!r}')
        if name in seen:
            raise GsrError(f'{self.path}: variants.{name}.from: a cycle')
        spec = self.options.variants[name] or {}
        own = {k: v for k, v in spec.items() if k not in VARIANT_KEYS}
        parent = spec.get('from')
        return merge(self.variant_overrides(parent, seen | {name}), own) if parent else own

    def variant_seeds(self, name: str) -> List[int]:
        """The seeds a variant is trained with: its own ``seeds`` (or its ``from`` variant's), else the study's; a
        subset of the study's that includes the first (the first-seed analyses read every variant)."""
        spec = self.options.variants[name] or {}
        if 'seeds' not in spec:
            return self.variant_seeds(spec['from']) if spec.get('from') else list(self.options.seeds)
        seeds = spec['seeds']
        if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                or not set(seeds) <= set(self.options.seeds) or self.options.seeds[0] not in seeds):
            raise GsrError(f'{self.path}: variants.{name}.seeds must be distinct seeds of the study\'s list '
                           f'{self.options.seeds} including {self.options.seeds[0]}, got {seeds!r}')
        return [s for s in self.options.seeds if s in seeds]

    def scaling(self, name: str) -> Optional[RatioScaling]:
        spec = (self.options.variants[name] or {}).get('scale_to_ratio')
        if spec is None:
            return None
        scaling = options_from_dict(RatioScaling, spec, f'variants.{name}.scale_to_ratio')
        if scaling.run not in self.options.variants or (self.options.variants[scaling.run] or {}).get(
                'scale_to_ratio'):
            raise GsrError(f'{self.path}: variants.{name}.scale_to_ratio.run must be a variant without '
                           f'scale_to_ratio, got {scaling.run!r}')
        return scaling

    def variant_base(self, name: str) -> Dict[str, Any]:
        """The option file a variant starts from: its own ``option_file``, its ``from`` variant's, or the base."""
        spec = self.options.variants[name] or {}
        if spec.get('option_file'):
            return load_option_file(os.path.join(self.here, spec['option_file']))
        return self.variant_base(spec['from']) if spec.get('from') else self.base

    def make_run(self, name: str, seed: int) -> Run:
        opt = merge(self.variant_base(name), self.overrides[name])
        opt['name'] = f'{self.options.name}_{name}_seed{seed}'
        opt['manual_seed'] = seed
        opt['datasets']['train']['dataroot_gt'] = self.hr
        written = dict(self.written)
        if self.options.iterations:
            set_iterations(opt, self.options.iterations)
        if self.options.optimizer_protocol == 'paper_text':
            use_paper_text_optimizer(opt)
        if self.options.curves is not None and seed == self.options.seeds[0]:
            self.add_validation(opt)
        for key, ds in opt['datasets'].items():
            if key != 'train' and str(ds.get('dataroot_gt', '')).startswith(EMBEDDED):
                written[resolve_root(ds['dataroot_gt'])] = ds['dataroot_gt']
                ds['dataroot_gt'] = resolve_root(ds['dataroot_gt'])
        record = os.path.join(self.records, name, f'seed{seed}') if self.records else ''
        return Run(name, seed, os.path.join(self.output, name, f'seed{seed}'), opt, self.scaling(name), record,
                   written)

    def add_validation(self, opt: Dict[str, Any]) -> None:
        """Validation of the learning curves: every benchmark dataset under every ``curves.settings`` entry
        (``<dataset>_<setting>``), PSNR as the benchmark measures it; the base's own validation sets are replaced, its
        ``val:`` block is kept (without one, validation runs with the training's precision and memory format)."""
        curves, bench = self.options.curves, self.options.benchmark
        opt['datasets'] = {'train': opt['datasets']['train']}
        for i, (name, setting) in enumerate(((n, s) for n in self.datasets for s in curves.settings), 1):
            opt['datasets'][f'val_{i}'] = {'name': f'{name}_{setting}', 'type': 'DegradedBenchmarkDataset',
                                           'dataroot_gt': self.datasets[name], 'setting': setting,
                                           'noise_sigma': bench.noise_sigma}
        psnr = {'type': 'calculate_psnr', 'crop_border': bench.crop_border, 'test_y_channel': False}
        execution = {k: opt['train'][k] for k in ('precision', 'channels_last') if k in opt['train']}
        opt['val'] = dict(opt.get('val') or execution, val_freq=curves.every, save_img=False, metrics={'psnr': psnr})


def use_paper_text_optimizer(opt: Dict[str, Any]) -> None:
    """The alignment paper's text (shared by the Dropout and TFD line): Adam beta2 0.999 and one cosine period over
    the whole run, where the released code (the option files) uses beta2 0.99 and restarts at 250k and 500k."""
    train = opt['train']
    optimizer = train.get('optim_g') or {}
    if optimizer.get('type') == 'Adam':
        optimizer['betas'] = [list(optimizer.get('betas', [0.9, 0.999]))[0], 0.999]
    scheduler = train.get('scheduler') or {}
    if scheduler.get('type') == 'CosineAnnealingRestartLR':
        scheduler.update(periods=[train['total_iter']], restart_weights=[1])


def set_iterations(opt: Dict[str, Any], iterations: int) -> None:
    train = opt['train']
    train['total_iter'] = iterations
    scheduler = train.get('scheduler') or {}
    if scheduler.get('type') == 'CosineAnnealingRestartLR':
        scheduler.update(periods=[iterations], restart_weights=[1])
