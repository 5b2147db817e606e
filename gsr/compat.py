"""What ``import gsr`` changes in BasicSR 1.4.2's pipeline (its launcher, option parsing, resume and folders),
applied before BasicSR is used. BasicSR's model classes are left as they are: what gsr's models do differently
(atomic checkpoints, ``AttachedNetwork`` saving and loading, DDP on the CPU, options never mutated) is
``GsrModel``'s own methods (``gsr/models/base_model.py``).

Each fix has a test that fails without it (``tests/test_compat.py``; 6:
``tests/test_reliability.py::test_restart_in_place_clean_torn_writes_and_train_longer``):

1. ``functional_tensor_shim``: BasicSR imports ``torchvision.transforms.functional_tensor``, removed in
   torchvision 0.17; the shim provides the one function it needs.
2. ``init_dist``: the pytorch/slurm launchers divided by the GPU count (zero on CPU) and hard-coded nccl;
   gloo is used where CUDA is absent and the device is set from ``LOCAL_RANK``.
3. ``load_resume_state``: ``--auto_resume`` called CUDA APIs and looked relative to the working directory; the
   temporary files of interrupted saves are removed first.
4. training states load with ``weights_only=True`` plus exactly ``collections.Counter``.
5. option YAML is parsed with a safe loader (``!!python/...`` tags are rejected); ``--force_yml`` lists
   are parsed with ``ast.literal_eval`` instead of ``eval``, and numbers in exponent notation (``2e-4``) as numbers.
6. ``make_exp_dirs`` / ``mkdir_and_rename``: ``--auto_resume`` of a run killed before its first save starts again
   in its own folder instead of archiving it.
7. ``worker_init_fn``: BasicSR seeds every dataloader worker's ``numpy`` and ``random`` with ``seed + rank x
   workers + worker id`` each time the workers start, that is at every epoch unless ``persistent_workers``: the blur
   kernels, crop positions and flips drawn in the workers repeated epoch after epoch (a training set of N images saw
   N kernel draws in all). gsr leaves PyTorch's own seeding of each worker, from a base seed the main process draws
   afresh for each epoch's iterator: a new stream per epoch, the same streams for the same ``manual_seed``.

The fixes target BasicSR 1.4.2 exactly; ``import gsr`` refuses any other installed version.
"""
import ast
import contextlib
import functools
import importlib
import os
import re
import subprocess
import sys
import types
from collections import OrderedDict

import torch

_APPLIED = False
SUPPORTED_BASICSR = '1.4.2'
ORIGINALS = {}  # BasicSR's functions before patching (the tests show each fix is needed)


def install_functional_tensor_shim() -> None:
    """Provide ``torchvision.transforms.functional_tensor.rgb_to_grayscale`` where torchvision dropped it."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
        return
    except ModuleNotFoundError:
        pass
    from torchvision.transforms import functional
    shim = types.ModuleType(name)
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = shim


# ----------------------------------------------------------------------------------------- distributed
def default_backend() -> str:
    """nccl where CUDA is present, gloo otherwise (CPU clusters, CI)."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def _set_cuda_device(local_rank: int) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def init_dist(launcher: str, backend: str = None, **kwargs) -> None:
    """BasicSR's ``init_dist`` without the CUDA-only assumptions."""
    import torch.distributed as dist
    import torch.multiprocessing as mp
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    backend = backend or default_backend()
    if launcher == 'pytorch':
        _set_cuda_device(int(os.environ.get('LOCAL_RANK', os.environ.get('RANK', 0))))
        dist.init_process_group(backend=backend, **kwargs)
    elif launcher == 'slurm':
        _init_dist_slurm(backend, **kwargs)
    else:
        raise ValueError(f'Invalid launcher type: {launcher}')


def _init_dist_slurm(backend: str, port: int = None) -> None:
    import torch.distributed as dist
    proc_id = int(os.environ['SLURM_PROCID'])
    local_rank = int(os.environ.get('SLURM_LOCALID', proc_id))
    _set_cuda_device(local_rank)
    node_list = os.environ['SLURM_NODELIST']
    os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    os.environ['MASTER_PORT'] = str(port) if port is not None else os.environ.get('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = str(local_rank)
    os.environ['RANK'] = str(proc_id)
    dist.init_process_group(backend=backend)


# ----------------------------------------------------------------------------------------- dataloader workers
def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """Leave a dataloader worker's generators as PyTorch seeded them: its worker loop seeds torch, ``random`` and
    ``numpy`` from a base seed drawn from the main process's generator for every iterator (every epoch), plus the
    worker id, so each epoch, rank and worker draws its own stream, the same ones under the same ``manual_seed``
    (BasicSR seeds the main generator with ``manual_seed + rank``). BasicSR's function, which this one replaces with
    its signature, re-seeded ``numpy`` and ``random`` with the same numbers at every epoch."""


# ----------------------------------------------------------------------------------------- resume
def latest_training_state(state_dir: str):
    """Path of the highest-iteration ``<iter>.state`` in ``state_dir`` (temp files are ignored), or None."""
    from gsr.utils.checkpoint import training_states
    states = training_states(state_dir)
    return os.path.join(state_dir, states[max(states)]) if states else None


def remove_torn_writes(*folders: str) -> None:
    """Delete the temporary files of writes that a kill interrupted (``atomic_write``'s ``.<name>.*.tmp``)."""
    for folder in folders:
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.startswith('.') and name.endswith('.tmp'):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(folder, name))


