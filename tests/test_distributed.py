"""Distributed training on the CPU: torchrun with 2 gloo processes runs a tiny paired-alignment training."""
import os
import re
import socket
import subprocess
import sys

import pytest

from tests.conftest import tiny_options, write_yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_train_and_write_one_checkpoint(tmp_path, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder, name='ddp')
    opt['train']['total_iter'] = 3
    opt['logger']['save_checkpoint_freq'] = 3
    path = write_yaml(tmp_path / 'ddp.yml', opt)
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}', '-m',
        'gsr.train', '-opt', path, '--launcher', 'pytorch'
    ]
    result = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-4000:]
    exp = tmp_path / 'experiments' / 'ddp'
    log = open(next(exp.glob('train_*.log'))).read()
    assert "'dist': True" in log or 'dist: True' in log
    assert 'World size (gpu number): 2' in log
    losses = [float(v) for v in re.findall(r'l_total: ([-+0-9.e]+)', log)]
    assert len(losses) == 3 and all(abs(v) < 1e3 for v in losses)  # finite, logged every iteration
    assert sorted(os.listdir(exp / 'training_states')) == ['3.state']
    assert sorted(os.listdir(exp / 'models')) == ['net_g_3.pth', 'net_g_latest.pth']
    assert result.stdout.count('End of training') + result.stderr.count('End of training') >= 1
