"""Running a study: every run trained in its own process (resumable, ``--jobs`` at a time), then the benchmark and
the analyses of the finished runs, each cached, so a killed study continues where it stopped."""
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Set, Tuple

import numpy as np
import yaml

from gsr.analysis.evaluation import BICUBIC
from gsr.analysis.representation import ImageSet, cossim_images, cossim_per_image, ddr_clustering
from gsr.archs.feature_tap import FeatureTap
from gsr.archs.network_checkpoint import load_network
from gsr.data.eval_protocol import settings_list
from gsr.repro.records import checkpoint_sha256, record_is_stale, recorded, training_logs
from gsr.repro.study import WEIGHTS, Run, Study
from gsr.utils.checkpoint import atomic_write_text, file_sha256, training_states
from gsr.utils.errors import GsrError
from gsr.utils.execution import default_device
from gsr.utils.image_io import list_images
from gsr.utils.stop_request import STOPPED_EXIT_CODE, TrainingStopped, stop_requested

Curves = Dict[str, List[Tuple[int, float]]]
LOG_ITER = re.compile(r'iter:\s*([\d,]+)')
LOG_VALUE = re.compile(r'\b([a-z][a-z0-9_]*): ([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)\b')


def is_done(run: Run) -> bool:
    """A run is done when ``done.json`` records the options it was trained with; other options are an error (the
    study file changed: a new ``output`` keeps both)."""
    if not os.path.isfile(run.done_file):
        return False
    with open(run.done_file) as f:
        done = json.load(f)
    if done.get('options_sha256') != run.options_sha():
        record = f' and its record {run.record}' if recorded(run) else ''
        raise GsrError(f'{run.folder}: this run was trained with other options than the study now gives it; set '
                       f'another output folder in the study file, or move the run{record} away to retrain it')
    return True


def progress(run: Run, weights_known: bool = True) -> str:
    """One line on where ``run`` stands: done (its training minutes), its last logged iteration and saved state
    (and the training minutes left at the pace its logs show), or not started. Reads the run's folder and record
    only; a run's record is checked against its options only where its weights are known (``source_trained``)."""
    total = run.options['train']['total_iter']
    try:
        done = is_done(run)
    except GsrError:
        return f'{run.key}: trained with other options than the study now gives it'
    if not done and recorded(run) and weights_known and record_is_stale(run):
        return f'{run.key}: its record was trained with other options than the study now gives it'
    if done or recorded(run):
        with open(run.done_file if done else os.path.join(run.record, 'done.json')) as f:
            minutes = json.load(f)['seconds'] / 60
        return f'{run.key}: done{"" if done else " (its record)"}, {minutes:.0f} training minutes'
    if not os.path.isdir(run.experiment):
        return f'{run.key}: not started ({total:,} iterations)'
    saved = max(training_states(os.path.join(run.experiment, 'training_states')), default=None)
    last, minutes = validation_curves(run)['minutes'][-1]  # the last logged iteration and the minutes to it
    pace = f', about {minutes / last * (total - last):.0f} training minutes left at its pace' if minutes > 0 else ''
    return (f'{run.key}: iteration {last:,} of {total:,} logged, ' +
            (f'state saved at {saved:,}' if saved is not None else 'no state saved yet') + pace)


def write_run_options(run: Run) -> str:
    """``options.yml`` of the run (first start) or the one already there (a resumed run), which must match."""
    path = os.path.join(run.folder, 'options.yml')
    text = yaml.safe_dump(run.options, sort_keys=False)
    if os.path.isfile(path):
        with open(path) as f:
            if yaml.safe_load(f) != run.options:
                raise GsrError(f'{path}: a started run with other options than the study now gives it; set another '
                               'output folder in the study file, or move the run away to retrain it')
        return path
    os.makedirs(run.folder, exist_ok=True)
    atomic_write_text(path, text)
    return path


RUNNING: Set[subprocess.Popen] = set()  # the training processes under way, which a stop request is passed to


def forward_stop(signum: int) -> None:
    """Pass a stop request (``gsr.utils.stop_request``) to every training process under way: each saves its state
    after its current step and exits."""
    for process in list(RUNNING):
        process.send_signal(signum)