def load_resume_state(opt):
    """BasicSR's ``load_resume_state`` without CUDA calls, loading safely, found under the run's own root; the
    temporary files of interrupted saves are removed first (rank 0)."""
    from basicsr.utils import check_resume

    from gsr.utils.checkpoint import load_training_state
    if opt.get('rank', 0) == 0:
        remove_torn_writes(opt['path']['models'], opt['path']['training_states'])
    if opt['auto_resume']:
        path = latest_training_state(opt['path']['training_states'])
        if path is not None:
            opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
    if path is None:
        return None
    state = load_training_state(path)
    check_resume(opt, state['iter'])
    return state


KEEP_FOLDERS = set()  # folders of a run restarted in place, which ``mkdir_and_rename`` must not archive


def make_exp_dirs(opt):
    """BasicSR's ``make_exp_dirs``, except that ``--auto_resume`` with no saved state yet (a run killed before its
    first save) starts again in the run's own folder instead of archiving it."""
    from basicsr.utils.misc import make_exp_dirs as original
    root = opt['path']['experiments_root'] if opt['is_train'] else opt['path']['results_root']
    if not (opt['auto_resume'] and os.path.isdir(root)):
        return original(opt)
    KEEP_FOLDERS.add(os.path.join(opt['root_path'], 'tb_logger', opt['name']))
    for key, path in opt['path'].items():
        if not any(word in key for word in ('strict_load', 'pretrain_network', 'resume', 'param_key')):
            os.makedirs(path, exist_ok=True)


def mkdir_and_rename(path):
    """BasicSR's ``mkdir_and_rename``, leaving the folders of ``KEEP_FOLDERS`` in place."""
    from basicsr.utils.misc import mkdir_and_rename as original
    if path in KEEP_FOLDERS:
        os.makedirs(path, exist_ok=True)
    else:
        original(path)


# ----------------------------------------------------------------------------------------- options
def _ordered_mapping(loader, node):
    return OrderedDict(loader.construct_pairs(node))


def make_option_loader():
    """A ``yaml.SafeLoader`` that keeps key order, as BasicSR's loader does."""
    import yaml

    class OptionLoader(yaml.SafeLoader):
        pass

    OptionLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _ordered_mapping)
    return OptionLoader


def _wrap_ordered_yaml(original):

    @functools.wraps(original)
    def ordered_yaml():
        return make_option_loader(), original()[1]

    return ordered_yaml


# a number in exponent notation, which BasicSR's ``--force_yml`` parser leaves a string
SCIENTIFIC = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+')


def _wrap_postprocess_yml_value(original):

    @functools.wraps(original)
    def postprocess(value: str):
        if value.startswith('['):
            return ast.literal_eval(value)
        if SCIENTIFIC.fullmatch(value):  # BasicSR keeps 2e-4 and 2.0e-4 as strings (review case d17)
            return float(value)
        return original(value)

    return postprocess


def check_basicsr_version() -> None:
    """The fixes patch BasicSR's functions by name: refuse a version they were not written for."""
    from importlib.metadata import PackageNotFoundError, version

    from gsr.utils.errors import GsrError
    try:
        installed = version('basicsr')
    except PackageNotFoundError as e:
        raise GsrError('BasicSR is not installed: '
                       f'pip install --no-build-isolation basicsr=={SUPPORTED_BASICSR}') from e
    if installed != SUPPORTED_BASICSR:
        raise GsrError(f'gsr patches BasicSR {SUPPORTED_BASICSR}, but {installed} is installed: '
                       f'pip install --no-build-isolation basicsr=={SUPPORTED_BASICSR}')


# ----------------------------------------------------------------------------------------- apply
def apply() -> None:
    """Apply every fix once. Safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    check_basicsr_version()
    install_functional_tensor_shim()
    import basicsr.data
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.options

    ORIGINALS.update(
        ordered_yaml=basicsr.utils.options.ordered_yaml,
        load_resume_state=basicsr.train.load_resume_state,
        worker_init_fn=basicsr.data.worker_init_fn,
    )
    basicsr.utils.dist_util.init_dist = init_dist
    basicsr.utils.options.init_dist = init_dist
    basicsr.utils.options.ordered_yaml = _wrap_ordered_yaml(basicsr.utils.options.ordered_yaml)
    basicsr.utils.options._postprocess_yml_value = _wrap_postprocess_yml_value(
        basicsr.utils.options._postprocess_yml_value)
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.make_exp_dirs = make_exp_dirs
    basicsr.train.mkdir_and_rename = mkdir_and_rename
    basicsr.data.worker_init_fn = worker_init_fn  # build_dataloader looks the name up when it builds a loader
    _APPLIED = True
