"""LightBSR: architecture and its size, the classic degradations against BasicSR, kernel PCA, the MoCo queue and
contrastive loss, distillation, student initialisation, DDP (teacher then student end to end: test_lifecycle.py)."""
import functools
import glob
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.models import build_model

from gsr.archs.lightbsr_arch import LightBSR
from gsr.data.classic_degrader import (ClassicDegradationOptions, ClassicDegrader, bicubic_downsample, fixed_draws,
                                       gaussian_kernels)
from gsr.data.degraded_batch import DegradedBatch
from gsr.data.kernel_pca import load_kernel_pca, project, srmd_kernels, write_kernel_pca
from gsr.losses.lightbsr_loss import IDRDistillationLoss
from gsr.losses.loss_context import LossContext
from gsr.models.lightbsr_model import initialise_from_teacher
from gsr.models.option_check import load_option_file
from gsr.utils.checkpoint import load_checkpoint
from gsr.utils.errors import GsrError
from tests.conftest import REPO, gsr_error, run_gsr, write_yaml

TINY = {'num_feat': 8, 'num_group': 1, 'num_block': 1, 'channel_idr': 8, 'encoder_widths': [8, 16, 32]}


# ------------------------------------------------------------------------------------------------ network
def test_student_size_is_the_codes_and_odd_sizes_run():
    student = LightBSR()
    count = sum(p.numel() for p in student.parameters())
    assert abs(count - 3.26e6) / 3.26e6 < 0.05, count  # A.2.3: 3.26 M derived from the code
    assert sum(p.numel() for p in student.sr.groups[0].blocks[0].parameters()) == 32512  # one IDR_AB (A.2.3)
    assert sum(p.numel() for p in student.sr.groups[0].parameters()) == 328680  # one IDR_AG
    small = LightBSR(**TINY).eval()
    for h, w in ((23, 37), (17, 16), (9, 30), (1, 1)):
        with torch.no_grad():
            assert small(torch.rand(1, 3, h, w)).shape == (1, 3, 4 * h, 4 * w)


def test_teacher_needs_its_prior():
    teacher = LightBSR(**TINY, prior_channels=15)
    with pytest.raises(ValueError, match=r'needs a degradation prior of shape \(2, 15\)'):
        teacher(torch.rand(2, 3, 16, 16))
    assert teacher(torch.rand(2, 3, 16, 16), torch.rand(2, 15)).shape == (2, 3, 64, 64)


# ------------------------------------------------------------------------------------------------ degradations
def test_batched_bicubic_equals_basicsr_imresize():
    from basicsr.utils.matlab_functions import imresize
    torch.manual_seed(0)
    for h, w in ((64, 52), (37, 41)):
        x = torch.rand(3, 3, h, w)
        expected = torch.stack([imresize(img, 0.25) for img in x])
        torch.testing.assert_close(bicubic_downsample(x, 4), expected, atol=1e-5, rtol=0)


