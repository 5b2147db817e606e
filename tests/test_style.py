"""The code base stays clean: flake8 with the settings in setup.cfg (unused or undefined names, line length)."""
import glob
import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_flake8_is_clean():
    result = subprocess.run([sys.executable, '-m', 'flake8', 'gsr', 'tests', 'benchmarks', 'scripts'], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tests_the_docs_name_exist():
    """docs/*.md and the README cite tests as `tests/file.py::test_name` (then `::other` for the same file): each
    must be a test function of that file, so a promise never points at a test that was renamed or removed."""
    repo = str(REPO)
    missing, cited = [], 0
    for doc in sorted(glob.glob(os.path.join(repo, 'docs', '*.md'))) + [os.path.join(repo, 'README.md')]:
        for line in open(doc):
            current = None
            for match in re.finditer(r'(tests/\w+\.py)?::(test_\w+)', line):
                current = match.group(1) or current
                if current is None:
                    continue
                cited += 1
                source = open(os.path.join(repo, current)).read()
                if not re.search(rf'^def {match.group(2)}\(', source, re.M):
                    missing.append(f'{os.path.basename(doc)}: {current}::{match.group(2)}')
    assert cited > 40 and not missing, missing


def test_standalone_files_import_gsr_before_basicsr():
    """benchmarks/ and scripts/ run without the tests' conftest: BasicSR 1.4.2 imports a torchvision module that
    torchvision removed, so gsr (its shim) must be imported above the first basicsr import of the file. isort moves
    a first-party import below a third-party one: such a line needs ``isort: skip``."""
    late = []
    for path in sorted(glob.glob(os.path.join(str(REPO), 'benchmarks', '*.py')) +
                       glob.glob(os.path.join(str(REPO), 'scripts', '*.py'))):
        lines = open(path).read().splitlines()
        first = {name: next((i for i, line in enumerate(lines) if re.match(rf'\s*(from|import) {name}\b', line)), None)
                 for name in ('basicsr', 'gsr')}
        if first['basicsr'] is not None and (first['gsr'] is None or first['gsr'] > first['basicsr']):
            late.append(f'{os.path.relpath(path, str(REPO))}:{first["basicsr"] + 1}')
    assert not late, late
