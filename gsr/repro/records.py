"""A study's records: what the report reads of each finished run, kept in the repository (the study file's
``records:`` folder) so that a study longer than one machine's session continues on another machine.

A run's record (``<records>/<variant>/seed<k>/``) holds its ``done.json`` (the options' and the checkpoint's
sha256, the training time), ``options.yml`` (its folders as the study file writes them), BasicSR's training logs
(``logs/``, the machine's folders named as in ``options.yml``: the curves, the regularizers' activity, the
stability table), ``analyses.json`` where the run was analysed, and ``rows.jsonl``: its rows of every evaluation
cache under the study's output (the benchmark, the protocol checks), each with the cache it came from.
The weights are not kept (a few hundred kB to MBs a run): a recorded run's benchmark rows and analyses are read
from its record, keyed on the checkpoint's sha256 as if the checkpoint were there, and a network is shipped only
from a run trained where it ships (``gsr repro --ship``).
"""
import json
import os
import shutil
from typing import Dict, Iterator, List, Tuple

import yaml

from gsr.repro.study import Run, Study
from gsr.utils.checkpoint import atomic_write_text, file_sha256
from gsr.utils.errors import GsrError

CACHE_FILE = 'per_image.jsonl'  # gsr.analysis.evaluation's result cache, one per evaluation output folder
ROWS_FILE = 'rows.jsonl'
ANALYSES_FILE = 'analyses.json'


def recorded(run: Run) -> bool:
    return bool(run.record) and os.path.isfile(os.path.join(run.record, 'done.json'))


def record_is_stale(run: Run) -> bool:
    """Whether the run's record was trained with other options than the study now gives the run (its options
    hash differs: the study file changed since it was recorded)."""
    with open(os.path.join(run.record, 'done.json')) as f:
        return json.load(f).get('options_sha256') != run.options_sha()


def checkpoint_sha256(run: Run) -> str:
    """The sha256 of the run's final checkpoint: the file's where it is here, else the one its ``done.json`` records
    (a run laid out from its record)."""
    if os.path.isfile(run.checkpoint):
        return file_sha256(run.checkpoint)
    with open(run.done_file) as f:
        sha = json.load(f).get('checkpoint_sha256')
    if not sha:
        raise GsrError(f'{run.key}: its checkpoint {run.checkpoint} is missing and done.json records no sha256')
    return sha


def cached_rows(output: str, model: str) -> Iterator[Tuple[str, Dict]]:
    """(cache path relative to ``output``, row) of every evaluation cache row of ``model`` under ``output``: per
    cache, the last row of each image and setting, which is the one the cache reads back."""
    for folder, _, files in sorted(os.walk(output)):
        if CACHE_FILE not in files:
            continue
        cache = os.path.join(folder, CACHE_FILE)
        last: Dict[Tuple, Dict] = {}
        with open(cache) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a torn last line (a killed evaluation) is no row
                    continue
                if isinstance(row, dict) and row.get('model') == model:
                    last[(row.get('dataset'), row.get('image'), row.get('setting'))] = row
        for row in last.values():
            yield os.path.relpath(cache, output), row


def training_logs(run: Run) -> List[str]:
    """The names of BasicSR's training logs of the run, oldest first (one per session that trained it)."""
    return sorted(f for f in os.listdir(run.experiment) if f.startswith('train_') and f.endswith('.log'))


def portable_log(text: str, output: str, written: Dict[str, str]) -> str:
    """A BasicSR log with this machine's folders named as the study writes them: the output folder as
    ``<output>``, each dataset folder as the study file names it (the lines the report reads carry no paths)."""
    for resolved, name in sorted(dict(written, **{output: '<output>'}).items(), key=lambda item: -len(item[0])):
        text = text.replace(resolved, name)
    return text


def write_record(study: Study, run: Run) -> str:
    """Write the record of a done run (benchmarked: its rows are in the output's caches) into ``run.record``,
    replacing an earlier one only once the new one is complete: the earlier one is renamed aside, the new one
    renamed in, then the earlier one removed: a complete record is on disk at every moment (between the two renames,
    as ``<record>.replaced``), never one half removed."""
    with open(run.done_file) as f:
        done = json.load(f)
    done['checkpoint_sha256'] = checkpoint_sha256(run)
    partial, replaced = run.record + '.partial', run.record + '.replaced'
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.join(partial, 'logs'))
    atomic_write_text(os.path.join(partial, 'done.json'), json.dumps(done, indent=1) + '\n')
    atomic_write_text(os.path.join(partial, 'options.yml'), yaml.safe_dump(run.portable_options(), sort_keys=False))
    for name in training_logs(run):
        with open(os.path.join(run.experiment, name)) as f:
            text = portable_log(f.read(), study.output, run.written)
        atomic_write_text(os.path.join(partial, 'logs', name), text)
    if os.path.isfile(os.path.join(run.folder, ANALYSES_FILE)):
        shutil.copy2(os.path.join(run.folder, ANALYSES_FILE), partial)
    lines = [json.dumps({'cache': cache, 'row': row}) for cache, row in cached_rows(study.output, run.key)]
    atomic_write_text(os.path.join(partial, ROWS_FILE), ''.join(line + '\n' for line in lines))
    shutil.rmtree(replaced, ignore_errors=True)
    if os.path.isdir(run.record):
        os.replace(run.record, replaced)
    os.replace(partial, run.record)
    shutil.rmtree(replaced, ignore_errors=True)
    return run.record


def restore_record(study: Study, run: Run) -> bool:
    """Lay a recorded run that is not done in the output folder out there as if it had trained here (its checkpoint
    aside); ``done.json`` last, so an interrupted restore leaves the run not done. Returns whether it did."""
    if not recorded(run) or os.path.isfile(run.done_file):
        return False
    os.makedirs(run.experiment, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(run.record, 'logs'))):
        shutil.copy2(os.path.join(run.record, 'logs', name), run.experiment)
    for name in ('options.yml', ANALYSES_FILE):
        if os.path.isfile(os.path.join(run.record, name)):
            shutil.copy2(os.path.join(run.record, name), run.folder)
    appended: Dict[str, List[str]] = {}
    with open(os.path.join(run.record, ROWS_FILE)) as f:
        for line in f:
            entry = json.loads(line)
            appended.setdefault(entry['cache'], []).append(json.dumps(entry['row']) + '\n')
    for cache, lines in appended.items():  # later lines win when a cache is read back
        path = os.path.join(study.output, cache)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'a') as f:
            f.writelines(lines)
    shutil.copy2(os.path.join(run.record, 'done.json'), run.done_file)
    return True
