"""Distributed training on the CPU: torchrun with 2 gloo processes runs a tiny paired-alignment training."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import List

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


def _ddp_options(tmp_path, folder, name, total_iter):
    opt = tiny_options(folder, folder, name=name)
    opt['train']['total_iter'] = total_iter
    opt['logger']['save_checkpoint_freq'] = 2
    return write_yaml(tmp_path / f'{name}.yml', opt)


def _slurm_ranks(tmp_path, path) -> List[subprocess.Popen]:
    """Two ``gsr.train --launcher slurm`` processes with the variables a cluster sets and a stand-in scontrol."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    (bindir / 'scontrol').write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostname node[01-02]" ] && echo 127.0.0.1\n')
    (bindir / 'scontrol').chmod(0o755)
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS='1', PATH=f'{bindir}:{os.environ["PATH"]}', SLURM_PROCID=str(rank),
                   SLURM_LOCALID=str(rank), SLURM_NTASKS='2', SLURM_NODELIST='node[01-02]', MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, '-m', 'gsr.train', '-opt', path, '--launcher', 'slurm'],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.slow
def test_slurm_launcher_trains_on_two_cpu_processes(tmp_path, small_photo_folder):
    """BasicSR's slurm path (as gsr patches it) with the variables a cluster sets and a stand-in scontrol."""
    path = _ddp_options(tmp_path, small_photo_folder, 'slurm', 4)
    procs = _slurm_ranks(tmp_path, path)
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][1][-3000:] + outputs[1][1][-3000:]
    exp = tmp_path / 'experiments' / 'slurm'
    log = open(next(exp.glob('train_*.log'))).read()
    assert 'World size (gpu number): 2' in log and 'dist: True' in log
    assert len(re.findall(r'l_align: ', log)) == 4
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state']


@pytest.mark.slow
def test_a_stop_signal_to_one_rank_stops_both_at_the_same_step(tmp_path, small_photo_folder):
    """SIGUSR1 (slurm's ``--signal=USR1@<s>`` notice) reaching one rank only: the ranks agree on the step (a rank
    stopping alone would leave the other waiting in its next all-reduce), rank 0 saves that step's state, both
    exit with status 3."""
    opt = tiny_options(small_photo_folder, small_photo_folder, name='stopped')
    opt['train']['total_iter'] = 400
    opt['logger']['save_checkpoint_freq'] = 1000  # any state saved is the stop's
    path = write_yaml(tmp_path / 'stopped.yml', opt)
    procs = _slurm_ranks(tmp_path, path)
    exp = tmp_path / 'experiments' / 'stopped'
    try:
        deadline = time.time() + 300
        while 'iter:       4,' not in ''.join(log.read_text() for log in exp.glob('train_*.log')):
            assert all(p.poll() is None for p in procs) and time.time() < deadline
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGUSR1)
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [3, 3], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    last_lines = {err.strip().splitlines()[-1] for _, err in outputs}
    assert len(last_lines) == 1, last_lines
    saved = int(re.fullmatch(r'gsr: stopped: SIGUSR1 received: training state saved at iter (\d+); .*',
                             last_lines.pop())[1])
    assert os.listdir(exp / 'training_states') == [f'{saved}.state'] and saved >= 4


