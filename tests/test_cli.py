"""The command line on the CPU: the console scripts, the test pipeline over benchmark settings, and bad input as one
clear line (every system's train / resume / test / infer / export: test_lifecycle.py)."""
import os
import re
import shutil
import sys

import pytest
import torch

from tests.conftest import run_gsr, tiny_options, write_yaml


def test_basicsr_console_script_is_installed():
    bindir = os.path.dirname(sys.executable)
    for name in ('gsr', 'basicsr'):
        assert shutil.which(name, path=bindir), name


def test_missing_option_file_is_one_line(tmp_path):
    result = run_gsr(['train', '-opt', 'nope.yml'], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == 'gsr: error: option file not found: nope.yml'


@pytest.mark.parametrize('dotted, value, registry, gsr_name', [
    ('network_g.type', 'NoSuchNet', 'arch', 'MSRN'),
    ('model_type', 'NoSuchModel', 'model', 'GeneralizableSRModel'),
    ('datasets.train.type', 'NoSuchDataset', 'dataset', 'PairedDegradationDataset'),
    ('train.pixel_opt.type', 'NoSuchLoss', 'loss', 'FeatureAlignmentLoss'),
])
@pytest.mark.slow
def test_unknown_type_lists_the_gsr_names(tmp_path, photo_folder, dotted, value, registry, gsr_name):
    opt = write_yaml(tmp_path / 'bad.yml', tiny_options(photo_folder, photo_folder, **{dotted: value}))
    result = run_gsr(['train', '-opt', opt], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"unknown {dotted} '{value}'" in lines[0] and gsr_name in lines[0]


def test_missing_data_root_names_the_path_and_the_docs(tmp_path, photo_folder):
    missing = str(tmp_path / 'datasets' / 'DIV2K' / 'DIV2K_train_HR_sub')
    opt = write_yaml(tmp_path / 'bad.yml', tiny_options(missing, photo_folder))
    result = run_gsr(['train', '-opt', opt], cwd=tmp_path)
    assert result.returncode == 2
    assert missing in result.stderr and 'docs/DATASETS.md' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_headline_option_file_trains_or_names_the_div2k_path(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = run_gsr(['train', '-opt', os.path.join(repo, 'options', 'train_srresnet_align.yml')],
                     cwd=repo,
                     timeout=120)
    if not os.path.isdir(os.path.join(repo, 'datasets', 'DIV2K')):
        assert result.returncode == 2
        assert 'datasets/DIV2K/DIV2K_train_HR_sub' in result.stderr and 'docs/DATASETS.md' in result.stderr


def test_test_pipeline_evaluates_benchmark_settings(tmp_path, small_photo_folder):
    from basicsr.archs import build_network
    net = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}
    torch.save({'params_ema': build_network(dict(net)).state_dict()}, tmp_path / 'net.pth')
    opt = {
        'name': 'tiny_test',
        'model_type': 'GeneralizableSRModel',
        'scale': 4,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            f'test_{i}': {
                'name': f'photos_{s}',
                'type': 'DegradedBenchmarkDataset',
                'dataroot_gt': small_photo_folder,
                'setting': s
            }
            for i, s in enumerate(['clean', 'b+n+j'], 1)
        },
        'network_g': net,
        'path': {
            'pretrain_network_g': str(tmp_path / 'net.pth'),
            'param_key_g': 'params_ema',
            'strict_load_g': True
        },
        'val': {
            'save_img': True,
            'suffix': None,
            'metrics': {
                'psnr': {
                    'type': 'calculate_psnr',
                    'crop_border': 4
                }
            }
        },
    }
    result = run_gsr(['test', '-opt', write_yaml(tmp_path / 't.yml', opt)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / 'results' / 'tiny_test'
    log = open(next(root.glob('test_*.log'))).read()
    for setting in ('clean', 'b+n+j'):
        assert f'Validation photos_{setting}' in log
        assert len(os.listdir(root / 'visualization' / f'photos_{setting}')) == 3
    psnrs = [float(v) for v in re.findall(r'# psnr: ([0-9.]+)', log)]
    assert len(psnrs) == 2 and all(5 < v < 50 for v in psnrs)
