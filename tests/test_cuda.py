"""CUDA paths, prepared without a GPU (issue 27).

``benchmarks/gpu_check.sh`` runs these on a GPU machine (``pytest -m cuda``); where there is no CUDA device they are
skipped. ``GSR_TEST_DEVICE=cpu`` rehearses them on the CPU (``benchmarks/gpu_check.sh --device cpu``): what has no
CPU counterpart (fp16 autocast, peak GPU memory, NCCL) is skipped there with its reason.
"""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from gsr.archs.attached_arch import network_from_options
from gsr.archs.network_checkpoint import checkpoint_entries
from gsr.data.second_order_degrader import DegradationOptions, SecondOrderDegrader
from gsr.utils.checkpoint import load_training_state
from gsr.utils.execution import execution_options, inference_network
from gsr.utils.inference import super_resolve
from tests.conftest import run_gsr, tiny_options, write_yaml
from tests.test_degradations import _kernels, batch, seed_all  # noqa: F401  (batch: the fixture)
from tests.test_device_guard import CASES, model_and_batch
from tests.test_distributed import free_port

DEVICE = os.environ.get('GSR_TEST_DEVICE', 'cuda')
ON_CUDA = DEVICE.startswith('cuda')
NUM_GPU = 1 if ON_CUDA else 0
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason='no CUDA device here (GSR_TEST_DEVICE=cpu rehearses these tests on the CPU)'),
]
CUDA_ONLY = pytest.mark.skipif(not ON_CUDA, reason='CUDA only: no CPU counterpart to rehearse')


def tiny_network(opt):
    torch.manual_seed(0)
    return network_from_options(opt).eval()


@pytest.mark.parametrize('path,tfd', CASES, ids=[os.path.basename(p) + ('_training_only' if t else '')
                                                 for p, t in CASES])
def test_a_training_step_of_every_model_runs_on_the_device(path, tfd, tmp_path):
    model, data = model_and_batch(path, tmp_path, tfd, num_gpu=NUM_GPU)
    model.feed_data(data)
    model.optimize_parameters(1)
    assert model.device.type == torch.device(DEVICE).type
    assert all(p.device.type == model.device.type for p in model.net_g.parameters())
    assert np.isfinite(model.log_dict['l_total'])


def test_the_degrader_on_the_device_matches_the_cpu_and_makes_the_twin(batch):  # noqa: F811
    """Given the same draws, the noise-free degradation agrees with the CPU's (JPEG's rounding may flip a
    quantisation step in a few pixels); the noisy rows differ from their twins by the noise alone."""
    degrader = SecondOrderDegrader(DegradationOptions(gaussian_noise_prob=1.0, gaussian_noise_prob2=1.0,
                                                      noise_range=(20., 30.)))
    seed_all(0)
    draws = degrader.sample(batch['gt'], *_kernels(batch))
    on_cpu = degrader.apply(batch['gt'], draws, add_noise=False)
    degrader.to(DEVICE)
    draws = {k: v.to(DEVICE) for k, v in draws.items()}
    gt = batch['gt'].to(DEVICE)
    twin = degrader.apply(gt, draws, add_noise=False)
    noisy = degrader.apply(gt, draws)
    assert twin.device.type == noisy.device.type == torch.device(DEVICE).type
    difference = (twin.cpu() - on_cpu).abs()
    assert difference.mean() < 1e-3 and (difference > 1.5 / 255).float().mean() < 1e-3, difference.max()
    assert noisy.shape == twin.shape and (noisy - twin).std().item() > 5 / 255


@CUDA_ONLY
def test_fp16_training_saves_and_resumes_its_gradient_scaler(tmp_path, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder, name='fp16',
                       **{'train.precision': 'fp16', 'train.channels_last': True, 'num_gpu': 1})
    opt['logger']['save_checkpoint_freq'] = 2
    path = write_yaml(tmp_path / 'o.yml', opt)
    assert run_gsr(['train', '-opt', path], cwd=tmp_path).returncode == 0
    folder = tmp_path / 'experiments' / 'fp16'
    saved = load_training_state(str(folder / 'training_states' / '4.state'))
    assert saved['grad_scaler']['scale'] > 0
    opt['train']['total_iter'] = 6
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt), '--auto_resume'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(sorted(folder.glob('train_*.log'))[-1]).read()
    assert 'Resuming training from epoch: ' in log
    losses = [float(v) for v in re.findall(r'l_pix: ([-+0-9.e]+)', log)]
    assert losses and np.all(np.isfinite(losses))