def clamped_bicubic_matrix(n: int, scale: int = 4) -> np.ndarray:
    """The official code's "MATLAB bicubic" x1/scale along one axis, written out: MATLAB's antialiased cubic
    weights, tap indices clamped to the image (1-based as MATLAB, as the code computes them)."""
    def cubic(x):
        a = np.abs(x)
        return np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0))

    s, width = 1 / scale, 4 * scale
    matrix = np.zeros((n // scale, n))
    for i in range(1, n // scale + 1):
        u = i / s + 0.5 * (1 - 1 / s)
        taps = np.floor(u - width / 2) + np.arange(int(np.ceil(width)) + 2)
        weights = s * cubic(s * (u - taps))
        for tap, weight in zip(np.clip(taps, 1, n).astype(int), weights / weights.sum()):
            matrix[i - 1, tap - 1] += weight
    return matrix


def test_the_codes_bicubic_border_replicates_the_end_pixels():
    """``bicubic_border: replicate`` (the default of classic_degradation and the blind protocols) is the code's
    clamped-index bicubic; ``symmetric`` is MATLAB's imresize; they differ only in the outer 2 LR pixels."""
    torch.manual_seed(0)
    x = torch.rand(1, 1, 40, 36, dtype=torch.float64)
    reference = clamped_bicubic_matrix(40) @ x[0, 0].numpy() @ clamped_bicubic_matrix(36).T
    replicate = bicubic_downsample(x.float(), 4, 'replicate')[0, 0].double().numpy()
    symmetric = bicubic_downsample(x.float(), 4, 'symmetric')[0, 0].double().numpy()
    assert np.abs(replicate - reference).max() < 1e-6
    assert np.abs(symmetric - reference)[:2].max() > 1e-3
    assert np.abs(symmetric - replicate)[2:-2, 2:-2].max() < 1e-6
    assert ClassicDegradationOptions().bicubic_border == 'replicate'


def test_kernels_equal_basicsrs_and_the_degrader_rounds_to_8_bits():
    from basicsr.data.degradations import bivariate_Gaussian
    kernels = gaussian_kernels(torch.tensor([2.0, 1.2]), torch.tensor([0.5, 1.2]), torch.tensor([0.3, 0.0]), 21)
    assert np.abs(kernels[0].numpy() - bivariate_Gaussian(21, 2.0, 0.5, 0.3, isotropic=False)).max() < 1e-7
    assert np.abs(kernels[1].numpy() - bivariate_Gaussian(21, 1.2, 1.2, 0, isotropic=True)).max() < 1e-7
    degrader = ClassicDegrader(ClassicDegradationOptions(kernel='aniso', noise=25))
    gt = torch.rand(4, 3, 64, 64)
    draws = degrader.sample(gt)
    assert set(draws) == {'sigma_x', 'sigma_y', 'theta', 'noise_sigma'} and (draws['noise_sigma'] <= 25).all()
    lr = degrader.apply(gt, draws)
    assert lr.shape == (4, 3, 16, 16) and torch.equal(lr * 255, (lr * 255).round())
    clean = degrader.apply(gt, draws, add_noise=False)
    assert (lr - clean).abs().mean() > 0.01  # noise up to 25 on most rows


def test_kernel_pca_basis_is_orthonormal_and_codes_reconstruct(tmp_path):
    content = write_kernel_pca(str(tmp_path / 'pca.pth'), samples=500)
    basis = load_kernel_pca(str(tmp_path / 'pca.pth'), 'kernel_pca')['basis']
    assert basis.shape == (441, 15) and content['components'] == 15
    torch.testing.assert_close(basis.t() @ basis, torch.eye(15), atol=1e-5, rtol=0)
    kernels = srmd_kernels(50, seed=1)
    reconstructed = (project(kernels, basis) @ basis.t()).view(-1, 21, 21)
    error = (reconstructed - kernels).flatten(1).norm(dim=1) / kernels.flatten(1).norm(dim=1)
    assert error.mean() < 0.1  # 15 components hold these kernels to within 10 %
    with pytest.raises(GsrError, match='kernel_pca: kernel PCA file not found'):
        load_kernel_pca(str(tmp_path / 'missing.pth'), 'kernel_pca')


# ------------------------------------------------------------------------------------------------ contrastive
@pytest.mark.slow
def test_queue_updates_and_the_contrastive_loss_falls_on_two_degradations():
    torch.manual_seed(0)
    net = LightBSR(**TINY, prior_channels=15, contrastive=True, dim=16, queue_size=32, momentum=0.99)
    degrader = ClassicDegrader(ClassicDegradationOptions())
    draws = fixed_draws([0.5, 3.5, 0.5, 3.5], [0.5, 3.5, 0.5, 3.5], [0] * 4, [0] * 4)  # two distinct blurs
    lr = degrader.apply(torch.rand(4, 3, 128, 128), draws)
    patches = torch.cat([lr[..., :16, :16], lr[..., 16:, 16:]])  # two crops of each image, one degradation
    prior = project(degrader.kernels(draws), load_kernel_pca('embedded:kernel_pca', 'kernel_pca')['basis'])
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    queue, key_weight = net.queue.clone(), net.key_encoder.body[0].weight.clone()
    losses = []
    for _ in range(60):
        logits = net(patches, prior.repeat(2, 1), outputs=('logits', ), patches=2)['logits']
        assert logits.shape == (2 * 4, 1 + 32)  # 2 ordered pairs x 4 images; positive + queue
        loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert int(net.queue_ptr) == 60 * 4 % 32 and not torch.equal(net.queue, queue)
    assert not torch.equal(net.key_encoder.body[0].weight, key_weight)  # the momentum update moved the keys
    assert np.mean(losses[-5:]) < np.mean(losses[8:13])  # once the queue is full of real keys (8 steps)


# ------------------------------------------------------------------------------------------------ distillation
def distillation_context(student, teacher):
    rows = torch.arange(2)
    batch = DegradedBatch(torch.zeros(2, 3, 64, 64), torch.zeros(2, 3, 16, 16), rows, rows)
    return LossContext(batch, torch.zeros(2, 3, 64, 64), records={'idr': student, 'teacher_idr': teacher})


def test_distillation_is_zero_for_equal_representations_and_positive_otherwise():
    torch.manual_seed(0)
    idr = {'ca': torch.randn(2, 8), 'xk': torch.randn(2, 2, 16, 16)}
    loss = IDRDistillationLoss()
    assert loss(distillation_context(idr, dict(idr))).abs() < 1e-6
    other = {'ca': idr['ca'] + 0.1 * torch.randn(2, 8), 'xk': idr['xk']}
    assert loss(distillation_context(other, idr)) > 0
    assert loss(distillation_context(idr, {'ca': idr['ca'], 'xk': idr['xk'] + 1})) == pytest.approx(1.0)  # MSE


def test_student_initialisation_copies_all_but_the_first_encoder_conv():
    torch.manual_seed(0)
    teacher = LightBSR(**TINY, prior_channels=18, contrastive=True, dim=16, queue_size=8)
    student = LightBSR(**TINY)
    copied = initialise_from_teacher(student, teacher)
    own, theirs = student.state_dict(), teacher.state_dict()
    assert copied == len(own) - 2  # every tensor but the first conv's weight and bias
    for name, value in own.items():
        assert torch.equal(value, theirs[name]) != name.startswith('encoder.body.0.'), name


# ------------------------------------------------------------------------------------------------ option files
LIGHTBSR_FILES = sorted(glob.glob(os.path.join(REPO, 'options', 'train_lightbsr_*.yml')))


def with_local_paths(opt, tmp_path, kernel_pca):
    """An option file's dict with its kernel PCA and teacher paths pointing at files that exist here."""
    opt = dict(opt, kernel_pca=kernel_pca, is_train=True, dist=False, rank=0, world_size=1, num_gpu=0)
    opt['path'] = dict(opt['path'], pretrain_network_g=None)
    if 'network_teacher' in opt:
        teacher = LightBSR(**{k: v for k, v in opt['network_teacher'].items() if k != 'type'})
        torch.save({'params': teacher.state_dict()}, str(tmp_path / 'teacher.pth'))
        opt['path']['pretrain_network_teacher'] = str(tmp_path / 'teacher.pth')
    return opt


@pytest.mark.parametrize('path', LIGHTBSR_FILES, ids=os.path.basename)
def test_every_lightbsr_option_file_builds_its_model(path, tmp_path):
    opt = with_local_paths(load_option_file(path), tmp_path, 'embedded:kernel_pca')
    model = build_model(opt)
    assert set(model.regularizers) == set(opt['train']['regularizers'])
    assert sum(p.numel() for p in model.get_bare_model(model.net_g).parameters()) > 3e6


@pytest.mark.parametrize('mistake, expected', [
    ({'kernel_pca': None}, 'kernel_pca is missing'),
    ({'kernel_pca': 'nowhere.pth'}, 'kernel_pca: kernel PCA file not found: nowhere.pth'),
    ({'network_g.prior_channels': 15}, 'network_g.prior_channels is 15, but the prior has 18 values'),
    ({'patches': 1, 'datasets.train.crops_per_image': 1}, 'the contrastive loss needs at least 2 crops per image'),
    ({'datasets.train.crops_per_image': 3}, 'datasets.train.crops_per_image is 3: it must be patches (2'),
    ({'stage': 'warmup'}, "stage must be one of encoder, joint, got 'warmup'"),
])
@pytest.mark.slow
def test_teacher_option_mistakes_are_one_line(mistake, expected, tmp_path):
    opt = load_option_file(os.path.join(REPO, 'options', 'tiny', 'train_lightbsr_teacher.yml'))
    for dotted, value in mistake.items():
        *parents, key = dotted.split('.')
        node = opt
        for parent in parents:
            node = node[parent]
        node[key] = value
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt)], cwd=tmp_path)
    assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().count('\n') == 0 and os.listdir(tmp_path) == ['o.yml']