def train(run: Run, threads: int, say: Callable[[str], None]) -> None:
    """Train one run with ``python -m gsr.train --auto_resume`` in its folder (BasicSR resumes a killed run from
    its last training state), then record it as done. After a stop request no run starts and a stopped one ends
    the study with ``TrainingStopped``."""
    if is_done(run):
        return
    if stop_requested():
        raise TrainingStopped(f'{run.key}: not started (stop requested)')
    path = write_run_options(run)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.time()
    say(f'{run.key}: training ({run.options["train"]["total_iter"]} iterations, log {run.experiment})')
    with open(os.path.join(run.folder, 'train.out'), 'a') as out:
        process = subprocess.Popen([sys.executable, '-m', 'gsr.train', '-opt', path, '--auto_resume'],
                                   cwd=run.folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        RUNNING.add(process)
        try:
            returncode = process.wait()
        finally:
            RUNNING.discard(process)
    if returncode == STOPPED_EXIT_CODE:
        raise TrainingStopped(f'{run.key}: stopped on request, its training state saved ({run.folder}/train.out); '
                              'the same gsr repro command continues the study')
    if returncode != 0:
        with open(os.path.join(run.folder, 'train.out')) as f:
            last = ([line.strip() for line in f if line.strip()] or [''])[-1]
        raise GsrError(f'{run.key}: training failed (exit {returncode}; see {run.folder}/train.out): {last}')
    seconds = logged_seconds(run)
    atomic_write_text(run.done_file, json.dumps({'options_sha256': run.options_sha(), 'seconds': seconds,
                                                 'checkpoint_sha256': file_sha256(run.checkpoint),
                                                 'finished': time.strftime('%Y-%m-%d %H:%M:%S')}))
    say(f'{run.key}: done ({seconds:.0f} s of training over its sessions; {time.time() - start:.0f} s this time)')


def logged_seconds(run: Run) -> float:
    """The run's training time over every session of it, from its BasicSR logs (``validation_curves``'s minutes:
    validations, the waits between sessions and stopped processes left out)."""
    return validation_curves(run)['minutes'][-1][1] * 60


def training_curves(run: Run) -> Curves:
    """Every value the model logged (``l_*`` terms, ``grad_*`` ratios, the regularizers' metrics such as
    ``bacc_det``) by iteration, from BasicSR's training logs in order (a resumed run's later log wins for the
    iterations it repeats). BasicSR writes them after the bracketed epoch / iteration / lr / eta / time header."""
    curves: Dict[str, Dict[int, float]] = {}
    for name in training_logs(run):
        with open(os.path.join(run.experiment, name)) as f:
            for line in f:
                it = LOG_ITER.search(line)
                if not it or ' l_' not in line:
                    continue
                for key, value in LOG_VALUE.findall(line[line.rindex(']') + 1:]):
                    curves.setdefault(key, {})[int(it.group(1).replace(',', ''))] = float(value)
    return {k: sorted(v.items()) for k, v in curves.items()}


LOG_TIME = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ')
LOG_START = re.compile(r'Start training from epoch: \d+, iter: ([\d,]+)')
LOG_VALIDATION = re.compile(r'Validation (\S+)')
LOG_PSNR = re.compile(r'# psnr: ([-+]?\d+(?:\.\d+)?)')


def log_time(line: str) -> float:
    """Seconds since the epoch of a BasicSR log line's timestamp (``nan`` for a line without one)."""
    import datetime
    found = LOG_TIME.match(line)
    if not found:
        return float('nan')
    return datetime.datetime.strptime(found.group(1), '%Y-%m-%d %H:%M:%S,%f').timestamp()


SUSPENDED = 5.0  # a logged interval longer than this many times the run's median: the process was stopped


def validation_curves(run: Run) -> Dict[str, Dict]:
    """The run's validation during training (``curves:``): ``{'<dataset>_<setting>': {iteration: psnr}}`` and
    ``'minutes'``: training minutes at each validated iteration, the time between logged iterations with the
    validations themselves left out (a resumed run continues from the minutes of the iteration it resumed at; an
    interval longer than ``SUSPENDED`` times the median per-iteration time counts as the median, as the process was
    stopped then)."""
    psnr: Dict[str, Dict[int, float]] = {}
    intervals: List[Tuple[int, int, float]] = []  # (from iteration, to iteration, seconds)
    for name in training_logs(run):
        last_it, last_t, validating, pending = None, float('nan'), None, None
        with open(os.path.join(run.experiment, name)) as f:
            for line in f:
                t = log_time(line)
                start, it, val = LOG_START.search(line), LOG_ITER.search(line), LOG_VALIDATION.search(line)
                if start:
                    last_it, last_t = int(start.group(1).replace(',', '')), t
                elif val:
                    validating, pending = val.group(1), t
                elif validating and LOG_PSNR.search(line):
                    psnr.setdefault(validating, {})[last_it] = float(LOG_PSNR.search(line).group(1))
                    validating = None
                elif it and ' l_' in line and last_it is not None:
                    now = int(it.group(1).replace(',', ''))
                    intervals.append((last_it, now, t - (pending if pending is not None else last_t)))
                    last_it, last_t, pending = now, t, None
    per_iteration = float(np.median([s / (b - a) for a, b, s in intervals if b > a])) if intervals else 0.0
    minutes = {0: 0.0}
    for a, b, seconds in intervals:  # in log order: a resumed run's intervals start from a known iteration
        capped = min(seconds, SUSPENDED * per_iteration * (b - a))
        minutes[b] = minutes.get(a, max(minutes.values())) + capped / 60
    return {'psnr': {k: sorted(v.items()) for k, v in psnr.items()},
            'minutes': sorted(minutes.items())}


def late_median(curve: List[Tuple[int, float]]) -> float:
    """The median over the second half of training (the logged iterations past the middle)."""
    if not curve:
        return float('nan')
    last = curve[-1][0]
    return float(np.median([v for it, v in curve if it > last / 2] or [curve[-1][1]]))


def growth(curve: List[Tuple[int, float]]) -> float:
    """The median over the last quarter of training divided by the median over the first half: above 1 the loss
    rose while the run trained (a regularizer that ran away shows here even when the pixel loss hides it)."""
    if not curve:
        return float('nan')
    last = curve[-1][0]
    early = np.median([v for it, v in curve if it <= last / 2] or [curve[0][1]])
    late = np.median([v for it, v in curve if it > last * 3 / 4] or [curve[-1][1]])
    return float(late / early) if early else float('nan')


def apply_ratio_scaling(study: Study, run: Run) -> float:
    """Scale the run's ``scale_to_ratio`` terms so that their logged gradient ratio in the source run (first
    seed) becomes the target; the factor is fixed once, from training logs only (never from test results)."""
    scaling = run.scaling
    source = next(r for r in study.runs if r.variant == scaling.run and r.seed == study.options.seeds[0])
    curves = training_curves(source)
    missing = [t for t in scaling.terms if f'grad_{t}' not in curves]
    if missing:
        raise GsrError(f'variants.{run.variant}.scale_to_ratio: {source.key} logged no gradient ratio for '
                       f'{", ".join(missing)} (set train.gradient_ratio_freq in the base or the variant)')
    ratio = sum(late_median(curves[f'grad_{t}']) for t in scaling.terms)
    factor = scaling.target / max(ratio, 1e-30)
    for term in scaling.terms:
        loss = run.options['train']['regularizers'][term]
        loss['loss_weight'] = float(loss.get('loss_weight', 1.0)) * factor
    return factor


def source_trained(study: Study, run: Run) -> bool:
    """Whether ``run``'s weights are known: it scales none, or the run it scales them from is trained."""
    return run.scaling is None or is_done(study.make_run(run.scaling.run, study.options.seeds[0]))


def scale_weights(study: Study, runs: List[Run]) -> Dict[str, float]:
    """Apply ``scale_to_ratio`` to the scaled runs of ``runs`` (whose source runs are trained), once each, before
    they are trained or compared with their ``done.json``. Returns each one's weight factor."""
    return {run.key: apply_ratio_scaling(study, run) for run in runs if run.scaling is not None}


def train_all(study: Study, jobs: int, say: Callable[[str], None]) -> Dict[str, float]:
    """Train every run (seed by seed, so a stopped study has whole seeds); runs scaled from another run's logs go
    last (a scaled run whose source run is already trained need not wait for the rest). Returns the weight factor
    of each scaled run."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ready = {run.key: source_trained(study, run) for run in study.runs}
    ordered = sorted(study.runs, key=lambda r: (not ready[r.key], study.options.seeds.index(r.seed)))
    waves = [[r for r in ordered if ready[r.key]], [r for r in ordered if not ready[r.key]]]
    factors = {}
    for wave in waves:
        factors.update(scale_weights(study, wave))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for future in [pool.submit(train, run, threads, say) for run in wave]:
                future.result()
    return factors


def evaluation_config(study: Study) -> str:
    """``gsr evaluate``'s config for every run and bicubic upscaling, the floor (its cache in
    ``<output>/evaluation`` makes reruns free)."""
    bench = study.options.benchmark
    cfg = {
        'name': f'{study.options.name}_benchmark', 'output': os.path.join(study.output, 'evaluation'),
        'scale': study.base.get('scale', 4), 'crop_border': bench.crop_border, 'settings': bench.settings,
        'noise_sigma': bench.noise_sigma, 'seed': 0, 'metrics': bench.metrics, 'band_mape': bench.band_mape,
        'datasets': study.datasets,
        'models': dict({BICUBIC: BICUBIC}, **{run.key: network_entry(run, WEIGHTS[bench.weights])
                                              for run in study.runs}),
    }
    path = os.path.join(study.output, 'evaluation', 'evaluate.yml')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path


def network_entry(run: Run, param_key: str) -> Dict:
    """``gsr evaluate``'s model entry of a trained run; a recorded run without its checkpoint here is named by the
    checkpoint's sha256, and its rows come from the cache its record filled."""
    entry = {'option_file': os.path.join(run.folder, 'options.yml'), 'checkpoint': run.checkpoint,
             'param_key': param_key}
    if not os.path.isfile(run.checkpoint):
        entry['checkpoint_sha256'] = checkpoint_sha256(run)
    return entry


