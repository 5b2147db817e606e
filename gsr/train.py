"""``gsr train`` / ``python -m gsr.train``: BasicSR's ``train_pipeline`` behind gsr's option checks.

Distributed: ``torchrun --nproc_per_node=N -m gsr.train -opt X --launcher pytorch`` (docs/DISTRIBUTED.md).
SIGTERM or SIGUSR1 (a cluster's notice before preemption) saves the training state after the current step and
ends the run with exit status 3 (``gsr.utils.stop_request``); ``--auto_resume`` continues from that step.
"""
import argparse
import os
import re
import sys
from typing import List, Optional, Tuple

import gsr  # noqa: F401  (compatibility fixes and registration)
from gsr.models.option_check import check_options, load_option_file
from gsr.utils.errors import GsrError
from gsr.utils.stop_request import TrainingStopped, stop_on_signals


def basicsr_argv(argv: List[str]) -> List[str]:
    """Accept torch.distributed.launch's ``--local-rank=N`` spelling as BasicSR's ``--local_rank``."""
    return [a.replace('--local-rank', '--local_rank', 1) if a.startswith('--local-rank') else a for a in argv]


def check_command_line(argv: List[str], is_train: bool) -> Tuple[str, dict]:
    """Validate ``-opt`` (and its contents) before BasicSR parses it; return the path and the options."""
    parser = argparse.ArgumentParser(prog=f'gsr {"train" if is_train else "test"}', add_help=True)
    parser.add_argument('-opt', required=True, help='Path to option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--auto_resume', action='store_true')
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', type=int, default=0)
    parser.add_argument('--force_yml', nargs='+', default=None, help='e.g. train:ema_decay=0.999')
    args = parser.parse_args(argv)
    opt = load_option_file(args.opt)
    for entry in args.force_yml or []:
        apply_force_yml(opt, entry)
    opt['world_size'] = launched_world_size(args.launcher)  # BasicSR sets the real one after init_dist
    if is_train and 'train' not in (opt.get('datasets') or {}):
        raise GsrError(f'{args.opt}: datasets.train is missing: training needs a training set')
    if not is_train and not (opt.get('path') or {}).get('pretrain_network_g'):
        raise GsrError(f'{args.opt}: path.pretrain_network_g is not set: testing would score a randomly '
                       'initialised network')
    check_options(opt, args.opt)
    return args.opt, opt


def launched_world_size(launcher: str) -> int:
    """The number of processes the launcher started (torchrun's WORLD_SIZE, slurm's SLURM_NTASKS), 1 without one."""
    variable = {'pytorch': 'WORLD_SIZE', 'slurm': 'SLURM_NTASKS'}.get(launcher)
    value = os.environ.get(variable, '1') if variable else '1'
    return int(value) if value.isdigit() and int(value) > 0 else 1


FORCE_YML_KEY = re.compile(r'[A-Za-z0-9_.\-]+')


def apply_force_yml(opt: dict, entry: str) -> None:
    """Apply one ``--force_yml key:sub=value`` the way BasicSR will, so that the option check sees it too."""
    from basicsr.utils.options import _postprocess_yml_value
    if '=' not in entry:
        raise GsrError(f'--force_yml {entry!r}: expected key:subkey=value')
    if entry.count('=') > 1:  # BasicSR splits the entry at every '='
        raise GsrError(f'--force_yml {entry!r}: a value cannot contain "=" (BasicSR splits the entry at each one)')
    keys, value = (part.strip() for part in entry.split('=', 1))
    *parents, last = keys.split(':')
    # BasicSR builds Python source from the keys and exec()s it: anything but plain names would run as code
    odd = [key for key in parents + [last] if not FORCE_YML_KEY.fullmatch(key)]
    if odd:
        raise GsrError(f'--force_yml {entry!r}: {odd[0]!r} is not an option key (letters, digits, _ . -)')
    try:
        value = _postprocess_yml_value(value)
    except (SyntaxError, ValueError) as e:
        raise GsrError(f'--force_yml {entry!r}: {value!r} is not a value ({type(e).__name__}: {e})') from e
    node = opt
    for key in parents:
        if not isinstance(node.get(key), dict):
            raise GsrError(f'--force_yml {entry!r}: {key!r} is not a block of the option file')
        node = node[key]
    node[last] = value


def run(argv: List[str], is_train: bool) -> int:
    argv = basicsr_argv(argv)
    path, _ = check_command_line(argv, is_train)
    prog = sys.argv[0]
    sys.argv = [prog] + argv
    try:
        if is_train:
            from basicsr.train import train_pipeline
            try:
                with stop_on_signals():  # SIGTERM / SIGUSR1: save the state of the last step, then stop
                    train_pipeline(os.getcwd())
            except TrainingStopped as e:
                raise TrainingStopped(f'{e}; `gsr train -opt {path} --auto_resume` continues from it') from None
        else:
            from basicsr.test import test_pipeline
            test_pipeline(os.getcwd())
    finally:
        sys.argv = [prog]
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, is_train=True)


if __name__ == '__main__':
    from gsr.cli import main as cli_main
    sys.exit(cli_main(['train'] + sys.argv[1:]))