def test_the_global_batch_is_checked_against_the_launched_processes(tmp_path, monkeypatch, capsys):
    """global_batch 64 (the paper-scale files): 64 per GPU on 4 torchrun processes trains 256 images per step and
    is refused in one line naming the per-GPU batch to set, before anything is created; 16 per GPU passes."""
    from gsr.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('WORLD_SIZE', '4')
    opt = load_option_file(os.path.join(REPO, 'options', 'tiny', 'train_lightbsr_teacher.yml'))
    opt['global_batch'] = 64
    opt['datasets']['train']['batch_size_per_gpu'] = 64
    assert main(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt), '--launcher', 'pytorch']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'batch_size_per_gpu 64 on 4 process(es) trains 256 images per step, but global_batch ' \
        'is 64' in err[0] and 'set datasets.train.batch_size_per_gpu: 16' in err[0], err
    assert os.listdir(tmp_path) == ['o.yml']
    from gsr.train import check_command_line
    opt['datasets']['train']['batch_size_per_gpu'] = 16
    check_command_line(['-opt', write_yaml(tmp_path / 'o.yml', opt), '--launcher', 'pytorch'], is_train=True)
    for name in os.listdir(os.path.join(REPO, 'options')):
        if name.startswith('train_lightbsr_'):
            assert load_option_file(os.path.join(REPO, 'options', name))['global_batch'] == 64, name


