"""Shared fixtures: real photographs (../shared/data where present, scikit-image's otherwise) and tiny options."""
import os
import subprocess
import sys
from typing import Any, Dict, List

import numpy as np
import pytest
import yaml

import gsr  # noqa: F401  (compatibility fixes + registration for every test)
from gsr.utils.image_io import write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), 'shared', 'data')


def skimage_photos() -> Dict[str, np.ndarray]:
    from skimage import data
    return {'astronaut': data.astronaut(), 'coffee': data.coffee(), 'chelsea': data.chelsea(), 'rocket': data.rocket()}


@pytest.fixture(scope='session')
def photo_folder(tmp_path_factory) -> str:
    """A folder of real colour photographs: Set5 from ../shared/data if present, else scikit-image photos."""
    shared = os.path.join(SHARED, 'Set5')
    if os.path.isdir(shared):
        return shared
    folder = tmp_path_factory.mktemp('photos')
    for name, img in skimage_photos().items():
        write_image(str(folder / f'{name}.png'), img)
    return str(folder)


@pytest.fixture(scope='session')
def small_photo_folder(tmp_path_factory) -> str:
    """Three real photographs, resized to about 128 px, for fast end-to-end runs."""
    import cv2
    folder = tmp_path_factory.mktemp('small_photos')
    for name, img in list(skimage_photos().items())[:3]:
        h, w = img.shape[:2]
        small = cv2.resize(img, (w * 128 // h // 4 * 4, 128), interpolation=cv2.INTER_AREA)
        write_image(str(folder / f'{name}.png'), small)
    return str(folder)


def tiny_options(train_root: str, val_root: str, name: str = 'tiny', **overrides) -> Dict[str, Any]:
    """A training option dict small enough to run a few iterations on the CPU in seconds."""
    opt = {
        'name': name,
        'model_type': 'GeneralizableSRModel',
        'scale': 4,
        'num_gpu': 0,
        'manual_seed': 0,
        'paired': True,
        'datasets': {
            'train': {
                'name': 'tiny_train',
                'type': 'PairedDegradationDataset',
                'dataroot_gt': train_root,
                'io_backend': {
                    'type': 'disk'
                },
                'crop_pad_size': 80,
                'gt_size': 32,
                'kernel_sets': 2,
                'num_worker_per_gpu': 0,
                'batch_size_per_gpu': 2,
                'dataset_enlarge_ratio': 10
            },
            'val': {
                'name': 'tiny_val',
                'type': 'DegradedBenchmarkDataset',
                'dataroot_gt': val_root,
                'setting': 'b+n'
            },
        },
        'network_g': {
            'type': 'MSRResNet',
            'num_feat': 8,
            'num_block': 1,
            'upscale': 4
        },
        'path': {
            'pretrain_network_g': None,
            'strict_load_g': True,
            'resume_state': None
        },
        'train': {
            'ema_decay': 0.9,
            'optim_g': {
                'type': 'Adam',
                'lr': 1e-3,
                'betas': [0.9, 0.99]
            },
            'scheduler': {
                'type': 'MultiStepLR',
                'milestones': [100],
                'gamma': 0.5
            },
            'total_iter': 4,
            'warmup_iter': -1,
            'pixel_opt': {
                'type': 'L1Loss',
                'loss_weight': 1.0,
                'reduction': 'mean'
            },
            'regularizers': {
                'l_align': {
                    'type': 'FeatureAlignmentLoss',
                    'loss_weight': 1.0
                },
                'l_rff': {
                    'type': 'RFFAlignmentLoss',
                    'loss_weight': 1.0
                }
            },
        },
        'val': {
            'val_freq': 1000,
            'save_img': False,
            'metrics': {
                'psnr': {
                    'type': 'calculate_psnr',
                    'crop_border': 4
                }
            }
        },
        'logger': {
            'print_freq': 1,
            'save_checkpoint_freq': 2,
            'use_tb_logger': False
        },
    }
    for dotted, value in overrides.items():
        node = opt
        keys = dotted.split('.')
        for key in keys[:-1]:
            node = node[key]
        if value is None and keys[-1] in node:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return opt


def attached_and_bare(backbone: Dict[str, Any], attachments: Dict[str, Any]):
    """An ``AttachedNetwork`` and the bare backbone architecture with the same weights (seeded)."""
    import torch
    from basicsr.archs import build_network

    from gsr.archs.attached_arch import AttachedNetwork
    torch.manual_seed(0)
    net = AttachedNetwork(backbone, attachments)
    bare = build_network(dict(backbone))
    bare.load_state_dict(net.backbone.state_dict())
    return net, bare


def copies_batch(lq, gt, copies: int = 2):
    """A ``DegradedBatch`` whose rows are ``copies`` stacked copies of the same crops (as paired training makes)."""
    import torch

    from gsr.data.degraded_batch import DegradedBatch
    n = lq.shape[0]
    return DegradedBatch(gt=gt, lq=lq, content=torch.arange(n // copies).repeat(copies), degradation=torch.arange(n))


def write_yaml(path, opt: Dict[str, Any]) -> str:
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def gsr_error(args: List[str], cwd, monkeypatch, capsys) -> str:
    """``gsr <args>`` in process in ``cwd``: it must exit with status 2 and one ``gsr: error:`` line, returned."""
    from gsr.cli import main
    monkeypatch.chdir(cwd)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('gsr: error: '), err
    return err[0]


def run_gsr(args: List[str], cwd, timeout: int = 600, env=None, program: str = None) -> subprocess.CompletedProcess:
    """Run ``python -m gsr.cli <args>`` in ``cwd``, or the installed console script ``program`` (gsr, basicsr)."""
    full_env = dict(os.environ, **(env or {}))
    command = [os.path.join(os.path.dirname(sys.executable), program)] if program else [sys.executable, '-m', 'gsr.cli']
    return subprocess.run(command + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
