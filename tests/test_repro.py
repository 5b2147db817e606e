"""The reproduction study (``gsr repro``): the statistics helper on known inputs, the study runner on a
two-variant, one-seed, few-iteration study (resumes after a kill without redoing finished runs; RESULTS.md's
numbers are results.json's)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import List

import numpy as np
import pytest
import yaml

from gsr.repro.stats import paired_comparison, verdict
from tests.conftest import REPO


# ------------------------------------------------------------------------------------------------ statistics
def test_paired_comparison_gives_known_answers():
    d = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [1.5, 2.5, 3.5]])
    c = paired_comparison(d)
    assert c.mean == pytest.approx(2.5) and c.seed_means == [2.0, 3.0, 2.5] and c.n == 9
    assert c.seed_std == pytest.approx(0.5)
    # t = mean / (s / sqrt(n)): over the nine differences (t(8)) and over the three seed means (t(2))
    from scipy import stats
    t = 2.5 / (np.std(d, ddof=1) / np.sqrt(9))
    assert c.t_p == pytest.approx(2 * stats.t.sf(t, 8))
    assert c.seed_t_p == pytest.approx(2 * stats.t.sf(2.5 / (0.5 / np.sqrt(3)), 2))
    assert (c.positive, c.negative) == (9, 0) and c.sign_p == pytest.approx(2 * 0.5**9)
    assert verdict(c, 1) == 'holds' and verdict(c, -1) == 'does not hold'


def test_verdict_needs_every_seed_to_agree_and_significance():
    rng = np.random.default_rng(0)
    noise = paired_comparison(rng.normal(0, 1, (3, 20)))
    assert verdict(noise) == 'inconclusive' and noise.t_p > 0.05
    split = paired_comparison(np.array([[1.0, 1.1, 0.9], [1.0, 1.2, 0.8], [-0.1, -0.2, -0.05]]))
    assert split.t_p < 0.05 and verdict(split) == 'inconclusive'  # one seed disagrees
    one_seed = paired_comparison(np.array([[1.0, 1.1, 0.9, 1.2]]))
    assert one_seed.t_p < 0.05 and verdict(one_seed) == 'inconclusive (one seed)'  # training noise not measured
    ties = paired_comparison(np.zeros((2, 3)))
    assert ties.sign_p == 1.0 and ties.t_p == 1.0 and ties.seed_t_p == 1.0 and verdict(ties) == 'inconclusive'


def test_a_verdict_is_wrong_about_as_often_as_its_level_when_training_luck_dominates():
    """Each seed's training shifts every image's difference alike (seed spread 0.03 dB, image noise 0.01 dB, the
    small study's scale): with no effect, a verdict other than inconclusive is a false one and must be rare (the
    level is 5 %; the seeds x images t-test with every seed agreeing gave one about a quarter of the time, as two
    retrainings of the small study did); a real effect twice the seed spread is still found at 5 seeds."""
    rng = np.random.default_rng(0)

    def verdicts(effect: float, seeds: int) -> List[str]:
        return [verdict(paired_comparison(effect + rng.normal(0, 0.03, (seeds, 1)) + rng.normal(0, 0.01, (seeds, 57))))
                for _ in range(2000)]
    false = np.mean([v != 'inconclusive' for v in verdicts(0.0, 3)])
    assert false <= 0.07, false  # 5 % and the simulation's own error (0.005 at 2,000 studies)
    assert np.mean([v == 'holds' for v in verdicts(0.06, 5)]) >= 0.6


def test_variant_overrides_merge_and_remove_keys():
    from gsr.utils.options import merge
    base = {'train': {'regularizers': {'a': {'w': 1}}, 'lr': 1}, 'paired': False}
    merged = merge(base, {'train': {'regularizers': {'b': {'w': 2}}, 'lr': None}, 'paired': True})
    assert merged == {'train': {'regularizers': {'a': {'w': 1}, 'b': {'w': 2}}}, 'paired': True}
    assert base['train']['lr'] == 1  # the base is not modified


# ------------------------------------------------------------------------------------------------ runner
def tiny_study(tmp_path, photos, align_iterations=4, acting_source=None, records=False):
    """Baseline and align, one seed, a tiny network; align may train longer (to be killed while it trains); with
    ``acting_source`` also ``acting``, align with its weight scaled from that variant's logs; with ``records`` the
    study keeps its records in ``tmp_path / 'records'``."""
    base = yaml.safe_load(open(os.path.join(REPO, 'options', 'repro', 'base_srresnet_small.yml')))
    base['network_g'].update(num_feat=8, num_block=1)
    base['datasets']['train'].update(gt_size=32, crop_pad_size=80, batch_size_per_gpu=2, num_worker_per_gpu=0,
                                     dataset_enlarge_ratio=50)
    base['train'].update(gradient_ratio_freq=2)
    base['logger'].update(print_freq=2, save_checkpoint_freq=2)
    (tmp_path / 'base.yml').write_text(yaml.safe_dump(base))
    study = {
        'name': 'tiny', 'base': 'base.yml', 'hr': [photos], 'iterations': 4, 'seeds': [0],
        'output': str(tmp_path / 'out'), 'report': str(tmp_path / 'docs' / 'RESULTS.md'),
        'benchmark': {'datasets': {'photos': [photos]}, 'settings': ['clean', 'noise', 'b+n+j'],
                      'metrics': ['psnr', 'ssim'], 'band_mape': 4, 'protocol_checks': True},
        'curves': {'every': 2, 'settings': ['noise', 'b+n+j']},
        'variants': {
            'baseline': {},
            'align': {'paired': True, 'datasets': {'train': {'kernel_sets': 2, 'batch_size_per_gpu': 2}},
                      'train': {'total_iter': align_iterations, 'regularizers': {
                          'l_align': {'type': 'FeatureAlignmentLoss', 'loss_weight': 1.0}}}},
        },
    }
    if acting_source:
        scaling = {'run': acting_source, 'terms': ['l_align'], 'target': 0.1}
        study['variants']['acting'] = {'from': 'align', 'scale_to_ratio': scaling}
    if records:
        study['records'] = str(tmp_path / 'records')
    if align_iterations != 4:
        study['iterations'] = None
        study['variants']['baseline'] = {'train': {'total_iter': 4}}
    path = tmp_path / 'study.yml'
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return str(path)


def gsr_repro(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, '-m', 'gsr.cli', 'repro'] + args, cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_study_resumes_after_a_kill_and_the_report_numbers_are_the_json_numbers(tmp_path, small_photo_folder):
    path = tiny_study(tmp_path, small_photo_folder, align_iterations=400)
    out = tmp_path / 'out'
    process = gsr_repro([path, '--jobs', '1'], tmp_path)
    deadline = time.time() + 300
    states = out / 'align' / 'seed0' / 'experiments' / 'tiny_align_seed0' / 'training_states'
    while not (states.is_dir() and any(states.glob('*.state'))) and time.time() < deadline:
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # align is training: 400 iterations take far longer than 2
    process.wait()
    assert (out / 'baseline' / 'seed0' / 'done.json').is_file()
    assert not (out / 'align' / 'seed0' / 'done.json').is_file()
    done_before = (out / 'baseline' / 'seed0' / 'done.json').read_text()
    baseline_logs = sorted((out / 'baseline' / 'seed0' / 'experiments').rglob('train_*.log'))

    study = yaml.safe_load(open(path))  # finish quickly: the killed run resumes with its options unchanged
    # --report: the report goes there, not to the study file's `report:`
    result = gsr_repro([path, '--jobs', '2', '--no-progress', '--report', str(tmp_path / 'check' / 'R.md')], tmp_path)
    output, _ = result.communicate(timeout=900)
    assert result.returncode == 0, output[-3000:]
    assert (out / 'baseline' / 'seed0' / 'done.json').read_text() == done_before  # not redone
    assert sorted((out / 'baseline' / 'seed0' / 'experiments').rglob('train_*.log')) == baseline_logs
    align_logs = sorted((out / 'align' / 'seed0' / 'experiments').rglob('train_*.log'))
    assert len(align_logs) == 2 and 'Resuming training from epoch' in align_logs[1].read_text()
    assert study['variants']['align']['train']['total_iter'] == 400

    results = json.load(open(out / 'results.json'))
    assert not (tmp_path / 'docs').exists()
    report = (tmp_path / 'check' / 'R.md').read_text()
    assert report.startswith('# Reproduction study: tiny') and 'gsr repro' in report
    for variant, per_setting in results['psnr_by_setting'].items():
        row = next(line for line in report.splitlines() if line.startswith(f'| {variant} | ') and '±' in line)
        cells = re.findall(r'([-\d.]+) ± ([-\d.]+)', row)
        expected = [(f'{per_setting[s]["mean"]:.2f}', f'{per_setting[s]["std"]:.2f}')
                    for s in results['settings'] + ['mean']]
        assert cells == expected
    claim1 = results['claims'][0]['comparisons'][0]
    assert claim1['label'] == 'align - baseline (PSNR, all settings)'
    assert f'| {claim1["label"]} | > 0 | {claim1["mean"]:+.4f} dB |' in report
    assert results['regularizer_activity']['align']['l_align']['ratio'] > 0
    checks = {'noise sigma 40 (noise settings)', 'raw weights (all settings)'}
    assert set(results['protocol_checks']['baseline']) == checks
    assert (tmp_path / 'check' / 'R_plots' / 'gains.png').is_file()

    # bicubic, scored in the same run, and the learning curves (validation every 2 iterations, across the resume)
    floor = results['bicubic_by_setting']
    assert '| bicubic | ' + ' | '.join(f'{floor[s]:.2f}' for s in results['settings'] + ['mean']) + ' |' in report
    gains = [results['psnr_by_setting']['align'][s]['mean'] - floor[s] for s in results['settings'] + ['mean']]
    assert '| align | ' + ' | '.join(f'{g:+.2f}' for g in gains) + ' |' in report
    curves = results['learning_curves']
    assert curves['variants']['baseline']['iterations'] == [2, 4]
    # BasicSR saves an iteration's state before validating it: a kill between the two resumes after that
    # iteration, which then has no point; every other even iteration has one
    resumed_at = int(re.search(r'Resuming training from epoch: \d+, iter: (\d+)', align_logs[1].read_text()).group(1))
    every = list(range(2, 401, 2))
    assert curves['variants']['align']['iterations'] in (every, [it for it in every if it != resumed_at])
    minutes = curves['variants']['align']['minutes']
    assert all(m is not None for m in minutes) and minutes == sorted(minutes)
    assert set(curves['variants']['align']['psnr']) == {'noise', 'b+n+j'}
    assert 0 < curves['bicubic']['noise'] < 40
    assert (tmp_path / 'check' / 'R_plots' / 'learning_curves_minutes.png').is_file()


def logged_iterations(log) -> List[int]:
    """The iterations of a BasicSR training log's loss lines (none while the file does not exist)."""
    text = log.read_text() if log.is_file() else ''
    return [int(i.replace(',', '')) for i in re.findall(r'\[epoch:\s*\d+, iter:\s*([\d,]+)', text)]