def test_the_joint_stage_loss_is_the_codes_loss_on_0_255_images(tmp_path):
    """Stage joint of every paper-scale file: pixel_opt weight 255 on [0, 1] images plus the auxiliary losses at
    weight 1 equals the code's L1 on 0-255 images plus its unscaled auxiliary loss (Adam's eps then acts alike)."""
    from basicsr.losses import build_loss
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    official_l1 = (sr * 255 - hr * 255).abs().mean()
    for name in os.listdir(os.path.join(REPO, 'options')):
        if name.startswith('train_lightbsr_') and name.endswith('_joint.yml'):
            train = load_option_file(os.path.join(REPO, 'options', name))['train']
            l1 = build_loss(dict(train['pixel_opt']))(sr, hr)
            assert torch.allclose(l1, official_l1, rtol=1e-6), name
            assert all(cfg['loss_weight'] == 1.0 for cfg in train['regularizers'].values()), name


def test_student_without_its_teacher_is_one_line(tmp_path, monkeypatch, capsys):
    opt = load_option_file(os.path.join(REPO, 'options', 'tiny', 'train_lightbsr_student.yml'))
    error = gsr_error(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt)], tmp_path, monkeypatch, capsys)
    assert ('path.pretrain_network_teacher: checkpoint not found: '
            'experiments/tiny_lightbsr_teacher/models/net_g_latest.pth') in error
    assert os.listdir(tmp_path) == ['o.yml']


# ------------------------------------------------------------------------------------------------ end to end
def tiny(role: str, **changes):
    opt = load_option_file(os.path.join(REPO, 'options', 'tiny', f'train_lightbsr_{role}.yml'))
    opt['network_g'].update(TINY)
    if 'network_teacher' in opt:
        opt['network_teacher'].update(TINY)
    opt['datasets']['train'].update(batch_size_per_gpu=2, gt_size=32, crop_pad_size=64)
    opt['train']['total_iter'] = 4
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2)
    opt.update(changes)
    return opt


# ------------------------------------------------------------------------------------------------ protocol, analysis
@functools.lru_cache(maxsize=1)
def embedded_photos() -> tuple:
    from gsr.utils.default_data import materialize
    from gsr.utils.image_io import list_images, read_image_uint8_rgb
    return tuple(torch.from_numpy(read_image_uint8_rgb(p)).permute(2, 0, 1).float() / 255
                 for p in list_images(materialize()['train']))


