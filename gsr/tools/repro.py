"""``gsr repro STUDY.yml``: the reproduction study. Trains every variant of the study file at every seed (each run
resumable, ``--jobs`` at a time), benchmarks the runs under the eight settings, runs the representation analyses,
tests each paper's claim with paired comparisons across seeds and images, and writes ``results.json`` and the
report (``docs/RESULTS.md`` for ``options/repro/cpu_small.yml``). A killed study continues where it stopped:
finished runs, benchmark rows and analyses are not redone; SIGTERM / SIGUSR1 while it trains stops it with every
run's state saved after its current step (exit status 3). ``--record`` benchmarks and analyses the finished runs and
writes their records into the study's ``records:`` folder (``gsr/repro/records.py``), from which the study continues
on another machine. Keys of the study file: ``gsr/repro/study.py``."""
import argparse
import os
import shlex
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from gsr.analysis.evaluation import BICUBIC, evaluate, load_config
from gsr.repro import report
from gsr.repro.records import record_is_stale, recorded, restore_record, write_record
from gsr.repro.results import collect
from gsr.repro.runner import (evaluation_config, forward_stop, is_done, progress, run_analyses, scale_weights,
                              source_trained, train_all)
from gsr.repro.study import WEIGHTS, Study
from gsr.utils.errors import GsrError
from gsr.utils.staging import claim_output_folder
from gsr.utils.stop_request import stop_on_signals

ANALYSED = ('baseline', 'align')  # the runs whose representations claims 4 and 5 read
CHECKED = ('baseline', 'align')   # the runs of the protocol checks (first seed)
NOISE_SETTINGS = ['noise', 'b+n', 'n+j', 'b+n+j']