@pytest.mark.slow
def test_torchrun_resumes_after_one_rank_is_killed(tmp_path, small_photo_folder):
    path = _ddp_options(tmp_path, small_photo_folder, 'killed', 400)
    env = dict(os.environ, OMP_NUM_THREADS='1')

    def torchrun(*extra):
        return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
                '-m', 'gsr.train', '-opt', path, '--launcher', 'pytorch', *extra]

    states = tmp_path / 'experiments' / 'killed' / 'training_states'
    job = subprocess.Popen(torchrun(), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (states / '4.state').exists() and time.time() < deadline:
        time.sleep(0.2)
    ranks = subprocess.run(['pgrep', '-P', str(job.pid)], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2, ranks
    os.kill(int(ranks[1]), signal.SIGKILL)
    assert job.wait(timeout=120) != 0  # the agent stops the job when a rank dies
    done = max(int(f[:-len('.state')]) for f in os.listdir(states) if f.endswith('.state'))

    path = _ddp_options(tmp_path, small_photo_folder, 'killed', done + 4)
    result = subprocess.run(torchrun('--auto_resume'), cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    log = open(sorted((tmp_path / 'experiments' / 'killed').glob('train_*.log'))[-1]).read()
    assert 'Resuming training from epoch' in log and f'iter: {done}.' in log
    assert f'{done + 4}.state' in os.listdir(states)


def _global_statistics_rank(rank: int, store: str, features, out: str) -> None:
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist

    from gsr.losses.feature_alignment_loss import FeatureAlignmentLoss
    from gsr.losses.statistics import FeaturePair
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2)
    try:
        b = features.shape[0] // 2  # [copy1; copy2] of 4 crops: rank r holds crops 2r, 2r + 1 of both copies
        local = torch.cat([features[2 * rank:2 * rank + 2], features[b + 2 * rank:b + 2 * rank + 2]]).clone()
        local.requires_grad_(True)
        loss = FeatureAlignmentLoss(mode='official', reduction='sum')
        value = loss(SimpleNamespace(pair=lambda: FeaturePair(local, across_ranks=True)))
        value.backward()
        torch.save({'value': value.detach(), 'grad': local.grad}, f'{out}.{rank}')
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_global_batch_statistics_give_the_single_process_loss_and_gradient(tmp_path):
    """``batch_statistics: global``: two gloo ranks with 2 crops each compute the alignment loss of all 4 crops,
    and each rank's gradient (averaged by DDP: divided by 2) is the single-process gradient of its rows."""
    from types import SimpleNamespace

    import torch
    import torch.multiprocessing as mp

    from gsr.losses.feature_alignment_loss import FeatureAlignmentLoss
    from gsr.losses.statistics import FeaturePair
    torch.manual_seed(0)
    features = torch.randn(8, 6, 5, 5)
    mp.spawn(_global_statistics_rank, args=(str(tmp_path / 'store'), features, str(tmp_path / 'out')), nprocs=2)
    single = features.clone().requires_grad_(True)
    value = FeatureAlignmentLoss(mode='official', reduction='sum')(SimpleNamespace(pair=lambda: FeaturePair(single)))
    value.backward()
    for rank in range(2):
        result = torch.load(str(tmp_path / f'out.{rank}'), weights_only=True)
        torch.testing.assert_close(result['value'], value.detach())
        rows = torch.cat([single.grad[2 * rank:2 * rank + 2], single.grad[4 + 2 * rank:4 + 2 * rank + 2]])
        torch.testing.assert_close(result['grad'] / 2, rows)


def _guard_rank(rank: int, store: str, out: str) -> None:
    import json
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist

    from gsr.models.base_model import GsrModel
    from gsr.utils import stop_request
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2)
    try:
        model = SimpleNamespace(opt={'dist': True}, device=torch.device('cpu'), optimizers=[], log_dict={},
                                nonfinite_in_row=0, max_nonfinite_steps=10, last_nonfinite_iter=0, agreed_stop=0)
        steps = []
        for total, request in ((float('nan'), None), (1.0, signal.SIGUSR1)):  # rank 0 diverges, then rank 1 is told
            stop_request._requested = request if rank == 1 else None
            kept = GsrModel.loss_is_finite(model, torch.tensor(total if rank == 0 else 2.0), len(steps) + 1)
            steps.append([kept, model.nonfinite_in_row, model.agreed_stop])
        with open(f'{out}.{rank}', 'w') as f:
            json.dump(steps, f)
    finally:
        stop_request._requested = None
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_guards_one_all_reduce_agrees_on_nonfinite_steps_and_stop_requests(tmp_path):
    """A non-finite loss on one rank skips the step on both; a stop request seen by one rank reaches both through
    the same all-reduce (``stop_if_requested`` acts on it at the next step)."""
    import json

    import torch.multiprocessing as mp
    mp.spawn(_guard_rank, args=(str(tmp_path / 'store'), str(tmp_path / 'out')), nprocs=2)
    expected = [[False, 1, 0], [True, 0, int(signal.SIGUSR1)]]
    assert [json.loads((tmp_path / f'out.{rank}').read_text()) for rank in range(2)] == [expected, expected]