def run_analyses(study: Study, run: Run) -> Dict:
    """The representation analyses of one run on the study's analysis set (cached in ``<run>/analyses.json``, keyed
    on the checkpoint's content, the analysis images' content and every option the numbers depend on): per image,
    the clean/degraded feature cosine similarity for blur, noise and JPEG (TFD's analysis) and the
    Calinski-Harabasz index of the deep degradation representation, on the pooled features and on their 2-D t-SNE
    embedding (the alignment paper's Sec. 5; which one it used is not known)."""
    path = os.path.join(run.folder, 'analyses.json')
    bench = study.options.benchmark
    images = ImageSet(study.datasets[next(iter(study.datasets))], study.base['scale'], bench.noise_sigma, seed=0,
                      settings=settings_list(bench.settings))
    crop, crops_per_image = 32, 4
    inputs = {'checkpoint_sha256': checkpoint_sha256(run),  # everything the numbers depend on
              'images': {os.path.basename(p): file_sha256(p) for p in list_images(images.hr)},
              'options': {'settings': list(images.settings), 'scale': images.scale,
                          'noise_sigma': images.noise_sigma, 'seed': images.seed, 'crop': crop,
                          'crops_per_image': crops_per_image, 'protocol': images.protocol}}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    if os.path.isfile(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get('inputs_sha256') == key:
            return cached
    if not os.path.isfile(run.checkpoint):
        raise GsrError(f'{run.key}: its analyses must be recomputed (the images or options changed) but its '
                       f'checkpoint is not here ({run.checkpoint}; a recorded run): retrain it where it is needed')
    net = load_network(run.options, run.checkpoint, WEIGHTS[bench.weights], default_device())
    tap = FeatureTap(net, (run.options.get('feature_tap') or {}).get('layer', 'conv_last'))
    clustering = ddr_clustering(net, tap, images, crop, crops_per_image)
    result = {
        'inputs_sha256': key, 'dataset': next(iter(study.datasets)),
        'cossim': cossim_per_image(net, tap, cossim_images(images)),
        'chi_pooled': clustering.chi,
        'chi_tsne': clustering.chi_embedded,
    }
    atomic_write_text(path, json.dumps(result))
    return result
