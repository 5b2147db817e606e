"""BasicSR's own test suite, run once with only the torchvision shim gsr needs and once after ``import gsr``: the
outcomes must be identical, test by test (gsr's compatibility fixes change nothing BasicSR's tests see).

    python benchmarks/basicsr_parity.py .basicsr/tests [--out DIR]

The folder is BasicSR's ``tests/`` at the pinned release, which no package carries (the sdist has none); from a clone
of XPixelGroup/BasicSR: ``mkdir -p .basicsr && git -C <clone> archive v1.4.2 tests | tar x -C .basicsr`` (``.basicsr/``
is ignored; ``benchmarks/gpu_check.sh`` runs this when it is there). As a pytest plugin (``-p basicsr_parity``) this
module installs the shim before BasicSR is imported and, with ``GSR_IMPORT=1``, imports gsr.
"""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import types
import xml.etree.ElementTree as ElementTree
from typing import Dict

MODES = {'shim only': '0', 'after import gsr': '1'}


def install_shim() -> None:
    """BasicSR 1.4.2 imports ``torchvision.transforms.functional_tensor``, gone since torchvision 0.17."""
    name = 'torchvision.transforms.functional_tensor'
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        from torchvision.transforms import functional
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].rgb_to_grayscale = functional.rgb_to_grayscale


def pytest_configure(config) -> None:
    install_shim()
    if os.environ.get('GSR_IMPORT') == '1':
        import gsr  # noqa: F401


def outcomes(junit_xml: str) -> Dict[str, str]:
    """test id -> passed / failed / error / skipped, from pytest's JUnit XML."""
    result = {}
    for case in ElementTree.parse(junit_xml).iter('testcase'):
        kinds = [child.tag for child in case if child.tag in ('failure', 'error', 'skipped')]
        result[f'{case.get("classname")}::{case.get("name")}'] = {'failure': 'failed'}.get(
            kinds[0], kinds[0]) if kinds else 'passed'
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('tests', help="BasicSR's tests/ folder at v1.4.2")
    parser.add_argument('--out', default=tempfile.mkdtemp(), help='where the JUnit XML files go')
    args = parser.parse_args()
    tests = os.path.abspath(args.tests)
    here = os.path.dirname(os.path.abspath(__file__))
    found = {}
    for mode, flag in MODES.items():
        xml = os.path.join(args.out, f'basicsr_{flag}.xml')
        env = dict(os.environ, GSR_IMPORT=flag, PYTHONPATH=os.pathsep.join(
            [here, os.path.dirname(here), os.environ.get('PYTHONPATH', '')]))
        subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'basicsr_parity', '-p', 'no:cacheprovider',
                        f'--junitxml={xml}', tests], cwd=os.path.dirname(tests), env=env)
        found[mode] = outcomes(xml)
    for mode, result in found.items():
        counts = {k: sum(v == k for v in result.values()) for k in ('passed', 'failed', 'error', 'skipped')}
        print(f'{mode}: {len(result)} tests, ' + ', '.join(f'{v} {k}' for k, v in counts.items()))
    first, second = found.values()
    differ = sorted(t for t in set(first) | set(second) if first.get(t) != second.get(t))
    for test in differ:
        print(f'differs: {test}: {first.get(test)} (shim only) vs {second.get(test)} (after import gsr)')
    print('identical outcomes' if not differ and first else 'NOT identical' if differ else 'no tests ran')
    return 0 if first and not differ else 1


if __name__ == '__main__':
    sys.exit(main())