def photo_crops(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    photos = embedded_photos()
    out = []
    for _ in range(count):
        photo = photos[int(torch.randint(len(photos), (1, ), generator=generator))]
        y, x = (int(torch.randint(photo.shape[i] - size, (1, ), generator=generator)) for i in (1, 2))
        out.append(photo[:, y:y + size, x:x + size])
    return torch.stack(out)


@pytest.mark.slow
def test_a_briefly_trained_teacher_separates_two_degradations_better_than_at_initialisation():
    """The discriminability claim at toy scale: the Calinski-Harabasz index of the channel IDR (and of the pooled
    encoder map) over held-out photo crops under two blurs, before and after 60 contrastive steps on fresh crops
    with random blurs (a fixed toy batch would not do: its queue would hold only its own images)."""
    from sklearn.metrics import calinski_harabasz_score
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(100)
    net = LightBSR(**TINY, prior_channels=15, contrastive=True, dim=16, queue_size=64, momentum=0.99)
    degrader = ClassicDegrader(ClassicDegradationOptions())
    basis = load_kernel_pca('embedded:kernel_pca', 'kernel_pca')['basis']
    sigmas = [0.6, 3.0] * 8
    draws = fixed_draws(sigmas, sigmas, [0] * 16, [0] * 16)
    held_out = degrader.apply(photo_crops(16, 64, generator), draws)
    held_out_prior = project(degrader.kernels(draws), basis)

    def separation():
        net.eval()
        with torch.no_grad():
            fea = net.encoder(net.encoder_input(held_out, held_out_prior))
            ca = net.sr.convert(fea, held_out.shape[-2:])[0]
        net.train()
        return [calinski_harabasz_score(v.numpy(), sigmas) for v in (ca, fea.mean((2, 3)))]

    before = separation()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(60):
        hr = photo_crops(8, 128, generator)
        train_draws = degrader.sample(hr)
        lr = degrader.apply(hr, train_draws)
        patches = torch.cat([lr[..., :16, :16], lr[..., 16:, 16:]])
        prior = project(degrader.kernels(train_draws), basis).repeat(2, 1)
        logits = net(patches, prior, outputs=('logits', ), patches=2)['logits']
        loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = separation()
    assert after[0] > before[0] and after[1] > before[1], (before, after)  # measured: 0.7 -> 1.6, 0.9 -> 3.4


@pytest.mark.slow
def test_blind_protocol_sets_test_a_student_and_analyse_its_idr(tmp_path, small_photo_folder):
    from gsr.tools.degrade import write_blind_sets
    manifest = write_blind_sets(small_photo_folder, str(tmp_path / 'sets'), 'blind-iso', progress=False)
    settings = json.load(open(manifest))['settings']
    assert list(settings) == ['sigma1.2', 'sigma2.4', 'sigma3.6'] and settings['sigma2.4']['sigma_x'] == 2.4
    torch.manual_seed(0)
    student = LightBSR(**TINY)
    torch.save({'params': student.state_dict()}, str(tmp_path / 'student.pth'))
    opt = load_option_file(os.path.join(REPO, 'options', 'test_lightbsr_iso.yml'))
    opt['datasets'] = {f'test_{i}': dict(opt['datasets'][f'test_{i}'], dataroot_gt=str(tmp_path / 'sets' / 'HR' / 'x4'),
                                         dataroot_lq=str(tmp_path / 'sets' / 'LR_blind_iso' / s))
                       for i, s in enumerate(settings, 1)}
    opt['network_g'].update(TINY)
    opt.update(num_gpu=0, name='tiny_test')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'student.pth')
    result = run_gsr(['test', '-opt', write_yaml(tmp_path / 'test.yml', opt)], cwd=tmp_path, program='basicsr')
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(next((tmp_path / 'results' / 'tiny_test').glob('test_*.log'))).read()
    assert log.count('# psnr:') == 3 and log.count('# ssim:') == 3
    train_opt = tiny('student')
    result = run_gsr(['analyze', 'ddr', '-opt', write_yaml(tmp_path / 'train.yml', train_opt), '--checkpoint',
                      str(tmp_path / 'student.pth'), '--param-key', 'params', '--hr', small_photo_folder,
                      '--protocol', 'blind-iso', '--crop', '16', '--output', str(tmp_path / 'ddr')], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = open(tmp_path / 'ddr' / 'ddr.md').read()
    assert '| 36 | 3 | 8 |' in table and (tmp_path / 'ddr' / 'ddr_tsne.png').is_file()  # 3 images x 3 sigmas x 4


@pytest.mark.slow
def test_a_kernel_pca_of_another_size_or_a_teacher_of_another_configuration_is_one_line(tmp_path):
    write_kernel_pca(str(tmp_path / 'pca11.pth'), samples=200, size=11)
    opt = load_option_file(os.path.join(REPO, 'options', 'tiny', 'train_lightbsr_teacher.yml'))
    opt['kernel_pca'] = str(tmp_path / 'pca11.pth')
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt)], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count('\n') == 0
    assert "is a basis of 11x11 kernels, but the degradation's kernels are 21x21" in result.stderr
    student = load_option_file(os.path.join(REPO, 'options', 'tiny', 'train_lightbsr_student.yml'))
    other = LightBSR(**dict(TINY, prior_channels=18, contrastive=True, dim=32, queue_size=64))  # narrower teacher
    torch.save({'params': other.state_dict()}, str(tmp_path / 'other.pth'))
    student['path']['pretrain_network_teacher'] = str(tmp_path / 'other.pth')
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 's.yml', student)], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count('\n') == 0
    assert "other.pth is not a teacher of network_teacher's configuration (missing keys: " in result.stderr
    assert sorted(os.listdir(tmp_path)) == ['o.yml', 'other.pth', 'pca11.pth', 's.yml']