def protocol_checks(study: Study, config: str, rows: List[Dict], progress: bool) -> Dict:
    """The benchmark's first-seed PSNR of the checked variants against the same under noise sigma 40 (noise
    settings) and under the other weights (all settings)."""
    import yaml

    from gsr.data.eval_protocol import settings_list
    from gsr.utils.checkpoint import atomic_write_text
    bench = study.options.benchmark
    seed = study.options.seeds[0]
    trained = {run.key for run in study.runs}  # --record leaves out the runs not done
    keys = [f'{v}/seed{seed}' for v in CHECKED if f'{v}/seed{seed}' in trained]
    if not bench.protocol_checks or not keys:
        return {}
    with open(config) as f:
        base = yaml.safe_load(f)
    other = 'raw' if bench.weights == 'ema' else 'ema'
    noisy = [s for s in NOISE_SETTINGS if s in settings_list(bench.settings)]
    variants = {'noise sigma 40 (noise settings)': {'noise_sigma': 40, 'settings': noisy},
                f'{other} weights (all settings)': {'weight': WEIGHTS[other]}}
    if not noisy:
        variants.pop('noise sigma 40 (noise settings)')
    out: Dict[str, Dict] = {}
    for check, change in variants.items():
        folder = check.split(' (')[0].replace(' ', '_')
        cfg = dict(base, name=f'{base["name"]}_{folder}', output=os.path.join(study.output, 'checks', folder))
        cfg['models'] = {k: dict(base['models'][k]) for k in keys}
        cfg.update({k: v for k, v in change.items() if k != 'weight'})
        for spec in cfg['models'].values():
            spec['param_key'] = change.get('weight', spec['param_key'])
        cfg['band_mape'] = 0
        path = os.path.join(cfg['output'], 'evaluate.yml')
        os.makedirs(cfg['output'], exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
        checked = evaluate(load_config(path), progress)
        settings = set(settings_list(cfg['settings']))
        for key in keys:
            mean = lambda rs: sum(r['psnr'] for r in rs) / len(rs)  # noqa: E731
            reference = [r for r in rows if r['model'] == key and r['setting'] in settings]
            out.setdefault(key.split('/')[0], {})[check] = {
                'reference': mean(reference), 'checked': mean([r for r in checked if r['model'] == key])}
    return out


REFERENCES = ('baseline', 'paired_baseline', 'baseline_noise_half', 'baseline_no_usm')  # not regularized


STORAGE_TOLERANCE_DB = 0.01  # the most float16 storage may move a shipped network's PSNR in any setting


def storage_change(study: Study, run, weights: Dict, storage: str) -> float:
    """The largest change of mean PSNR (dB) over the study's benchmark settings and images when the run's network is
    loaded from ``storage`` instead of float32 (0 for float32)."""
    import tempfile

    import torch
    import yaml

    from gsr.utils.pretrained import stored
    if storage == 'float32':
        return 0.0
    with tempfile.TemporaryDirectory() as folder:
        models = {}
        for kind in ('float32', storage):
            path = os.path.join(folder, f'{kind}.pth')
            torch.save({'params': stored(weights, kind)}, path)
            models[kind] = {'option_file': os.path.join(run.folder, 'options.yml'), 'checkpoint': path,
                            'param_key': 'params'}
        bench = study.options.benchmark
        cfg = {'output': os.path.join(folder, 'out'), 'settings': bench.settings, 'noise_sigma': bench.noise_sigma,
               'crop_border': bench.crop_border, 'metrics': ['psnr'], 'datasets': study.datasets, 'models': models}
        with open(os.path.join(folder, 'check.yml'), 'w') as f:
            yaml.safe_dump(cfg, f)
        rows = evaluate(load_config(os.path.join(folder, 'check.yml')), progress=False)
    mean = {(m, s): np.mean([r['psnr'] for r in rows if r['model'] == m and r['setting'] == s])
            for m in models for s in {r['setting'] for r in rows}}
    return max(abs(mean[(storage, s)] - mean[('float32', s)]) for _, s in mean)


def ship_networks(study: Study, results: Dict, prefix: str, command: str) -> List[str]:
    """Ship the first seed's baseline and, where the run selected any, its best regularized variant (highest mean
    PSNR over seeds and settings) into the package as ``<prefix>-baseline`` and ``<prefix>-<variant>``, and withdraw
    the study's other ``<prefix>-`` networks (an earlier best variant: the package ships the study as it now stands);
    a network above 4 MB in float32 is stored in float16 when that moves its benchmark PSNR by at most
    ``STORAGE_TOLERANCE_DB`` in every setting."""
    from gsr.utils.checkpoint import network_weights
    from gsr.utils.pretrained import manifest, ship, storage_for, withdraw
    means = {v: e['mean']['mean'] for v, e in results['psnr_by_setting'].items()}
    if 'baseline' not in means:
        raise GsrError('--ship needs the baseline variant among the variants run')
    regularized = [v for v in means if v not in REFERENCES]
    seed = study.options.seeds[0]
    written = []
    runs = [next(r for r in study.runs if r.variant == variant and r.seed == seed)
            for variant in ['baseline'] + ([max(regularized, key=means.get)] if regularized else [])]
    check_weights_here(runs)
    names = {run.key: f'{prefix}-{run.variant.replace("_", "-")}' for run in runs}
    for run in runs:
        variant, name = run.variant, names[run.key]
        weights = network_weights(run.checkpoint, WEIGHTS[study.options.benchmark.weights])
        storage = storage_for(weights)
        change = storage_change(study, run, weights, storage)
        if change > STORAGE_TOLERANCE_DB:
            storage, change = 'float32', 0.0
        provenance = {'study': study.options.name, 'variant': variant, 'seed': seed, 'command': command,
                      'storage_psnr_change_db': change,
                      'weights': study.options.benchmark.weights, 'mean_psnr_over_seeds': means[variant],
                      'option_overrides': results['variant_overrides'][variant],
                      'training_options': run.portable_options()}
        written.append(ship(name, weights, run.options, provenance, storage=storage))
    withdraw([name for name, entry in manifest().items() if name.startswith(f'{prefix}-')
              and name not in names.values() and entry.get('study') == study.options.name])
    return written


def check_weights_here(runs: List) -> None:
    """A network ships only from a run whose checkpoint is here (not one laid out from its record)."""
    missing = [run.key for run in runs if not os.path.isfile(run.checkpoint) and recorded(run)]
    if missing:
        raise GsrError(f'--ship: {", ".join(missing)} came from the study\'s records, which keep no weights: ship '
                       'where they trained, or move their records and runs away to retrain them here')


def check_records_current(study: Study) -> None:
    """Before anything is laid out: every record still to be laid out was trained with the options the study now
    gives its run (a scaled run's weights are known only later, from its source's logs, and are checked then)."""
    stale = [run.key for run in study.runs if run.scaling is None and recorded(run)
             and not os.path.isfile(run.done_file) and record_is_stale(run)]
    if stale:
        raise GsrError(f'{study.records}: {", ".join(stale)} were recorded with other options than the study now '
                       'gives them; set another records: folder in the study file, or move those records away to '
                       'retrain the runs')


def record_finished_runs(study: Study, say: Callable[[str], None], progress_bar: bool) -> int:
    """``--record``: benchmark and analyse the finished runs (nothing is trained) and write their records."""
    scale_weights(study, [run for run in study.runs if source_trained(study, run)])
    waiting = [run.key for run in study.runs if not is_done(run)]
    study.runs = [run for run in study.runs if run.key not in waiting]
    if not study.runs:
        raise GsrError(f'--record: no run of {study.path} is done in {study.output}')
    measure(study, say, progress_bar)
    for run in study.runs:
        say(f'recorded {write_record(study, run)}')
    say(f'{len(study.runs)} runs recorded' + (f'; not done, so not recorded: {", ".join(waiting)}' if waiting else ''))
    return 0


def measure(study: Study, say: Callable[[str], None], progress_bar: bool) -> Tuple[List, List, Dict, Dict]:
    """The benchmark rows (bicubic's apart), the analyses and the protocol checks of the study's runs (cached)."""
    say('benchmark')
    config = evaluation_config(study)
    rows = evaluate(load_config(config), progress_bar)
    bicubic = [r for r in rows if r['model'] == BICUBIC]
    rows = [r for r in rows if r['model'] != BICUBIC]
    say('analyses')
    analyses = {run.key: run_analyses(study, run) for run in study.runs if run.variant in ANALYSED}
    return rows, bicubic, analyses, protocol_checks(study, config, rows, progress_bar)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='gsr repro', description=__doc__)
    parser.add_argument('study', help='study file, e.g. options/repro/cpu_small.yml')
    parser.add_argument('--jobs', type=int, default=1, help='runs trained at the same time (the cores are shared)')
    parser.add_argument('--variants', nargs='+', metavar='NAME', help='run only these variants of the study')
    parser.add_argument('--seeds', type=int, metavar='N', help='train and report only the first N seeds of the '
                        'study (a budget choice the report states)')
    parser.add_argument('--report', metavar='PATH', help='write the report here instead of the study file\'s '
                        '`report:` (e.g. a recipe check of some variants, which is not the study\'s report)')
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument('--status', action='store_true', help='say where each run stands (done, the iteration it '
                        'reached, its last saved state and the training minutes left at its pace, not started) and '
                        'stop; writes nothing')
    parser.add_argument('--ship', metavar='PREFIX', help='also ship the first seed\'s baseline and best regularized '
                        'network (where the variants run include one) into the package (gsr/pretrained) as '
                        'PREFIX-baseline and PREFIX-<variant>')
    parser.add_argument('--record', action='store_true', help='benchmark and analyse the runs done so far (training '
                        'none) and write their records into the study\'s records: folder, to commit: the study then '
                        'continues from them on another machine; writes no report')
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise GsrError(f'--jobs must be at least 1, got {args.jobs}')
    start = time.time()
    study = Study(args.study, args.variants, args.seeds)  # every check before anything is written
    if args.ship and 'baseline' not in study.selected:
        raise GsrError('--ship needs the baseline variant among the variants run (--variants)')
    if args.record and not study.records:
        raise GsrError(f'{args.study}: --record needs the study\'s records: folder')
    if args.status:  # a scaled run is compared with its done.json at the weights the runner gave it
        known = {run.key for run in study.runs if source_trained(study, run)}
        scale_weights(study, [run for run in study.runs if run.key in known])
        lines = [progress(run, run.key in known) for run in study.runs]
        done = sum(': done' in line for line in lines)
        print('\n'.join(lines + [f'{done} of {len(lines)} runs done']))
        return 0
    check_records_current(study)
    if args.ship:
        check_weights_here([run for run in study.runs if run.variant == 'baseline'
                            and run.seed == study.options.seeds[0]])
    report_path = os.path.abspath(args.report) if args.report else study.report
    claim_output_folder(study.output, [study.hr, args.study] + list(study.datasets.values()))

    def say(text: str) -> None:
        if not args.no_progress:
            print(f'[{time.strftime("%H:%M:%S")}] {text}', flush=True)

    restored = [run.key for run in study.runs if restore_record(study, run)]
    if restored:
        say(f'{len(restored)} runs laid out from their records in {study.records}: {", ".join(restored)}')
    if args.record:
        return record_finished_runs(study, say, not args.no_progress)
    say(f'{len(study.runs)} runs ({len(study.selected)} variants x {len(study.seeds_run)} seeds) in '
        f'{study.output}, {args.jobs} at a time')
    with stop_on_signals(forward=forward_stop):  # SIGTERM / SIGUSR1: every run saves after its step, the study ends
        factors = train_all(study, args.jobs, say)
    rows, bicubic, analyses, checks = measure(study, say, not args.no_progress)
    command = 'gsr repro ' + ' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    meta = {'command': command, 'wall_seconds': time.time() - start}
    results = collect(study, rows, bicubic, analyses, factors, checks, meta)
    report.write(results, report_path, os.path.join(study.output, 'results.json'))
    say(f'wrote {report_path} and {os.path.join(study.output, "results.json")}')
    if args.ship:
        for path in ship_networks(study, results, args.ship, command):
            say(f'shipped {path}')
    for claim in results['claims']:
        say(f'claim {claim["claim"]}: {claim["verdict"]}')
    return 0