@pytest.mark.parametrize('precision', ['bf16', pytest.param('fp16', marks=CUDA_ONLY)])
def test_half_precision_inference_agrees_with_fp32(precision, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder)
    net = tiny_network(opt).to(DEVICE)
    lr = cv2.cvtColor(cv2.imread(os.path.join(small_photo_folder, sorted(os.listdir(small_photo_folder))[0])),
                      cv2.COLOR_BGR2RGB)[:48, :64]
    reference = super_resolve(net, lr, 4).astype(np.float32)
    device_type = torch.device(DEVICE).type
    half = inference_network(net, execution_options({'precision': precision, 'channels_last': True}, '--',
                                                    device_type), device_type, '--')
    assert np.abs(super_resolve(half, lr, 4).astype(np.float32) - reference).mean() < 1.0


@CUDA_ONLY
def test_tiled_inference_peak_gpu_memory_is_bounded_by_the_tile(small_photo_folder):
    net = tiny_network(tiny_options(small_photo_folder, small_photo_folder)).to(DEVICE)
    peaks = []
    for side in (256, 1024):
        lr = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        super_resolve(net, lr, 4, tile=64)
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] <= 1.1 * peaks[0] + 2 ** 20, peaks  # 16x the pixels, the same tile


def test_compile_on_the_device_agrees_with_eager(small_photo_folder):
    net = tiny_network(tiny_options(small_photo_folder, small_photo_folder)).to(DEVICE)
    lr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    device_type = torch.device(DEVICE).type
    compiled = inference_network(net, execution_options({'compile': True}, '--', device_type), device_type, '--')
    difference = np.abs(super_resolve(compiled, lr, 4).astype(int) - super_resolve(net, lr, 4).astype(int))
    assert difference.max() <= 1


def test_torchrun_one_process_with_global_batch_statistics(tmp_path, small_photo_folder):
    """One process through torchrun (NCCL on CUDA, gloo on the CPU) with the alignment statistics gathered over
    every rank (``batch_statistics: global``)."""
    opt = tiny_options(small_photo_folder, small_photo_folder, name='ddp1', num_gpu=NUM_GPU)
    opt['batch_statistics'] = 'global'
    opt['train']['regularizers'] = {'l_align': {'type': 'FeatureAlignmentLoss', 'mode': 'official',
                                                'reduction': 'sum', 'loss_weight': 1.0}}
    opt['train']['total_iter'] = 2
    opt['logger']['save_checkpoint_freq'] = 2
    path = write_yaml(tmp_path / 'ddp1.yml', opt)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=1', f'--master_port={free_port()}', '-m',
           'gsr.train', '-opt', path, '--launcher', 'pytorch']
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    log = open(next((tmp_path / 'experiments' / 'ddp1').glob('train_*.log'))).read()
    losses = [float(v) for v in re.findall(r'l_align: ([-+0-9.e]+)', log)]
    assert len(losses) == 2 and np.all(np.isfinite(losses))


def test_a_checkpoint_trained_on_the_device_exports_to_onnx(tmp_path):
    model, data = model_and_batch(os.path.join(os.path.dirname(__file__), '..', 'options', 'tiny',
                                               'train_srresnet_baseline.yml'), tmp_path, num_gpu=NUM_GPU)
    model.feed_data(data)
    model.optimize_parameters(1)
    torch.save(checkpoint_entries(model.get_bare_model(model.net_g), 'params'), tmp_path / 'net.pth')
    option_file = os.path.join(os.path.dirname(__file__), '..', 'options', 'tiny', 'train_srresnet_baseline.yml')
    result = run_gsr(['export', '-opt', option_file, '--checkpoint', str(tmp_path / 'net.pth'), '--output',
                      str(tmp_path / 'net.onnx')], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'max |onnxruntime - PyTorch|' in result.stdout