@pytest.mark.slow
def test_teacher_trains_under_torchrun_with_both_ranks_keys_in_one_queue(tmp_path):
    """Two gloo ranks: DDP synchronises the gradients of what ``forward`` computes (SR and logits), and every
    rank's keys are enqueued, so the queue pointer advances by the keys of both ranks."""
    import subprocess
    import sys

    from tests.test_distributed import free_port
    opt = tiny('teacher', name='ddp_teacher')
    opt['train']['total_iter'] = 2
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}', '-m',
           'gsr.train', '-opt', write_yaml(tmp_path / 't.yml', opt), '--launcher', 'pytorch']
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-4000:]
    params = load_checkpoint(str(tmp_path / 'experiments' / 'ddp_teacher' / 'models' / 'net_g_2.pth'))['params']
    assert int(params['queue_ptr']) == 2 * 2 * 2  # 2 steps x 2 ranks x 2 images' first crops


def test_a_teacher_trains_on_the_real_esrgan_pipeline_with_its_prior(photo_folder):
    """Without classic_degradation -> gsr's second-order pipeline; the prior is the first-order kernel's PCA code and
    six noise / JPEG values in [0, 1]."""
    from basicsr.utils import set_random_seed

    from tests.test_model import fixed_batch
    opt = tiny('teacher', is_train=True, dist=False, rank=0, world_size=1)
    opt.pop('classic_degradation')
    opt['network_g']['prior_channels'] = 21
    opt['datasets']['train'].update(kernel_sets=1, crop_pad_size=80)
    set_random_seed(0)
    model = build_model(opt)
    model.feed_data(fixed_batch(photo_folder, opt))
    prior = model.degradation_prior(model.batch.labels)
    assert prior.shape == (4, 21) and model.batch.labels['kernel1'].shape == (4, 441)
    assert (prior[:, 15:] >= 0).all() and (prior[:, 15:] <= 1).all() and prior[:, 17].min() >= 0.3  # JPEG >= 30
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_pix', 'l_contrast', 'l_total'} and np.isfinite(model.log_dict['l_total'])
    opt['network_g']['prior_channels'] = 18
    with pytest.raises(GsrError, match='prior has 21 values .*noise1_sigma, noise1_poisson_scale, jpeg1_quality'):
        build_model(opt)