@pytest.mark.slow
def test_a_stop_signal_to_the_study_saves_the_running_run_after_its_step(tmp_path, small_photo_folder):
    """SIGTERM to ``gsr repro`` alone (as ``kill`` or a scheduler sends it): the study passes it on to the training
    process, which saves the state of its last step and exits; the study ends with status 3, the run not done,
    and ``--auto_resume`` continues from that step."""
    path = tiny_study(tmp_path, small_photo_folder, align_iterations=400)
    base = yaml.safe_load((tmp_path / 'base.yml').read_text())
    base['logger']['save_checkpoint_freq'] = 1000  # any state saved is the stop's
    (tmp_path / 'base.yml').write_text(yaml.safe_dump(base))
    run = tmp_path / 'out' / 'align' / 'seed0'
    exp = run / 'experiments' / 'tiny_align_seed0'
    process = gsr_repro([path, '--jobs', '1'], tmp_path)
    try:
        deadline = time.time() + 300
        while max(logged_iterations(run / 'train.out'), default=0) < 4:
            assert process.poll() is None and time.time() < deadline, process.stdout.read()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)  # the study's process only, not its group
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # the signal was not honoured: end the study and its training process
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 3, output[-3000:]
    assert output.strip().splitlines()[-1].startswith('gsr: stopped: align/seed0: stopped on request, its training '
                                                      'state saved')
    stopped = (run / 'train.out').read_text().strip().splitlines()[-1]
    saved = int(re.fullmatch(r'gsr: stopped: SIGTERM received: training state saved at iter (\d+); .*', stopped)[1])
    assert os.listdir(exp / 'training_states') == [f'{saved}.state'] and not (run / 'done.json').exists()
    assert saved - 1 <= max(logged_iterations(run / 'train.out')) <= saved  # print_freq 2: the last step is saved

    result = subprocess.run([sys.executable, '-m', 'gsr.cli', 'train', '-opt', 'options.yml', '--auto_resume',
                             '--force_yml', f'train:total_iter={saved + 2}'], cwd=run, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = sorted(exp.glob('train_*.log'))[-1].read_text()
    assert f'Resuming training from epoch: 0, iter: {saved}.' in log and (exp / 'models' / 'net_g_latest.pth').is_file()


def test_a_study_mistake_is_one_line_before_anything_is_written(tmp_path, small_photo_folder, monkeypatch, capsys):
    from tests.conftest import gsr_error
    path = tiny_study(tmp_path, small_photo_folder, acting_source='nowhere')
    error = gsr_error(['repro', path], tmp_path, monkeypatch, capsys)
    assert "variants.acting.scale_to_ratio.run must be a variant without scale_to_ratio, got 'nowhere'" in error
    assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------------------------------------------ shipped networks
def test_ship_writes_a_checked_network_and_a_changed_file_is_refused(tmp_path):
    import torch
    from basicsr.archs import build_network

    from gsr.utils.errors import GsrError
    from gsr.utils.pretrained import manifest, ship, shipped, withdraw
    net_opt = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}
    net = build_network(dict(net_opt))
    ship('tiny-baseline', net.state_dict(), {'network_g': net_opt, 'scale': 4}, {'variant': 'baseline'}, str(tmp_path))
    entry = shipped('tiny-baseline', str(tmp_path))
    assert entry['param_key'] == 'params' and entry['network_g'] == net_opt and entry['variant'] == 'baseline'
    loaded = torch.load(entry['checkpoint'], weights_only=True)['params']
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.items())
    with open(entry['checkpoint'], 'ab') as f:
        f.write(b'0')
    with pytest.raises(GsrError, match='does not match the sha256'):
        shipped('tiny-baseline', str(tmp_path))
    with pytest.raises(GsrError, match="no such shipped network .*shipped: tiny-baseline"):
        shipped('tiny-align', str(tmp_path))
    ship('tiny-align', net.state_dict(), {'network_g': net_opt, 'scale': 4}, {'variant': 'align'}, str(tmp_path))
    withdraw(['tiny-baseline', 'tiny-none'], str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['manifest.json', 'tiny-align.pth']
    assert list(manifest(str(tmp_path))) == ['tiny-align'] and shipped('tiny-align', str(tmp_path))


@pytest.mark.parametrize('variants, shipped_names', [
    (['baseline', 'paired_baseline', 'align', 'dropout'], ['medium-baseline', 'medium-align']),
    (['baseline', 'paired_baseline'], ['medium-baseline']),  # no regularized variant run (yet): the baseline alone
])
def test_ship_takes_the_first_seeds_baseline_and_the_best_regularized_variant(variants, shipped_names, monkeypatch,
                                                                              tmp_path, small_photo_folder):
    """The best regularized variant by its mean PSNR over seeds (references such as paired_baseline never count);
    a study run without one ships its baseline alone; without the baseline, --ship is refused before anything.
    The prefix's other networks (an earlier best variant) are withdrawn, no other study's."""
    import torch

    from gsr.repro.study import Run, Study
    from gsr.tools import repro
    from gsr.utils import pretrained
    means = {'baseline': 22.0, 'paired_baseline': 23.0, 'align': 22.5, 'dropout': 22.1}
    study = Study(tiny_study(tmp_path, small_photo_folder))
    study.hr = str(tmp_path / 'hr')  # the study's HR folder, resolved (here not the benchmark's folder)
    options = {'name': 'tiny', 'scale': 4,
               'datasets': {'train': {'dataroot_gt': study.hr},
                            'val_1': {'dataroot_gt': study.datasets['photos'], 'setting': 'noise'}}}
    folders = {study.hr: 'hr as written', study.datasets['photos']: 'photos as written'}  # e.g. ../shared/data/Set5
    study.runs = [Run(v, s, str(tmp_path / v), options, written=folders) for v in variants for s in (0, 1)]
    study.options.seeds = [0, 1]
    results = {'psnr_by_setting': {v: {'mean': {'mean': means[v]}} for v in variants},
               'variant_overrides': {v: '{}' for v in variants}}
    written = []
    monkeypatch.setattr('gsr.utils.checkpoint.network_weights', lambda path, key: {'w': torch.zeros(1)})
    monkeypatch.setattr(pretrained, 'ship', lambda name, weights, options, provenance, storage: written.append(
        (name, provenance['variant'], provenance['seed'], provenance['training_options']['datasets'])) or name)
    package = {'medium-baseline': 'tiny', 'medium-dropout': 'tiny', 'medium-align': 'tiny', 'medium-large': 'large',
               'small-align': 'tiny'}  # name -> the study it came from
    monkeypatch.setattr(pretrained, 'manifest', lambda: {name: {'study': s} for name, s in package.items()})
    withdrawn = []
    monkeypatch.setattr(pretrained, 'withdraw', withdrawn.extend)
    repro.ship_networks(study, results, 'medium', 'gsr repro x')
    assert [w[:3] for w in written] == [(name, name.split('-', 1)[1], 0) for name in shipped_names]
    assert withdrawn == [n for n in ('medium-baseline', 'medium-dropout', 'medium-align') if n not in shipped_names]
    # the package's provenance names the folders as the study file does, not as this machine resolved them
    assert written[0][3] == {'train': {'dataroot_gt': 'hr as written'},
                             'val_1': {'dataroot_gt': 'photos as written', 'setting': 'noise'}}


def test_ship_without_the_baseline_is_refused_before_anything_is_written(tmp_path, small_photo_folder, capsys):
    from gsr.cli import main
    path = tiny_study(tmp_path, small_photo_folder)
    assert main(['repro', path, '--variants', 'align', '--ship', 'x']) == 2
    assert '--ship needs the baseline variant among the variants run' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_the_package_ships_the_studys_networks_and_infer_runs_them(tmp_path, small_photo_folder):
    """gsr/pretrained holds each shipping study's baseline and best regularized network (seed 0); ``gsr infer
    --model`` runs one; ``--model`` with ``-opt`` is refused."""
    from gsr.utils.pretrained import manifest
    from tests.conftest import run_gsr
    entries = manifest()
    studies = {e['study'] for e in entries.values()}
    assert studies <= {'cpu_small', 'cpu_medium'} and all(e['seed'] == 0 for e in entries.values()), entries
    for study in studies:
        variants = sorted(e['variant'] for e in entries.values() if e['study'] == study)
        assert len(variants) == 2 and 'baseline' in variants, (study, variants)
    name = next(n for n in entries if not n.endswith('-baseline'))
    result = run_gsr(['infer', '--model', name, '--input', small_photo_folder, '--output', str(tmp_path / 'sr'),
                      '--device', 'cpu'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len([f for f in os.listdir(tmp_path / 'sr') if f.endswith('.png')]) == len(os.listdir(small_photo_folder))
    result = run_gsr(['infer', '--model', name, '-opt', 'x.yml', '--input', small_photo_folder, '--output',
                      str(tmp_path / 'sr2')], cwd=tmp_path)
    assert result.returncode == 2 and '--model replaces -opt and --checkpoint' in result.stderr


def test_the_paper_study_uses_the_published_option_files(tmp_path, monkeypatch, small_photo_folder):
    """options/repro/paper.yml: each variant is its published option file (500 K iterations) with the study's data
    folders; a missing data folder is named."""
    from gsr.repro.study import Study
    from gsr.utils.errors import GsrError
    path = os.path.join(REPO, 'options', 'repro', 'paper.yml')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GsrError, match='hr: none of these folders exists: datasets/DIV2K/DIV2K_train_HR_sub'):
        Study(path)
    for folder in ('DIV2K/DIV2K_train_HR_sub', 'Set5/HR', 'Set14/HR', 'B100/HR', 'Urban100/HR', 'Manga109/HR'):
        os.makedirs(os.path.dirname(tmp_path / 'datasets' / folder), exist_ok=True)
        os.symlink(small_photo_folder, tmp_path / 'datasets' / folder)
    study = Study(path)
    runs = {run.key: run.options for run in study.runs}
    assert len(runs) == 24 and all(o['train']['total_iter'] == 500000 for o in runs.values())
    assert set(runs['align/seed1']['train']['regularizers']) == {'l_align', 'l_rff'}
    assert runs['paired_baseline/seed0']['paired'] and 'regularizers' not in runs['paired_baseline/seed0']['train']
    assert runs['tfd_training_only/seed2']['attach']['tfd']['mode'] == 'training_only'
    assert runs['dropout/seed0']['dropout'] == {'p': 0.7} and runs['dropout/seed0']['manual_seed'] == 0
    assert runs['baseline/seed0']['datasets']['train']['dataroot_gt'] == os.path.abspath(
        'datasets/DIV2K/DIV2K_train_HR_sub')


@pytest.mark.parametrize('name, runs', [('cpu_small', 33), ('cpu_medium', 22)])
def test_the_cpu_studies_compose_every_run_and_train_outside_the_source_tree(name, runs, monkeypatch):
    """Every run of the CPU studies composes and passes the option check (a mistake in a variant would otherwise
    show when ``gsr repro`` reaches it, hours into the study), and their runs are written outside the repository:
    a background study must not write into the source tree."""
    from gsr.repro.study import Study
    monkeypatch.chdir(REPO)
    study = Study(os.path.join(REPO, 'options', 'repro', f'{name}.yml'))
    assert len(study.runs) == runs
    assert os.path.commonpath([study.output, REPO]) != REPO, study.output


def test_variants_select_runs_and_keep_the_source_of_a_scaled_weight(tmp_path, small_photo_folder):
    from gsr.repro.study import Study
    from gsr.utils.errors import GsrError
    path = tiny_study(tmp_path, small_photo_folder, acting_source='align')
    assert [r.key for r in Study(path, ['align', 'acting']).runs] == ['align/seed0', 'acting/seed0']
    with pytest.raises(GsrError, match="--variants: acting scales its weights from align's logs: include it"):
        Study(path, ['baseline', 'acting'])
    with pytest.raises(GsrError, match='--variants: nothing not in'):
        Study(path, ['nothing'])


@pytest.mark.slow
def test_a_study_goes_on_from_its_records_on_a_machine_without_its_runs(tmp_path, small_photo_folder, monkeypatch,
                                                                        capsys):
    """``--record`` keeps what the report reads of each finished run in the study's ``records:``; with the output
    folder gone (another machine), the study trains and benchmarks nothing again (there are no weights to do it
    with) and reports the same numbers, a scaled run included; shipping from a record is refused."""
    from gsr.cli import main
    path = tiny_study(tmp_path, small_photo_folder, acting_source='align', records=True)
    study = yaml.safe_load(open(path))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / 'out'
    assert main(['repro', path, '--jobs', '2', '--no-progress']) == 0
    first = json.load(open(out / 'results.json'))
    assert main(['repro', path, '--record', '--no-progress']) == 0
    acting = tmp_path / 'records' / 'acting' / 'seed0'
    assert sorted(p.name for p in acting.iterdir()) == ['done.json', 'logs', 'options.yml', 'rows.jsonl']
    assert (tmp_path / 'records' / 'baseline' / 'seed0' / 'analyses.json').is_file()
    assert len(json.load(open(acting / 'done.json'))['checkpoint_sha256']) == 64
    log = next((acting / 'logs').iterdir()).read_text()  # the machine's folders named as the study writes them
    assert str(out) not in log and 'experiments_root: <output>/acting/seed0/experiments/tiny_acting_seed0' in log
    os.rename(out, tmp_path / 'first_machine')
    capsys.readouterr()
    assert main(['repro', path, '--status']) == 0
    assert capsys.readouterr().out.splitlines()[-1] == '3 of 3 runs done'
    assert main(['repro', path, '--no-progress', '--ship', 'tiny']) == 2  # before anything is written
    assert "gsr: error: --ship: baseline/seed0 came from the study's records" in capsys.readouterr().err
    assert not out.exists()
    changed = dict(study, variants=dict(study['variants'], baseline={'train': {'ema_decay': 0.9}}))
    yaml.safe_dump(changed, open(path, 'w'), sort_keys=False)  # the study file changed since the records were made
    assert main(['repro', path, '--status']) == 0
    assert 'baseline/seed0: its record was trained with other options' in capsys.readouterr().out
    assert main(['repro', path, '--no-progress']) == 2
    assert 'gsr: error: ' + str(tmp_path / 'records') + ': baseline/seed0 were recorded with other options' in \
        capsys.readouterr().err
    assert not out.exists()  # refused before anything was laid out
    yaml.safe_dump(study, open(path, 'w'), sort_keys=False)
    assert main(['repro', path, '--no-progress']) == 0
    assert not list(out.rglob('*.pth')) and not list(out.rglob('*.state'))  # nothing trained here
    again = json.load(open(out / 'results.json'))
    for key in ('psnr_by_setting', 'bicubic_by_setting', 'claims', 'pixel_loss', 'regularizer_activity',
                'learning_curves', 'weight_factors', 'protocol_checks'):
        assert again[key] == first[key], key
    assert again['meta']['training_seconds'] == first['meta']['training_seconds']


@pytest.mark.slow
def test_record_keeps_the_done_runs_while_a_checked_variant_waits(tmp_path, small_photo_folder, monkeypatch):
    """A session's end: the baseline is done, ``align`` (whose first seed the protocol checks also score) has not
    started; ``--record`` records the baseline, its protocol checks included, and leaves the rest to train."""
    from gsr.cli import main
    path = tiny_study(tmp_path, small_photo_folder, records=True)
    monkeypatch.chdir(tmp_path)
    assert main(['repro', path, '--variants', 'baseline', '--no-progress']) == 0
    assert main(['repro', path, '--record', '--no-progress']) == 0
    assert sorted(p.name for p in (tmp_path / 'records').iterdir()) == ['baseline']
    rows = [json.loads(line) for line in open(tmp_path / 'records' / 'baseline' / 'seed0' / 'rows.jsonl')]
    assert {row['cache'].split(os.sep)[0] for row in rows} == {'checks', 'evaluation'}


def test_a_runs_options_hash_names_folders_as_the_study_writes_them(tmp_path, small_photo_folder, monkeypatch):
    """The same study on machines whose folders lie elsewhere gives each run the same options hash (a record made
    on one is a run done on the other); another HR folder gives another hash."""
    import shutil

    from gsr.repro.study import Study
    hashes = []
    for machine in ('one', 'two'):
        shutil.copytree(small_photo_folder, tmp_path / machine / 'photos')
        monkeypatch.chdir(tmp_path / machine)
        study = Study(tiny_study(tmp_path / machine, 'photos'))
        assert study.runs[0].options['datasets']['train']['dataroot_gt'] == str(tmp_path / machine / 'photos')
        hashes.append([run.options_sha() for run in study.runs])
    assert hashes[0] == hashes[1]
    shutil.copytree(small_photo_folder, tmp_path / 'two' / 'other')
    assert Study(tiny_study(tmp_path / 'two', 'other')).runs[0].options_sha() != hashes[0][0]


def test_a_record_keeps_the_row_each_cache_reads_back(tmp_path):
    """A cache may hold an older row of the same image and setting (a retrained run) and a torn last line: the
    record keeps, per cache, the row the cache reads back, and only the run's."""
    from gsr.analysis.evaluation import ResultCache
    from gsr.repro.records import cached_rows
    cache = tmp_path / 'evaluation' / 'per_image.jsonl'
    cache.parent.mkdir()
    row = {'model': 'baseline/seed0', 'dataset': 'Set5', 'setting': 'noise', 'image': 'baby', 'model_id': 'old',
           'image_sha256': 'x', 'psnr': 20.0}
    lines = [row, dict(row, model='align/seed0'), dict(row, image='bird'), dict(row, model_id='new', psnr=21.0)]
    cache.write_text(''.join(json.dumps(r) + '\n' for r in lines) + '{"model": "baseline/se')
    rows = sorted((c, r['image'], r['model_id']) for c, r in cached_rows(str(tmp_path), 'baseline/seed0'))
    assert rows == [('evaluation/per_image.jsonl', 'baby', 'new'), ('evaluation/per_image.jsonl', 'bird', 'old')]
    read_back = ResultCache(str(cache)).rows
    assert read_back[('baseline/seed0', 'Set5', 'noise', 'baby')]['model_id'] == 'new'


def test_status_says_where_each_run_stands_and_writes_nothing(tmp_path, small_photo_folder, monkeypatch, capsys):
    """``gsr repro --status``: a done run with its training minutes, a started one with its last logged iteration,
    saved state and the minutes left at its pace (5 minutes for 3 iterations, one left: 5 / 3), one trained with
    other options, runs not started; nothing is written."""
    from gsr.cli import main
    from gsr.repro.study import Study
    path = tiny_study(tmp_path, small_photo_folder, acting_source='align')
    monkeypatch.chdir(tmp_path)
    assert main(['repro', path, '--status']) == 0
    assert capsys.readouterr().out.splitlines() == [f'{v}/seed0: not started (4 iterations)'
                                                    for v in ('baseline', 'align', 'acting')] + ['0 of 3 runs done']
    assert not (tmp_path / 'out').exists()
    baseline, align, acting = Study(path).runs
    os.makedirs(baseline.folder)
    with open(baseline.done_file, 'w') as f:
        json.dump({'options_sha256': baseline.options_sha(), 'seconds': 150.0}, f)
    os.makedirs(os.path.join(align.experiment, 'training_states'))
    open(os.path.join(align.experiment, 'training_states', '2.state'), 'w').close()
    with open(os.path.join(align.experiment, 'train_tiny_align_seed0_1.log'), 'w') as f:
        f.write('2026-12-03 10:00:00,000 INFO: Start training from epoch: 0, iter: 0\n'
                '2026-12-03 10:02:00,000 INFO: [epoch:  0, iter:       2, lr:(1.000e-03,)] [eta: 0:01:00] l_pix: 0.2\n'
                '2026-12-03 10:05:00,000 INFO: [epoch:  0, iter:       3, lr:(1.000e-03,)] [eta: 0:00:01] l_pix: 0.1\n')
    os.makedirs(acting.folder)
    with open(acting.done_file, 'w') as f:
        json.dump({'options_sha256': 'another study', 'seconds': 60.0}, f)
    before = sorted(p for p in tmp_path.rglob('*'))
    assert main(['repro', path, '--status']) == 0
    assert capsys.readouterr().out.splitlines() == [
        'baseline/seed0: done, 2 training minutes',
        'align/seed0: iteration 3 of 4 logged, state saved at 2, about 2 training minutes left at its pace',
        'acting/seed0: trained with other options than the study now gives it',
        '1 of 3 runs done']
    assert sorted(p for p in tmp_path.rglob('*')) == before


def test_status_compares_a_scaled_run_with_the_weights_its_source_gave_it(tmp_path, small_photo_folder, monkeypatch,
                                                                          capsys):
    """A run with ``scale_to_ratio`` trains at weights scaled from its source run's logs; ``--status`` scales them
    as the runner does before it compares the run with its ``done.json`` (not the unscaled study file)."""
    from gsr.cli import main
    from gsr.repro.runner import apply_ratio_scaling
    from gsr.repro.study import Study
    path = tiny_study(tmp_path, small_photo_folder, acting_source='align')
    monkeypatch.chdir(tmp_path)
    study = Study(path)
    _, align, acting = study.runs
    os.makedirs(align.experiment)
    with open(os.path.join(align.experiment, 'train_tiny_align_seed0_1.log'), 'w') as f:
        f.write('2026-12-03 10:00:00,000 INFO: Start training from epoch: 0, iter: 0\n' + ''.join(
            f'2026-12-03 10:0{i}:00,000 INFO: [epoch:  0, iter:       {i}, lr:(1.000e-03,)] [eta: 0:01:00] '
            f'l_pix: 0.2 l_align: 0.5 grad_l_align: 0.02\n' for i in range(1, 5)))
    for run in (align, acting):
        os.makedirs(run.folder, exist_ok=True)
    with open(align.done_file, 'w') as f:
        json.dump({'options_sha256': align.options_sha(), 'seconds': 240.0}, f)
    assert apply_ratio_scaling(study, acting) == pytest.approx(5.0)  # 0.1 / 0.02
    with open(acting.done_file, 'w') as f:
        json.dump({'options_sha256': acting.options_sha(), 'seconds': 60.0}, f)
    assert main(['repro', path, '--status']) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ['align/seed0: done, 4 training minutes',
                                                        'acting/seed0: done, 1 training minutes', '2 of 3 runs done']


def test_a_choice_key_of_the_study_names_the_file_the_key_and_the_choices(tmp_path, small_photo_folder):
    from gsr.repro.study import Study
    from gsr.utils.errors import GsrError
    path = tiny_study(tmp_path, small_photo_folder)
    study = yaml.safe_load(open(path))
    study['benchmark']['weights'] = 'emma'
    (tmp_path / 'bad.yml').write_text(yaml.safe_dump(study))
    with pytest.raises(GsrError, match=r"bad\.yml: benchmark\.weights must be one of ema, raw, got 'emma'$"):
        Study(str(tmp_path / 'bad.yml'))


def test_a_variant_may_run_fewer_seeds_and_its_comparisons_pair_the_seeds_both_sides_have(tmp_path,
                                                                                          small_photo_folder):
    from gsr.repro.claims import Measurements, metric_comparison
    from gsr.repro.study import Study
    from gsr.utils.errors import GsrError
    path = tiny_study(tmp_path, small_photo_folder, acting_source='align')
    study = yaml.safe_load(open(path))
    study['seeds'] = [0, 1]
    study['variants']['align']['seeds'] = [0]  # inherited by acting through from:
    (tmp_path / 'study.yml').write_text(yaml.safe_dump(study, sort_keys=False))
    assert [r.key for r in Study(path).runs] == ['baseline/seed0', 'baseline/seed1', 'align/seed0', 'acting/seed0']
    assert [r.key for r in Study(path, first_seeds=1).runs] == ['baseline/seed0', 'align/seed0', 'acting/seed0']
    with pytest.raises(GsrError, match='--seeds must be between 1 and the 2 seeds of'):
        Study(path, first_seeds=3)
    study['variants']['align']['seeds'] = [1]
    (tmp_path / 'study.yml').write_text(yaml.safe_dump(study, sort_keys=False))
    with pytest.raises(GsrError, match=r'variants.align.seeds must be distinct seeds of the study\'s list \[0, 1\] '
                                       r'including 0, got \[1\]'):
        Study(path)

    # baseline at seeds 0 and 1, align at seed 0 only: align - baseline pairs seed 0 (two images)
    psnr = {('baseline', 0): [20.0, 21.0], ('baseline', 1): [25.0, 25.0], ('align', 0): [20.5, 21.25]}
    rows = [{'model': f'{v}/seed{s}', 'dataset': 'd', 'image': f'i{k}', 'setting': 'clean', 'psnr': value}
            for (v, s), values in psnr.items() for k, value in enumerate(values)]
    m = Measurements(rows, [0, 1], ['clean'], {})
    assert m.seeds_of('baseline') == [0, 1] and m.seeds_of('align', 'baseline') == [0]
    c = metric_comparison(m, 'align - baseline', 'align', 'baseline', 'psnr', 1)
    assert c['n'] == 2 and c['seed_means'] == [pytest.approx(0.375)] and c['mean'] == pytest.approx(0.375)


def test_the_stability_table_flags_a_run_whose_loss_ran_away_or_rose():
    from gsr.repro.report import stability_table
    table = stability_table({'pixel_loss': {
        'baseline/seed0': {'late_median': 0.05, 'max': 0.12, 'total_growth': 0.8},
        'tfd/seed0': {'late_median': 0.06, 'max': 0.15, 'total_growth': 1.1},
        'rising/seed0': {'late_median': 0.07, 'max': 0.2, 'total_growth': 7.3},
        'bad/seed0': {'late_median': 4e9, 'max': 1e13, 'total_growth': float('nan')}}})
    rows = {line.split(' | ')[0][2:]: line for line in table.splitlines()[2:]}
    assert rows['tfd/seed0'].endswith('| 1.20 | 0.15 | 1.10 | yes |')
    assert '**diverged**' in rows['bad/seed0'] and '**diverged**' not in rows['baseline/seed0']
    assert rows['rising/seed0'].endswith('| 7.30 | **grew** (> 2x) |')  # pixel loss 1.4x: only the total shows it


def test_the_regularizer_table_shows_what_a_term_logged_besides_its_value():
    """TFD's detector logs its balanced accuracy as ``bacc_det`` (``regularizer_metrics``): the report shows its
    late median beside ``l_det`` and nothing beside a term that logs nothing else."""
    from gsr.repro.report import gradient_table
    from gsr.repro.results import logged_metrics
    curves = {'l_pix': [(i, 0.05) for i in range(4)], 'l_det': [(i, 0.6) for i in range(4)],
              'bacc_det': [(0, 0.5), (1, 0.5), (2, 0.8), (3, 0.9)], 'grad_l_det': [(i, 0.02) for i in range(4)],
              'l_feat': [(i, 0.1) for i in range(4)], 'grad_l_feat': [(i, 0.3) for i in range(4)]}
    assert logged_metrics(curves, 'l_det') == {'bacc': pytest.approx(0.85)}
    assert logged_metrics(curves, 'l_feat') == {}
    table = gradient_table({'regularizer_activity': {'tfd': {
        'l_det': {'value': 0.6, 'ratio': 0.02, 'metrics': logged_metrics(curves, 'l_det')},
        'l_feat': {'value': 0.1, 'ratio': 0.3, 'metrics': {}}}}})
    assert table.splitlines()[2].endswith('| acts | bacc 0.85 |') and table.splitlines()[3].endswith('| acts | - |')


def test_the_training_log_gives_every_logged_value_of_the_model_and_nothing_of_the_header(tmp_path):
    """Lines as BasicSR's MessageLogger writes them (a TFD run's): the loss terms and the detector's balanced
    accuracy reach the report's tables; the header's lr, eta and times do not. (The report's "also logged" column
    stayed empty on real logs while only ``l_*`` and ``grad_*`` keys were kept.)"""
    from gsr.repro.results import logged_metrics
    from gsr.repro.runner import training_curves
    from gsr.repro.study import Run
    run = Run('tfd_training_only', 0, str(tmp_path), {'name': 'x'})
    os.makedirs(run.experiment)
    header = '2026-12-03 14:23:45,770 INFO: [cpu_m..][epoch:  0, iter:   {it:,}, lr:(4.102e-06,)] ' \
             '[eta: 0:07:05, time (data): 1.411 (0.009)] '
    with open(os.path.join(run.experiment, 'train_x_1.log'), 'w') as f:
        for it, bacc in ((3800, 0.75), (3900, 0.875)):
            f.write(header.format(it=it) + f'l_pix: 5.1312e-02 l_det: 3.8531e-02 bacc_det: {bacc:.4e} '
                    'l_total: 9.0031e-02 \n')
    curves = training_curves(run)
    assert sorted(curves) == ['bacc_det', 'l_det', 'l_pix', 'l_total']
    assert curves['bacc_det'] == [(3800, 0.75), (3900, 0.875)]
    assert logged_metrics(curves, 'l_det') == {'bacc': pytest.approx(0.8125)}


def test_growth_compares_the_last_quarter_with_the_first_half():
    from gsr.repro.runner import growth
    steady = [(it, 1.0) for it in range(100, 2001, 100)]
    assert growth(steady) == 1.0
    rising = [(it, 1.0 if it <= 1000 else 5.0) for it in range(100, 2001, 100)]
    assert growth(rising) == 5.0 and np.isnan(growth([]))


def test_the_study_chooses_the_released_codes_optimizer_or_the_paper_texts(tmp_path, small_photo_folder):
    """optimizer_protocol: released_code (default) keeps the option files' Adam beta2 0.99 and cosine restarts;
    paper_text gives the alignment paper's beta2 0.999 and one cosine period over the run."""
    from gsr.repro.study import Study
    path = tiny_study(tmp_path, small_photo_folder)
    study = yaml.safe_load(open(path))
    study['base'] = os.path.join(REPO, 'options', 'train_srresnet_baseline.yml')
    study['iterations'] = None
    for protocol, betas, periods in (('released_code', [0.9, 0.99], [250000, 500000]),
                                     ('paper_text', [0.9, 0.999], [500000])):
        study['optimizer_protocol'] = protocol
        (tmp_path / 'study.yml').write_text(yaml.safe_dump(study))
        train = next(r for r in Study(str(tmp_path / 'study.yml')).runs if r.variant == 'baseline').options['train']
        assert train['optim_g']['betas'] == betas and train['scheduler']['periods'] == periods, protocol


@pytest.mark.slow
def test_the_analyses_are_recomputed_when_their_images_change(tmp_path, small_photo_folder):
    """``analyses.json`` is keyed on everything its numbers depend on (it once was on the checkpoint alone, and
    kept one image's cosines after the benchmark moved to other images)."""
    import shutil

    import torch
    from basicsr.archs import build_network

    from gsr.repro.runner import run_analyses
    from gsr.repro.study import Study
    photos = tmp_path / 'photos'
    shutil.copytree(small_photo_folder, photos)
    study = Study(tiny_study(tmp_path, str(photos)))
    run = next(r for r in study.runs if r.variant == 'baseline')
    os.makedirs(os.path.dirname(run.checkpoint))
    torch.manual_seed(0)
    torch.save({'params_ema': build_network(dict(run.options['network_g'])).state_dict()}, run.checkpoint)
    first = run_analyses(study, run)
    assert run_analyses(study, run) == first  # from the cache
    names = sorted(os.listdir(photos))
    shutil.copy(photos / names[1], photos / names[0])  # another image under the first one's name
    second = run_analyses(study, run)
    assert second['inputs_sha256'] != first['inputs_sha256'] and second['cossim'] != first['cossim']


def test_a_large_network_is_shipped_in_half_precision_and_loads_into_float32(tmp_path):
    """Above 4 MB in float32 (the papers' SRResNet is 6 MB) a shipped network is stored in float16: half the file,
    loaded into the float32 network by ``load_network``, outputs within float16's rounding of the original."""
    import torch
    from basicsr.archs import build_network

    from gsr.archs.network_checkpoint import load_network
    from gsr.utils.pretrained import ship, shipped, storage_for
    big = {'type': 'MSRResNet', 'num_feat': 64, 'num_block': 16, 'upscale': 4}
    torch.manual_seed(0)
    net = build_network(dict(big)).eval()
    assert storage_for(net.state_dict()) == 'float16'
    assert storage_for(build_network({'type': 'MSRResNet', 'num_feat': 32, 'num_block': 6}).state_dict()) == 'float32'
    path = ship('big', net.state_dict(), {'network_g': big, 'scale': 4}, {}, str(tmp_path), storage='float16')
    entry = shipped('big', str(tmp_path))
    assert entry['storage'] == 'float16' and os.path.getsize(path) < 3.2e6
    assert all(v.dtype == torch.float16 for v in torch.load(path, weights_only=True)['params'].values())
    loaded = load_network({'network_g': big}, path, 'params')
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert (loaded(x) - net(x)).abs().max() < 2e-3


def test_claims_without_the_align_variant_are_reported_as_not_run():
    """A study without align (or run with --variants leaving it out) once crashed at the report, after training."""
    from gsr.repro.claims import Measurements, claims
    rows = [{'model': f'baseline/seed{seed}', 'dataset': 'S', 'image': image, 'setting': setting, 'psnr': 20.0 + seed}
            for seed in (0, 1) for image in ('a', 'b') for setting in ('clean', 'noise')]
    cossim = {'blur': [0.9, 0.9], 'noise': [0.8, 0.7], 'jpeg': [0.95, 0.9]}  # per image
    analyses = {f'baseline/seed{s}': {'cossim': cossim, 'chi_pooled': 1.0, 'chi_tsne': 1.0} for s in (0, 1)}
    verdicts = {c['claim']: c['verdict'] for c in claims(Measurements(rows, [0, 1], ['clean', 'noise'], analyses))}
    assert verdicts['1'] == verdicts['5'] == verdicts['4b'] == 'not run' and verdicts['4a'] != 'not run'


def test_adaptive_dropout_is_compared_with_the_baseline_dropout_and_alignment():
    """Claim 6 pairs adaptive_dropout with each regularizer it claims to beat; the verdict names the one it lacks."""
    from gsr.repro.claims import Measurements, claims
    offset = {'baseline': 0.0, 'dropout': 0.05, 'adaptive_dropout': 0.2}
    rows = [{'model': f'{v}/seed{seed}', 'dataset': 'S', 'image': image, 'setting': 'clean',
             'psnr': 20.0 + offset[v] + 0.01 * i + 0.001 * seed}
            for v in offset for seed in (0, 1, 2) for i, image in enumerate('abcd')]
    claim = next(c for c in claims(Measurements(rows, [0, 1, 2], ['clean'], {})) if c['claim'] == '6')
    assert [c['label'] for c in claim['comparisons']] == ['adaptive_dropout - baseline (PSNR)',
                                                          'adaptive_dropout - dropout (PSNR)']
    assert [round(c['mean'], 6) for c in claim['comparisons']] == [0.2, 0.15]
    assert claim['verdict'] == 'holds (1 of 3 comparisons not made: no align run)'


def test_a_claim_made_in_part_names_the_metric_it_lacks():
    """Claim 3 without LPIPS (no backbone here) names the metric, instead of calling those comparisons not run."""
    from gsr.repro.claims import Measurements, claims
    offset = {'baseline': 0.0, 'align': 0.1, 'dropout': 0.3}
    rows = [{'model': f'{v}/seed{seed}', 'dataset': 'S', 'image': image, 'setting': 'clean', 'psnr': 20.0,
             'mape_band_0': 1.0, 'mape_band_1': 2.0 + offset[v] + 0.01 * i + 0.001 * seed}
            for v in offset for seed in (0, 1, 2) for i, image in enumerate('abcd')]
    claim = next(c for c in claims(Measurements(rows, [0, 1, 2], ['clean'], {})) if c['claim'] == '3')
    assert claim['verdict'] == 'holds (2 of 4 comparisons not made: LPIPS not measured)'


def test_the_report_names_the_training_degradation():
    """A reader comparing with a paper needs to know which pipeline the study trained on (docs/SCALING.md)."""
    from gsr.repro.results import pipeline_note
    assert pipeline_note({'degradation': {'gt_usm': True}}) == ('Real-ESRGAN second-order degradations, '
                                                                'USM-sharpened GT')
    medium = {'degradation': {'gt_usm': True, 'jpeg_prob': 0.5, 'second_order_prob': 0.0, 'first_order_noise': 'lr'}}
    assert pipeline_note(medium) == ('first-order degradations (noise at the LR resolution), each JPEG per sample with '
                                     'probability 0.5, USM-sharpened GT')
    half = {'degradation': {'gt_usm': False, 'second_order_prob': 0.5, 'noise_prob': 0.5}}
    assert pipeline_note(half) == ("second-order on 0.5 of the batches, else first-order (noise at the stage's "
                                   "resolution), noise per sample with probability 0.5, plain GT")
    assert pipeline_note({'classic_degradation': {'kernel': 'iso'}}) == 'classic blur + bicubic + noise degradations'
