"""Crash safety: SIGKILL during training loses nothing complete; the non-finite guard skips and stops cleanly."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gsr.utils.checkpoint import atomic_torch_save, load_checkpoint, load_training_state
from gsr.utils.errors import NonFiniteLossError
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
    assert sorted(os.listdir(states)) == ['2.state', '4.state', '6.state']  # 6 was saved after skipped steps
    models = tmp_path / 'experiments' / 'nan' / 'models'
    at4, at6 = (load_checkpoint(str(models / f'net_g_{i}.pth'))['params'] for i in (4, 6))
    assert all(torch.isfinite(v).all() and torch.equal(v, at4[k]) for k, v in at6.items())
