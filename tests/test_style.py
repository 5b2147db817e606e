"""The code base stays clean: flake8 (unused imports and names, undefined names, line length 120)."""
import os
import subprocess
import sys

from tests.conftest import REPO


def test_flake8_is_clean():
    result = subprocess.run([sys.executable, '-m', 'flake8', 'gsr', 'tests', 'benchmarks'], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.path.isfile(os.path.join(REPO, 'setup.cfg'))  # where the flake8 settings live
