"""One training step of every model under ``HostTensorGuard`` (tests/device_guard.py): no tensor made without
``device=`` meets the model's tensors, so nothing in a step would fail on CUDA for that reason; and the guard
catches a planted ``torch.zeros(shape)`` in the degrader."""
import glob
import os

import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.models import build_model

from gsr.archs.attached_arch import network_from_options
from gsr.models.option_check import load_option_file
from gsr.utils.default_data import resolve_root
from tests.conftest import REPO
from tests.device_guard import DeviceMistake, HostTensorGuard

TINY_FILES = sorted(glob.glob(os.path.join(REPO, 'options', 'tiny', '*.yml')))
# TFD's other mode: the module trains beside the network and is left out at inference
TRAINING_ONLY = {'mode': 'training_only', 'inference': False, 'detach_detector': True}
TFD_FILE = os.path.join(REPO, 'options', 'tiny', 'train_srresnet_tfd.yml')
CASES = [(p, None) for p in TINY_FILES] + [(TFD_FILE, TRAINING_ONLY)]


def model_and_batch(path: str, tmp_path, tfd=None, num_gpu: int = 0):
    """The tiny option file's model (stand-in checkpoints where it starts from another run; ``tfd`` changes its
    attached TFD module; on CUDA with ``num_gpu`` 1) and one training batch as the data loader makes it."""
    opt = load_option_file(path)
    opt['num_gpu'] = num_gpu
    if tfd:
        opt['attach']['tfd'].update(tfd)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['train']['gradient_ratio_freq'] = 1  # the gradient-ratio probe runs too
    if 'network_teacher' in opt:
        torch.save({'params': build_network(dict(opt['network_teacher'])).state_dict()}, tmp_path / 'teacher.pth')
        opt['path']['pretrain_network_teacher'] = str(tmp_path / 'teacher.pth')
    if opt.get('stage') == 'sr':
        torch.save({'params': network_from_options(opt).backbone.state_dict()}, tmp_path / 'stage_a.pth')
        opt['path']['pretrain_network_g'] = str(tmp_path / 'stage_a.pth')
    torch.manual_seed(0)
    model = build_model(opt)
    train = dict(opt['datasets']['train'], phase='train', scale=opt['scale'])
    train['dataroot_gt'] = resolve_root(train['dataroot_gt'])
    dataset = build_dataset(train)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(train['batch_size_per_gpu'])])
    return model, batch


def guarded_step(model, batch) -> None:
    with HostTensorGuard() as guard:
        guard.mark(batch)
        model.feed_data(batch)
        model.optimize_parameters(1)


@pytest.mark.parametrize('path,tfd', CASES, ids=[os.path.basename(p) + ('_training_only' if t else '')
                                                 for p, t in CASES])
def test_a_training_step_of_every_model_keeps_host_tensors_off_the_device(path, tfd, tmp_path):
    model, batch = model_and_batch(path, tmp_path, tfd)
    guarded_step(model, batch)
    assert torch.isfinite(torch.tensor(model.log_dict['l_total']))


def test_the_guard_catches_a_tensor_made_without_a_device(tmp_path, monkeypatch):
    from gsr.data.second_order_degrader import SecondOrderDegrader
    original = SecondOrderDegrader.apply

    def planted(self, gt, p, add_noise=True):
        out = original(self, gt, p, add_noise)
        return out + torch.zeros(out.shape)  # the mistake: no device=out.device

    model, batch = model_and_batch(os.path.join(REPO, 'options', 'tiny', 'train_srresnet_baseline.yml'), tmp_path)
    monkeypatch.setattr(SecondOrderDegrader, 'apply', planted)
    with pytest.raises(DeviceMistake, match='a tensor made without device='):
        guarded_step(model, batch)
