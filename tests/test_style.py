"""The code base stays clean: flake8 with the settings in setup.cfg (unused or undefined names, line length)."""
import subprocess
import sys

from tests.conftest import REPO


def test_flake8_is_clean():
    result = subprocess.run([sys.executable, '-m', 'flake8', 'gsr', 'tests', 'benchmarks'], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
