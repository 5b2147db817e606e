"""Everything gsr changes in BasicSR 1.4.2, in one place, applied by ``import gsr`` before BasicSR is used.

Stack compatibility (each has a test in ``tests/test_compat.py`` that fails without it):

1. ``functional_tensor_shim``: BasicSR imports ``torchvision.transforms.functional_tensor``, removed in
   torchvision 0.17; the shim provides the one function it needs.
2. ``init_dist``: the pytorch/slurm launchers divided by the GPU count (zero on CPU) and hard-coded nccl;
   gloo is used where CUDA is absent, the device is set from ``LOCAL_RANK``, and DDP gets no
   ``device_ids`` on CPU.
3. ``load_resume_state``: ``--auto_resume`` called CUDA APIs and looked relative to the working directory.
4. training states load with ``weights_only=True`` plus exactly ``collections.Counter``.
5. option YAML is parsed with a safe loader (``!!python/...`` tags are rejected); ``--force_yml`` lists
   are parsed with ``ast.literal_eval`` instead of ``eval``, and numbers in exponent notation (``2e-4``) as numbers.
6. ``setup_optimizers`` / ``setup_schedulers`` no longer mutate the options dict (they ``pop('type')``): every
   model class's ``setup_optimizers``, BasicSR's and any defined later, runs on a copy of ``opt['train']``.

The fixes target BasicSR 1.4.2 exactly; ``import gsr`` refuses any other installed version.

Reliability (``docs/RELIABILITY.md``): checkpoints and training states are written atomically, networks
load with ``weights_only=True`` and a mismatching checkpoint fails with the missing/unexpected keys.
"""
import ast
import contextlib
import copy
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


def model_to_device(self, net):
    """BasicSR's ``model_to_device``; DDP gets ``device_ids`` only on CUDA."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


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


def on_option_copy(method):
    """Run ``method`` on a deep copy of ``self.opt['train']`` so BasicSR's ``pop('type')`` leaves it intact."""
    if getattr(method, '__gsr_patched__', False):
        return method

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        train_opt = self.opt['train']
        self.opt['train'] = copy.deepcopy(train_opt)
        try:
            return method(self, *args, **kwargs)
        finally:
            self.opt['train'] = train_opt

    wrapper.__gsr_patched__ = True
    return wrapper


def protect_setup_optimizers(base: type) -> None:
    """Wrap ``setup_optimizers`` with ``on_option_copy`` in ``base`` and every subclass, now and when defined."""

    def wrap(cls: type) -> None:
        if 'setup_optimizers' in vars(cls):
            cls.setup_optimizers = on_option_copy(vars(cls)['setup_optimizers'])

    pending = [base]
    while pending:
        cls = pending.pop()
        wrap(cls)
        pending.extend(cls.__subclasses__())

    def init_subclass(cls, **kwargs):
        super(base, cls).__init_subclass__(**kwargs)
        wrap(cls)

    base.__init_subclass__ = classmethod(init_subclass)


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


# ----------------------------------------------------------------------------------------- checkpoints
def save_network(self, net, net_label, current_iter, param_key='params'):
    """BasicSR's ``save_network``, written atomically; a failed write raises instead of being ignored. An
    ``AttachedNetwork`` is saved as its backbone plus ``<param_key>_attached`` (``checkpoint_entries``)."""
    from gsr.archs.network_checkpoint import checkpoint_entries
    from gsr.utils.checkpoint import atomic_torch_save
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError('The lengths of net and param_key should be the same.')
    save_dict = {}
    for net_, key in zip(nets, keys):
        save_dict.update(checkpoint_entries(self.get_bare_model(net_), key))
    label = 'latest' if current_iter == -1 else current_iter
    atomic_torch_save(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))


def save_training_state(self, epoch, current_iter):
    """BasicSR's ``save_training_state``, written atomically (after the networks, so a state implies them), with
    what the model adds (``extra_training_state``, e.g. gsr's fp16 gradient scaler)."""
    from gsr.utils.checkpoint import atomic_torch_save
    if current_iter == -1:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers],
        **getattr(self, 'extra_training_state', dict)(),
    }
    atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def load_network(self, net, load_path, strict=True, param_key='params'):
    """BasicSR's ``load_network`` with ``weights_only=True`` and one clear error for a mismatching checkpoint."""
    from gsr.archs.attached_arch import backbone_of
    from gsr.archs.network_checkpoint import load_network_checkpoint
    from gsr.utils.checkpoint import network_weights
    net = self.get_bare_model(net)
    if not strict:
        self._print_different_keys_loading(backbone_of(net), network_weights(load_path, param_key), strict)
    load_network_checkpoint(net, load_path, param_key, strict)


# ----------------------------------------------------------------------------------------- apply
def apply() -> None:
    """Apply every fix once. Safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    check_basicsr_version()
    install_functional_tensor_shim()
    import basicsr.models  # noqa: F401  (every BasicSR model class, so that all are protected)
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel

    ORIGINALS.update(
        ordered_yaml=basicsr.utils.options.ordered_yaml,
        load_resume_state=basicsr.train.load_resume_state,
        setup_optimizers=SRModel.setup_optimizers,
    )
    basicsr.utils.dist_util.init_dist = init_dist
    basicsr.utils.options.init_dist = init_dist
    basicsr.utils.options.ordered_yaml = _wrap_ordered_yaml(basicsr.utils.options.ordered_yaml)
    basicsr.utils.options._postprocess_yml_value = _wrap_postprocess_yml_value(
        basicsr.utils.options._postprocess_yml_value)
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.make_exp_dirs = make_exp_dirs
    basicsr.train.mkdir_and_rename = mkdir_and_rename
    BaseModel.model_to_device = model_to_device
    BaseModel.setup_schedulers = on_option_copy(BaseModel.setup_schedulers)
    protect_setup_optimizers(BaseModel)
    BaseModel.save_network = _master_only(save_network)
    BaseModel.save_training_state = _master_only(save_training_state)
    BaseModel.load_network = load_network
    _APPLIED = True


def _master_only(func):
    from basicsr.utils.dist_util import master_only
    return master_only(func)
