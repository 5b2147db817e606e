"""Each BasicSR 1.4.2 fix in gsr.compat, shown necessary (the original fails) and effective (gsr's works)."""
import argparse
import collections
import os
import subprocess
import sys

import pytest
import torch
import yaml

from gsr import compat
from gsr.utils.errors import GsrError

UNSAFE_YAML = 'name: x\nvalue: !!python/object/apply:os.getcwd []\n'


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_plain_basicsr_import_fails_and_gsr_shim_fixes_it():
    plain = _python('import basicsr')
    assert plain.returncode != 0 and 'functional_tensor' in plain.stderr
    fixed = _python('import gsr, basicsr; from basicsr.data.degradations import rgb_to_grayscale; print("ok")')
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip().endswith('ok')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the failure is specific to CPU-only machines')
def test_cpu_distributed_init_divides_by_zero_in_basicsr(monkeypatch):
    import basicsr.utils.dist_util as dist_util
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(ZeroDivisionError):
        dist_util._init_dist_pytorch('gloo')
    assert compat.default_backend() == 'gloo'


def test_gsr_init_dist_uses_gloo_on_cpu_in_a_fresh_process():
    from tests.test_distributed import free_port
    code = (
        'import os, gsr, torch.distributed as dist\n'
        f'os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", '
        f'MASTER_PORT="{free_port()}")\n'
        'from basicsr.utils.options import init_dist\n'
        'init_dist("pytorch")\n'
        'print(dist.get_backend(), dist.get_world_size())\n')
    result = _python(code)
    assert result.returncode == 0, result.stderr
    expected = 'nccl' if torch.cuda.is_available() else 'gloo'
    assert result.stdout.split()[-2:] == [expected, '1']


def _state_opt(tmp_path, auto_resume=True):
    states = tmp_path / 'experiments' / 'run' / 'training_states'
    states.mkdir(parents=True)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([p], 1e-3)
    from basicsr.models.lr_scheduler import MultiStepRestartLR
    sched = MultiStepRestartLR(opt, milestones=[10])
    for it in (2, 4):
        torch.save({
            'epoch': 0,
            'iter': it,
            'optimizers': [opt.state_dict()],
            'schedulers': [sched.state_dict()]
        }, states / f'{it}.state')
    (states / '.6.state.abc.tmp').write_bytes(b'partial')
    return {
        'name': 'run',
        'auto_resume': auto_resume,
        'network_g': {},
        'path': {
            'training_states': str(states),
            'models': str(tmp_path / 'experiments' / 'run' / 'models'),
            'resume_state': None
        }
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason='the failure is specific to CPU-only machines')
def test_basicsr_auto_resume_calls_cuda_on_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((RuntimeError, AssertionError)):
        compat.ORIGINALS['load_resume_state'](_state_opt(tmp_path))


def test_gsr_auto_resume_loads_latest_complete_state_on_cpu(tmp_path):
    opt = _state_opt(tmp_path)
    state = compat.load_resume_state(opt)
    assert state['iter'] == 4 and opt['path']['resume_state'].endswith('4.state')
    assert sorted(os.listdir(opt['path']['training_states'])) == ['2.state', '4.state']  # torn write removed
    assert isinstance(state['schedulers'][0]['milestones'], collections.Counter)


def test_training_state_loading_is_weights_only(tmp_path):
    from gsr.utils.checkpoint import load_training_state
    path = tmp_path / 'evil.state'
    torch.save({'iter': 1, 'payload': argparse.Namespace(a=1)}, path)  # an arbitrary class
    with pytest.raises(GsrError, match='not allowed'):
        load_training_state(str(path))


def test_basicsr_yaml_loader_is_unsafe_and_gsr_rejects_python_tags(tmp_path):
    unsafe = yaml.load(UNSAFE_YAML, Loader=compat.ORIGINALS['ordered_yaml']()[0])
    assert unsafe['value'] == os.getcwd()  # BasicSR's loader executed a function from the option file
    from basicsr.utils.options import ordered_yaml
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load(UNSAFE_YAML, Loader=ordered_yaml()[0])
    loaded = yaml.load('b: 1\na: [1, 2]\n', Loader=ordered_yaml()[0])
    assert list(loaded) == ['b', 'a'] and isinstance(loaded, collections.OrderedDict)


def test_basicsr_model_classes_are_left_as_they_are():
    """gsr's model-level behaviour is GsrModel's own methods: BasicSR's classes keep BasicSR's (P1 of the
    structure review), and no hook wraps the model classes defined later."""
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel

    from gsr.models.base_model import GsrModel
    for name in ('model_to_device', 'setup_schedulers', 'save_network', 'save_training_state', 'load_network'):
        assert getattr(BaseModel, name).__qualname__ == f'BaseModel.{name}', name
        assert getattr(GsrModel, name).__qualname__ == f'GsrModel.{name}', name
    assert SRModel.setup_optimizers.__qualname__ == 'SRModel.setup_optimizers'
    assert '__init_subclass__' not in vars(BaseModel)


def test_other_basicsr_versions_are_refused(monkeypatch):
    import importlib.metadata
    monkeypatch.setattr(importlib.metadata, 'version', lambda name: '1.4.3' if name == 'basicsr' else '0')
    with pytest.raises(GsrError, match='gsr patches BasicSR 1.4.2, but 1.4.3 is installed'):
        compat.check_basicsr_version()


class RandomDraws(torch.utils.data.Dataset):
    """Draws the way a training set's workers do (kernels from numpy, crop positions and flips from random)."""

    def __getitem__(self, index):
        import random

        import numpy as np
        return torch.tensor([np.random.uniform(), random.random()], dtype=torch.float64)

    def __len__(self):
        return 4


def _epochs_of_draws(seed: int, epochs: int = 2) -> list:
    """Every draw of ``epochs`` passes through BasicSR's training dataloader (one worker, non-persistent)."""
    from basicsr.data import build_dataloader
    torch.manual_seed(seed)
    loader = build_dataloader(RandomDraws(), {'phase': 'train', 'batch_size_per_gpu': 4, 'num_worker_per_gpu': 1},
                              num_gpu=0, seed=seed)
    return [torch.cat(list(loader)) for _ in range(epochs)]


@pytest.mark.parametrize('fixed', [False, True])
def test_basicsr_workers_repeat_their_draws_every_epoch_and_gsr_workers_do_not(fixed, monkeypatch):
    import basicsr.data
    if not fixed:
        monkeypatch.setattr(basicsr.data, 'worker_init_fn', compat.ORIGINALS['worker_init_fn'])
    first, second = _epochs_of_draws(seed=0)
    # the same values each epoch (their order follows the shuffle): BasicSR's workers restart the same streams
    assert torch.equal(first.sort(dim=0).values, second.sort(dim=0).values) != fixed
    again = _epochs_of_draws(seed=0)
    assert all(torch.equal(a, b) for a, b in zip((first, second), again))  # reproducible under the same seed
    other = _epochs_of_draws(seed=1)
    assert not torch.equal(first.sort(dim=0).values, other[0].sort(dim=0).values)
