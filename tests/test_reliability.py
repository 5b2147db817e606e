"""Crash safety: SIGKILL during training loses nothing complete; the non-finite guard skips and stops cleanly."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gsr.utils.checkpoint import atomic_torch_save, load_checkpoint, load_training_state
from gsr.utils.errors import GsrError, NonFiniteLossError
from tests.conftest import copies_batch, run_gsr, tiny_options, write_yaml


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'net.pth'
    atomic_torch_save({'params': {'w': torch.ones(2)}}, str(path))

    class Unpicklable:

        def __reduce__(self):
            raise RuntimeError('disk full')

    with pytest.raises(RuntimeError, match='disk full'):
        atomic_torch_save({'params': Unpicklable()}, str(path))
    assert torch.equal(load_checkpoint(str(path))['params']['w'], torch.ones(2))
    assert os.listdir(tmp_path) == ['net.pth']


def test_atomic_save_of_equal_content_gives_equal_bytes(tmp_path):
    """Shipped weights re-saved unchanged must not churn in git (the temp file's name must not reach the archive)."""
    content = {'params': {'w': torch.arange(4.0)}}
    atomic_torch_save(content, str(tmp_path / 'a.pth'))
    atomic_torch_save(content, str(tmp_path / 'a.pth'))  # a new temp name, the same destination
    first = (tmp_path / 'a.pth').read_bytes()
    atomic_torch_save(content, str(tmp_path / 'a.pth'))
    assert (tmp_path / 'a.pth').read_bytes() == first


def _kill_during_a_save(cmd, cwd, exp) -> bool:
    """Start training and SIGKILL it while a checkpoint is being written; True if a write was caught."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folders = [exp / 'models', exp / 'training_states']
    deadline = time.time() + 240
    caught = False
    while time.time() < deadline and proc.poll() is None:
        names = [n for f in folders if f.is_dir() for n in os.listdir(f)]
        if any(n.endswith('.tmp') for n in names) and any(n.endswith('.state') for n in names):
            caught = True
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return caught


@pytest.mark.slow
def test_sigkill_around_a_save_then_auto_resume_continues(tmp_path, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder, name='killed')
    opt['network_g'].update(num_feat=64, num_block=6)  # checkpoints of a few MB: writes take a while
    opt['train']['total_iter'] = 400
    opt['logger'].update(save_checkpoint_freq=1, print_freq=1)
    path = write_yaml(tmp_path / 'o.yml', opt)
    exp = tmp_path / 'experiments' / 'killed'
    cmd = [sys.executable, '-m', 'gsr.cli', 'train', '-opt', path]
    caught = any(_kill_during_a_save(cmd + (['--auto_resume'] if i else []), tmp_path, exp) for i in range(3))
    states = sorted(int(n[:-6]) for n in os.listdir(exp / 'training_states') if n.endswith('.state'))
    assert states, 'no complete state before the kill'
    for it in states:  # every file under its final name is complete
        assert load_training_state(str(exp / 'training_states' / f'{it}.state'))['iter'] == it
        load_checkpoint(str(exp / 'models' / f'net_g_{it}.pth'))
    last = states[-1]
    opt['train']['total_iter'] = last + 3
    opt['logger']['save_checkpoint_freq'] = 100
    write_yaml(path, opt)
    resumed = run_gsr(['train', '-opt', path, '--auto_resume'], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = open(sorted(exp.glob('train_*.log'))[-1]).read()
    assert f'iter: {last}.' in log.split('Resuming training from epoch: ')[1]
    assert f'iter:{last + 1:8,d}' in log.split('Resuming training')[1]
    assert caught, 'no kill landed while a checkpoint was being written'


def test_nonfinite_losses_are_skipped_then_stop_the_run(photo_folder):
    from basicsr.models import build_model
    opt = tiny_options(photo_folder, photo_folder, **{'train.max_nonfinite_steps': 3})
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    model = build_model(opt)
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    model.batch = copies_batch(torch.full((4, 3, 8, 8), float('nan')), torch.rand(4, 3, 32, 32))
    for it in (1, 2):
        model.optimize_parameters(it)
        assert np.isnan(model.log_dict['l_total'])
    assert all(torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())  # steps skipped
    with pytest.raises(NonFiniteLossError, match='3 non-finite losses in a row'):
        model.optimize_parameters(3)
    model.batch = copies_batch(torch.rand(4, 3, 8, 8), model.batch.gt)
    model.nonfinite_in_row = 0
    model.optimize_parameters(4)
    assert np.isfinite(model.log_dict['l_total'])


def test_a_run_that_ends_while_its_losses_are_nonfinite_fails_instead_of_saving(photo_folder):
    """Review case L8: with every step skipped and total_iter below max_nonfinite_steps, the run used to exit 0
    and save its initial weights as net_g_latest.pth."""
    from basicsr.models import build_model
    opt = tiny_options(photo_folder, photo_folder, **{'train.max_nonfinite_steps': 10})
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    model = build_model(opt)
    model.batch = copies_batch(torch.full((4, 3, 8, 8), float('nan')), torch.rand(4, 3, 32, 32))
    for it in (1, 2):
        model.optimize_parameters(it)
    with pytest.raises(NonFiniteLossError, match='2 non-finite losses in a row at iter 2 when the run reached'):
        model.save(-1, -1)


@pytest.mark.slow
def test_nonfinite_run_stops_cleanly_and_keeps_the_saved_state(tmp_path, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder, name='nan')
    path = write_yaml(tmp_path / 'o.yml', opt)
    assert run_gsr(['train', '-opt', path], cwd=tmp_path).returncode == 0
    opt['train'].update(total_iter=20, max_nonfinite_steps=3)
    opt['train']['pixel_opt']['loss_weight'] = float('nan')
    write_yaml(path, opt)
    result = run_gsr(['train', '-opt', path, '--auto_resume'], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith('gsr: error: 3 non-finite losses in a row at iter 7')
    states = tmp_path / 'experiments' / 'nan' / 'training_states'
    assert 'renamed to *.state.nonfinite (6.state)' in result.stderr
    # 6 was saved after the skipped steps 5 and 6: set aside, so --auto_resume continues from 4
    assert sorted(os.listdir(states)) == ['2.state', '4.state', '6.state.nonfinite']
    models = tmp_path / 'experiments' / 'nan' / 'models'
    at4, at6 = (load_checkpoint(str(models / f'net_g_{i}.pth'))['params'] for i in (4, 6))
    assert all(torch.isfinite(v).all() and torch.equal(v, at4[k]) for k, v in at6.items())


@pytest.fixture()
def infer_setup(tmp_path, small_photo_folder):
    """A folder of the user's photos with a note beside them, a tiny checkpoint and its option file."""
    import shutil

    from basicsr.archs import build_network
    photos = tmp_path / 'photos'
    shutil.copytree(small_photo_folder, photos)
    (photos / 'notes.txt').write_text('mine')
    net = {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1}
    torch.save({'params': build_network(dict(net)).state_dict()}, tmp_path / 'net.pth')
    option = write_yaml(tmp_path / 'net.yml', {'scale': 4, 'network_g': net})
    return photos, ['infer', '-opt', option, '--checkpoint', str(tmp_path / 'net.pth'), '--param-key', 'params']


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_overwrite_never_deletes_what_gsr_did_not_write(tmp_path, infer_setup, capsys):
    from gsr.cli import main
    from gsr.tools.degrade import write_benchmark_sets
    photos, infer = infer_setup
    before = _snapshot(tmp_path)
    for output in (photos, tmp_path):  # the input folder itself, and a folder that contains it
        assert main(infer + ['--input', str(photos), '--output', str(output), '--overwrite']) == 2
        assert 'contains the input' in capsys.readouterr().err
    assert _snapshot(tmp_path) == before

    dataset = tmp_path / 'ds'
    (dataset / 'HR').mkdir(parents=True)
    for p in photos.glob('*.png'):
        (dataset / 'HR' / p.name).write_bytes(p.read_bytes())
    (dataset / 'README').write_text('keep me')
    kept = _snapshot(dataset)
    with pytest.raises(GsrError, match='contains the input'):  # the layout `gsr degrade --help` suggests
        write_benchmark_sets(str(dataset / 'HR'), str(dataset), ['clean'], overwrite=True, progress=False)
    assert _snapshot(dataset) == kept

    out = tmp_path / 'sr'
    assert main(infer + ['--input', str(photos), '--output', str(out)]) == 0
    assert main(infer + ['--input', str(photos), '--output', str(out), '--overwrite']) == 0  # gsr's own: replaced
    (out / 'my_edit.txt').write_text('mine')
    assert main(infer + ['--input', str(photos), '--output', str(out), '--overwrite']) == 2
    assert 'never deletes' in capsys.readouterr().err and (out / 'my_edit.txt').read_text() == 'mine'
    assert main(infer + ['--input', str(photos), '--output', str(dataset / 'HR'), '--overwrite']) == 2
    assert 'not one' in capsys.readouterr().err and _snapshot(dataset) == kept


def test_overwrite_keeps_a_users_edit_symlink_and_empty_folder_in_a_gsr_output(tmp_path, infer_setup, capsys):
    """Review cases a6 (a retouched file under a gsr name) and a7 (a symlink and an empty folder, which os.walk does
    not list as files): --overwrite refuses, and each is still there."""
    from gsr.cli import main
    photos, infer = infer_setup
    (tmp_path / 'userdata').mkdir()
    (tmp_path / 'userdata' / 'keep.txt').write_text('keep')
    out = tmp_path / 'sr'
    args = infer + ['--input', str(photos), '--output', str(out)]
    edited = sorted(out.glob('*.png'))[0] if main(args) == 0 else None
    for change, check in (
            (lambda: edited.write_bytes(b'RETOUCHED'), lambda: edited.read_bytes() == b'RETOUCHED'),
            (lambda: os.symlink(tmp_path / 'userdata', out / 'mydata'), lambda: (out / 'mydata').is_symlink()),
            (lambda: (out / 'emptydir').mkdir(), lambda: (out / 'emptydir').is_dir())):
        assert main(args + ['--overwrite']) == 0  # gsr's own, unchanged: replaced
        edited = sorted(out.glob('*.png'))[0]
        change()
        assert main(args + ['--overwrite']) == 2
        assert 'never deletes' in capsys.readouterr().err and check()
        shutil.rmtree(out)
        assert main(args) == 0
    assert (tmp_path / 'userdata' / 'keep.txt').read_text() == 'keep'


def test_resumable_commands_write_only_into_new_empty_or_gsr_folders(tmp_path, photo_folder, capsys):
    """Review cases b7 (gsr evaluate replaced a user's table.md), R10 (gsr repro a user's RESULTS.md), b6 / V9
    (evaluate and analyze wrote into their dataset folder, then scored their own plots as test images)."""
    from gsr.cli import main
    evaluate = {'settings': ['clean'], 'metrics': ['psnr'], 'datasets': {'S': photo_folder},
                'models': {'bicubic': 'bicubic'}}
    mine = tmp_path / 'mynotes'
    mine.mkdir()
    (mine / 'table.md').write_text('my table, do not lose')
    cases = [
        (['evaluate', write_yaml(tmp_path / 'e1.yml', dict(evaluate, output=str(mine)))], 'gsr did not write'),
        (['evaluate', write_yaml(tmp_path / 'e2.yml', dict(evaluate, output=photo_folder))], 'contains the input'),
        (['analyze', 'spectrum', '--hr', photo_folder, '--output', photo_folder], 'contains the input'),
        (['analyze', 'spectrum', '--hr', photo_folder, '--output', str(mine)], 'gsr did not write'),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert (mine / 'table.md').read_text() == 'my table, do not lose' and os.listdir(mine) == ['table.md']
    out = tmp_path / 'ev'
    assert main(['evaluate', write_yaml(tmp_path / 'e3.yml', dict(evaluate, output=str(out)))]) == 0
    assert main(['evaluate', str(tmp_path / 'e3.yml')]) == 0  # its own folder: resumed
    assert (out / '.gsr-output.json').is_file() and (out / 'table.md').is_file()


def test_two_inputs_with_one_name_are_refused(tmp_path, infer_setup, capsys):
    import cv2

    from gsr.cli import main
    photos, infer = infer_setup
    first = sorted(photos.glob('*.png'))[0]
    cv2.imwrite(str(first.with_suffix('.jpg')), cv2.imread(str(first)))
    assert main(infer + ['--input', str(photos), '--output', str(tmp_path / 'sr')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('gsr: error:') and f'would both be written as {first.stem}.png' in err
    assert not (tmp_path / 'sr').exists()


def test_outputs_respect_the_umask(tmp_path, infer_setup):
    from gsr.cli import main
    photos, infer = infer_setup
    old = os.umask(0o022)
    try:
        assert main(infer + ['--input', str(photos), '--output', str(tmp_path / 'sr')]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / 'sr').stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / 'sr').iterdir())
    old = os.umask(0o027)
    try:
        atomic_torch_save({'x': torch.zeros(1)}, str(tmp_path / 'net_g_2.pth'))  # checkpoints and states alike
    finally:
        os.umask(old)
    assert (tmp_path / 'net_g_2.pth').stat().st_mode & 0o777 == 0o640


@pytest.mark.slow
def test_restart_in_place_clean_torn_writes_and_train_longer(tmp_path, small_photo_folder):
    """A run killed before its first save restarts in its own folder (nothing archived), the temporary files of
    killed saves are removed, and a resume may raise total_iter and the cosine periods ("train longer")."""
    opt = tiny_options(small_photo_folder, small_photo_folder, name='longer')
    opt['train']['scheduler'] = {'type': 'CosineAnnealingRestartLR', 'periods': [4], 'restart_weights': [1],
                                 'eta_min': 1e-6}
    path = write_yaml(tmp_path / 'o.yml', opt)
    exp = tmp_path / 'experiments' / 'longer'
    for folder in ('models', 'training_states'):
        (exp / folder).mkdir(parents=True)
        (exp / folder / '.net_g_2.pth.k1l2.tmp').write_bytes(b'')
    (exp / 'train_longer_killed.log').write_text('the killed run')
    result = run_gsr(['train', '-opt', path, '--auto_resume'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.listdir(tmp_path / 'experiments') == ['longer']  # restarted in place, nothing archived
    assert not list(exp.rglob('*.tmp')) and (exp / 'train_longer_killed.log').exists()
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state']

    opt['train']['total_iter'] = 8
    opt['train']['scheduler']['periods'] = [8]
    write_yaml(path, opt)
    result = run_gsr(['train', '-opt', path, '--auto_resume'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    state = load_training_state(str(exp / 'training_states' / '8.state'))
    assert state['iter'] == 8 and state['schedulers'][0]['periods'] == [8]

    opt['train']['total_iter'] = 12
    result = run_gsr(['train', '-opt', write_yaml(path, opt), '--auto_resume'], cwd=tmp_path)
    assert result.returncode == 2
    assert 'train.total_iter 12 is beyond the end of train.scheduler.periods (sum 8)' in result.stderr


def test_a_failed_write_names_the_file_and_the_cause(tmp_path):
    (tmp_path / 'models').write_text('a file where a folder should be')
    with pytest.raises(GsrError, match=r'could not write .*models/net_g_2.pth: \[Errno 17\] File exists'):
        atomic_torch_save({'x': torch.zeros(1)}, str(tmp_path / 'models' / 'net_g_2.pth'))


@pytest.mark.slow
def test_a_dataloader_worker_error_is_one_line(tmp_path, small_photo_folder):
    import shutil
    photos = tmp_path / 'photos'
    shutil.copytree(small_photo_folder, photos)
    first = sorted(photos.iterdir())[0]
    first.write_bytes(first.read_bytes()[:100])
    opt = tiny_options(str(photos), small_photo_folder, **{'datasets.train.num_worker_per_gpu': 1})
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt)], cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('gsr: error: ') and f'{first.name}: not a readable image' in last
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('where', ['proc', 'parent_is_a_file', 'long_name'])
def test_writes_that_cannot_start_are_one_error_and_a_long_legal_name_works(where, tmp_path):
    """Review cases W1-W4, W7, W8, X4, X13, L17, P5: the temporary file or folder was made outside the conversion of
    OS errors, and its name added ~14 characters to a legal 241-255-character name."""
    from gsr.utils.checkpoint import atomic_write_text
    from gsr.utils.staging import staged_folder
    (tmp_path / 'a.png').write_bytes(b'not a folder')
    target = {'proc': '/proc/gsr_out', 'parent_is_a_file': str(tmp_path / 'a.png' / 'out'),
              'long_name': str(tmp_path / ('c' * 250))}[where]
    if where == 'long_name':
        atomic_write_text(target + '.txt', 'kept')
        with staged_folder(target) as folder:
            atomic_write_text(os.path.join(folder, 'b' * 250 + '.png'), 'x')
        assert open(target + '.txt').read() == 'kept' and os.listdir(target) != []
        return
    for write in (lambda: atomic_write_text(os.path.join(target, 'f.txt'), 'x'),
                  lambda: staged_folder(target).__enter__()):
        with pytest.raises(GsrError, match=f'^could not write {target}'):
            write()


def test_a_killed_commands_staging_folder_is_removed_by_the_next_run(tmp_path):
    """Review case G3: `gsr infer` / `gsr degrade` killed with SIGKILL left their hidden staging folder beside the
    target for good. The next staged write removes it; a staging folder whose writer still runs is kept."""
    from gsr.utils.staging import staged_folder
    target = str(tmp_path / 'out')
    code = (f'import os, time\nfrom gsr.utils.staging import staged_folder\nwith staged_folder({target!r}) as f:\n'
            '    open(os.path.join(f, "a.png"), "w").write("x")\n    print("ready", flush=True)\n    time.sleep(120)\n')
    writer = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == 'ready'
    writer.kill()
    writer.wait()
    abandoned = [n for n in os.listdir(tmp_path) if n.endswith('.partial')]
    assert len(abandoned) == 1
    live = tmp_path / (abandoned[0].split('-')[0] + f'-{os.getpid()}.x.partial')  # this process's own: alive
    live.mkdir()
    with staged_folder(target) as folder:
        left = sorted(n for n in os.listdir(tmp_path) if n.endswith('.partial'))
        assert left == sorted([live.name, os.path.basename(folder)])
    assert os.listdir(target) == ['.gsr-output.json']


def test_torch_reporting_a_full_disk_is_a_write_failure(tmp_path):
    """Review case F3: on a full disk torch's stream writer says "unexpected pos", not "write"."""
    from gsr.utils.checkpoint import atomic_write
    (tmp_path / 'net.pth').write_bytes(b'the previous checkpoint')

    def full_disk(tmp: str) -> None:
        open(tmp, 'wb').write(b'partial')
        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 454912 vs 454800')

    with pytest.raises(GsrError, match='^could not write .*net.pth: .*unexpected pos'):
        atomic_write(str(tmp_path / 'net.pth'), full_disk)
    assert os.listdir(tmp_path) == ['net.pth'] and (tmp_path / 'net.pth').read_bytes() == b'the previous checkpoint'


def test_a_stop_signal_saves_the_last_step_and_ends_the_run(photo_folder, tmp_path):
    """SIGUSR1 / SIGTERM (a cluster's notice before preemption) under ``gsr train``'s handlers: the step under way
    finishes, the next one saves the state of the last and stops, so ``--auto_resume`` loses nothing; a resumed run
    stopped before it trained saves nothing."""
    from basicsr.models import build_model

    from gsr.archs.attached_arch import backbone_of
    from gsr.utils.stop_request import TrainingStopped, stop_on_signals, stop_requested
    opt = tiny_options(photo_folder, photo_folder)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'))
    for folder in ('models', 'states'):
        (tmp_path / folder).mkdir()
    model = build_model(opt)
    model.batch = copies_batch(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 32, 32))
    with stop_on_signals():
        model.update_learning_rate(1)  # BasicSR's order in an iteration
        model.optimize_parameters(1)
        os.kill(os.getpid(), signal.SIGUSR1)
        after_step_1 = {k: v.clone() for k, v in model.net_g.state_dict().items()}
        schedule = [s.last_epoch for s in model.schedulers]
        with pytest.raises(TrainingStopped, match='SIGUSR1 received: training state saved at iter 1$'):
            model.update_learning_rate(2)
        assert all(torch.equal(after_step_1[k], v) for k, v in model.net_g.state_dict().items())  # no step 2
        assert [s.last_epoch for s in model.schedulers] == schedule  # nor its schedule
    assert stop_requested() is None and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert sorted(os.listdir(tmp_path / 'states')) == ['1.state']
    state = load_training_state(str(tmp_path / 'states' / '1.state'))
    assert state['iter'] == 1
    saved = load_checkpoint(str(tmp_path / 'models' / 'net_g_1.pth'))['params']
    assert all(torch.equal(saved[k], v) for k, v in backbone_of(model.net_g).state_dict().items())

    resumed = build_model(opt)
    resumed.resume_training(state)
    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(TrainingStopped, match='SIGTERM received: nothing trained since iter 1$'):
            resumed.update_learning_rate(2)
    assert sorted(os.listdir(tmp_path / 'states')) == ['1.state']
