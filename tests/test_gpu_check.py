"""``benchmarks/gpu_check.sh``, the one command for a GPU machine, rehearsed end to end on the CPU at tiny sizes."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def wheel_set(folder: str) -> bool:
    """`make gpu-wheels` for this Python (the GPU machine's set is for 3.12) into ``folder``; False where the package
    registry cannot be reached."""
    python = f'{sys.version_info.major}.{sys.version_info.minor}'
    made = subprocess.run(['make', '-s', '-C', REPO, 'gpu-wheels', f'GPU_PYTHON={python}', f'WHEEL_DIR={folder}'],
                          capture_output=True, text=True, timeout=300)
    return made.returncode == 0 and len(os.listdir(folder)) == 3


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    """With the wheels installed the same way into a fresh temporary site (where the registry is reachable; the
    Python at hand's packages otherwise), and without BasicSR's tests, as a fresh clone has none."""
    wheels = str(tmp_path / 'wheels')
    installed = wheel_set(wheels)
    env = dict(os.environ, OUT=str(tmp_path / 'out'), PYTHON=sys.executable,
               WHEELS=wheels if installed else str(tmp_path / 'no_wheels'),
               BASICSR_TESTS=str(tmp_path / 'no_basicsr_tests'))
    (tmp_path / 'out').mkdir()
    result = subprocess.run(['bash', os.path.join(REPO, 'benchmarks', 'gpu_check.sh'), '--device', 'cpu', '--quick'],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ('installed 3 wheels from' in result.stdout) == installed
    assert sorted(os.listdir(tmp_path / 'out')) == ['degradation.txt', 'tests.txt', 'tfd_cost.txt', 'train_step.txt']
    assert ' passed' in (tmp_path / 'out' / 'tests.txt').read_text()
    assert 'basicsr_parity: skipped' in result.stdout
    for name in ('degradation', 'train_step', 'tfd_cost'):
        assert f'{name}: exit 0' in result.stdout
    bad = subprocess.run(['bash', os.path.join(REPO, 'benchmarks', 'gpu_check.sh'), '--devise', 'cpu'],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and 'unknown argument --devise' in bad.stderr
