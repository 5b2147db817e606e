"""Targeted feature denoising: identity at the start, where gradients go, a detector that learns, the twin target,
bf16 FFTs, the training stability of both modes, and its bad inputs (both modes end to end: test_lifecycle.py)."""
import copy
import os
import random

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model

from gsr.data.paired_degradation_dataset import PairedDegradationDataset
from gsr.data.second_order_degrader import effective_noise_std
from gsr.losses.tfd_loss import NoiseDetectionLoss, TwinFeatureLoss
from tests.conftest import REPO, attached_and_bare, tiny_options, write_yaml

BACKBONE = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}
TFD = {'type': 'TargetedFeatureDenoising', 'num_feat': 8}
REGULARIZERS = {'l_det': {'type': 'NoiseDetectionLoss'}, 'l_feat': {'type': 'TwinFeatureLoss'}}


def tfd_options(root, mode='inline', **extra):
    top = dict({'noise_free_twin': True, 'paired': False, 'degradation': {'noise_prob': 0.5},
                'attach': {'tfd': dict(TFD, mode=mode)}}, **extra)
    opt = tiny_options(root, root, **top)
    opt['datasets']['train']['kernel_sets'] = 1
    opt['train']['regularizers'] = copy.deepcopy(REGULARIZERS)
    return opt


def hr_batches(folder, count, size=4, seed=0):
    random.seed(seed)
    np.random.seed(seed)
    ds = PairedDegradationDataset({'name': 'train', 'dataroot_gt': folder, 'crop_pad_size': 96, 'kernel_sets': 1,
                                   'cache_images': True})
    for _ in range(count):
        items = [ds[random.randrange(len(ds))] for _ in range(size)]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0] if k != 'gt_path'}


def model_for(opt, gt_size=64):
    opt = dict(opt, is_train=True, dist=False, rank=0, world_size=1)
    opt['datasets']['train']['gt_size'] = gt_size
    torch.manual_seed(0)
    return build_model(opt)


def test_zero_initialised_denoiser_leaves_the_network_unchanged():
    net, bare = attached_and_bare(BACKBONE, {'tfd': TFD})
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(net(x), bare(x)) and torch.equal(net.eval()(x), bare.eval()(x))


@pytest.mark.parametrize('detach', [True, False])
def test_detector_gradient_reaches_the_module_and_the_backbone_only_when_asked(photo_folder, detach):
    opt = tfd_options(photo_folder)
    opt['attach']['tfd']['detach_detector'] = detach
    model = model_for(opt)
    model.feed_data(next(hr_batches(photo_folder, 1)))
    loss = NoiseDetectionLoss(loss_weight=1.0)(model.forward_train())
    loss.backward()
    tfd, backbone = model.net_g.attached['tfd'], model.net_g.backbone
    assert tfd.detector.image_head.weight.grad.abs().sum() > 0
    reached = backbone.conv_first.weight.grad is not None and backbone.conv_first.weight.grad.abs().sum() > 0
    assert reached != detach


def toy_rows(photos, generator, n=8, size=64):
    """Crops of real photographs; every second one with Gaussian noise of sigma 10-30 (0-255 units)."""
    crops = []
    for _ in range(n):
        img = photos[int(torch.randint(len(photos), (1, ), generator=generator))]
        top, left = (int(torch.randint(s - size, (1, ), generator=generator)) for s in img.shape[1:])
        crops.append(img[:, top:top + size, left:left + size])
    clean = torch.stack(crops)
    sigma = (torch.rand(n, generator=generator) * 20 + 10) * (torch.arange(n) % 2)
    noisy = (clean + torch.randn(clean.shape, generator=generator) * sigma[:, None, None, None] / 255).clamp(0, 1)
    zeros = torch.zeros(n)
    labels = {'noise1_sigma': sigma, 'noise2_sigma': zeros, 'noise1_poisson_scale': zeros,
              'noise2_poisson_scale': zeros}
    return noisy, clean, labels


def test_detector_learns_to_tell_noisy_from_clean_rows(photo_folder):
    """On toy rows (photo crops with or without noise, and their clean twins), 80 steps of NoiseDetectionLoss take
    the detector from chance to well above it on new rows (balanced accuracy: mean of the hit rates on noisy and on
    clean rows, 0.5 for any constant answer)."""
    from gsr.data.degraded_batch import DegradedBatch
    from gsr.losses.loss_context import LossContext
    from gsr.utils.image_io import list_images, read_image_uint8_rgb
    photos = [torch.from_numpy(read_image_uint8_rgb(p)).permute(2, 0, 1).float() / 255
              for p in list_images(photo_folder)]
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    module = build_network({'type': 'TargetedFeatureDenoising', 'num_feat': 3})
    optimizer = torch.optim.Adam(module.detector.parameters(), 3e-3)
    loss_fn = NoiseDetectionLoss(loss_weight=1.0)

    def accuracy() -> float:
        module.eval()
        hits = []
        with torch.no_grad():
            for _ in range(10):
                noisy, clean, labels = toy_rows(photos, generator)
                truth = torch.cat([effective_noise_std(labels) > 2, torch.zeros(len(clean), dtype=torch.bool)])
                said = module.detector(torch.cat([noisy, clean]))[0] > 0
                hits.append((said[truth].float().mean() + (~said[~truth]).float().mean()) / 2)  # balanced
        module.train()
        return float(torch.stack(hits).mean())

    before = accuracy()
    for _ in range(80):
        noisy, clean, labels = toy_rows(photos, generator)
        module(torch.cat([noisy, clean]))
        n = len(noisy)
        halves = [{k: v[:n] for k, v in module.record.items()}, {k: v[n:] for k, v in module.record.items()}]
        batch = DegradedBatch(gt=clean, lq=noisy, content=torch.arange(n), degradation=torch.arange(n), labels=labels)
        context = LossContext(batch, noisy, records={'tfd': halves[0]}, twin_records={'tfd': halves[1]})
        optimizer.zero_grad()
        loss_fn(context).backward()
        optimizer.step()
    after = accuracy()
    assert after > 0.75 and after > before + 0.2, (before, after)


def test_feature_loss_targets_the_twin_and_not_the_noisy_copy(photo_folder):
    model = model_for(tfd_options(photo_folder))
    model.feed_data(next(hr_batches(photo_folder, 1)))
    with torch.no_grad():
        context = model.forward_train()
        loss = TwinFeatureLoss(twin_loss='feature', twin_target='self')(context)
        target = context.record('tfd', 'input', twin=True).clone()
        model.batch.lq = (model.batch.lq + 0.2 * torch.randn_like(model.batch.lq)).clamp(0, 1)  # more noise
        noisier = model.forward_train()
        assert torch.equal(noisier.record('tfd', 'input', twin=True), target)  # the target ignores the noisy copy
        model.batch.lq_noise_free = model.batch.lq_noise_free.flip(-1)  # another twin
        self_target = TwinFeatureLoss(twin_loss='feature', twin_target='self')
        assert self_target(model.forward_train()) != self_target(noisier)
    assert loss > 0


def test_residual_loss_regresses_the_removed_component_on_the_feature_noise(photo_folder):
    """Inline, twin_loss residual: mean over LQ rows of |g·n̂ − sg(f(x) − f(x_twin))|, zero when the module removes
    exactly the feature noise; the twin and the noisy feature enter only as a detached target."""
    model = model_for(tfd_options(photo_folder))
    model.feed_data(next(hr_batches(photo_folder, 1)))
    context = model.forward_train()
    records, twin = context.records['tfd'], context.twin_records['tfd']
    noise = records['input'] - twin['input']
    expected = 0.5 * (records['removed'] - noise).abs().flatten(1).mean(1).mean()
    loss = TwinFeatureLoss(loss_weight=0.5)(context)
    assert torch.allclose(loss, expected)
    records['removed'] = noise.detach().clone().requires_grad_()
    assert TwinFeatureLoss()(context) == 0
    records['removed'] = torch.zeros_like(noise, requires_grad=True)
    records['input'], twin['input'] = (t.detach().requires_grad_() for t in (records['input'], twin['input']))
    TwinFeatureLoss()(context).backward()
    assert records['removed'].grad.abs().sum() > 0 and records['input'].grad is None and twin['input'].grad is None


def ema_model(photo_folder, target='ema', decay=0.999):
    opt = tfd_options(photo_folder, mode='training_only')
    opt['attach']['tfd']['inference'] = False
    opt['train']['ema_decay'] = decay
    opt['train']['regularizers']['l_feat'] = {'type': 'TwinFeatureLoss', 'twin_target': target}
    return model_for(opt)


def test_ema_target_is_the_ema_network_on_the_twin_and_a_student_step_cannot_move_it(photo_folder):
    """training_only, twin_target ema: the target is net_g_ema's feature at the module on the twin rows. Changing
    the student's weights (what one step does) leaves it as it was; with twin_target self it moves with them."""
    model = ema_model(photo_folder)
    model.feed_data(next(hr_batches(photo_folder, 1)))
    torch.nn.init.normal_(model.net_g_ema.backbone.conv_first.weight, std=0.5)  # teacher != student
    with torch.no_grad():
        context = model.forward_train()
        target = context.teacher_twin['tfd']
        reference = model.net_g_ema.backbone.conv_last  # the tensor entering it, computed independently
        seen = []
        handle = reference.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
        model.net_g_ema(model.batch.lq_noise_free)
        handle.remove()
        assert torch.allclose(target, seen[0]) and not torch.allclose(target, context.record('tfd', 'input', True))
        model.net_g.backbone.conv_first.weight.mul_(1.5)  # a student step
        moved = model.forward_train()
    assert torch.equal(moved.teacher_twin['tfd'], target)
    assert not torch.equal(moved.record('tfd', 'input', twin=True), context.record('tfd', 'input', twin=True))
    loss = TwinFeatureLoss(loss_weight=0.5)(context)
    gate = torch.sigmoid(context.record('tfd', 'logit'))
    noisy = (effective_noise_std(context.labels) > 0).float()
    per_row = (context.record('tfd', 'input') - target).abs().flatten(1).mean(1) * gate
    assert torch.allclose(loss, 0.5 * (per_row * noisy).sum() / noisy.sum().clamp(min=1))


def test_the_teacher_runs_only_when_a_loss_reads_it(photo_folder):
    assert set(ema_model(photo_folder).teacher_taps) == {'tfd'}
    assert not ema_model(photo_folder, target='self').teacher_taps
    assert not model_for(tfd_options(photo_folder)).teacher_taps  # inline, residual: no teacher


def test_balanced_accuracy_is_half_for_any_constant_answer():
    from gsr.losses.tfd_loss import balanced_accuracy
    truth = torch.tensor([True, True, True, False])
    assert balanced_accuracy(torch.ones(4, dtype=torch.bool), truth) == 0.5
    assert balanced_accuracy(torch.zeros(4, dtype=torch.bool), truth) == 0.5
    assert balanced_accuracy(truth.clone(), truth) == 1
    assert balanced_accuracy(torch.tensor([True, False, False, False]), truth) == (1 / 3 + 1) / 2


def test_detector_accuracy_is_logged_and_the_detector_can_read_an_earlier_layer(photo_folder):
    opt = tfd_options(photo_folder)
    opt['attach']['tfd']['detector_layer'] = 'conv_first'
    model = model_for(opt)
    seen = []
    model.net_g.attached['tfd'].detector.body.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    model.feed_data(next(hr_batches(photo_folder, 1)))
    model.optimize_parameters(1)
    assert 0 <= float(model.log_dict['bacc_det']) <= 1
    lr_size = model.batch.lq.shape[-1]
    assert seen[0].shape[-1] != lr_size * 4  # not the HR-resolution feature at conv_last
    with torch.no_grad():  # the detector's input is conv_first's output minus its own mean₃ₓ₃ (the high-pass)
        x = torch.cat([model.batch.lq, model.batch.lq_noise_free])
        first = model.net_g.backbone.conv_first(x)
        model.net_g(x)
    assert torch.allclose(seen[-1], first - torch.nn.functional.avg_pool2d(first, 3, 1, 1, count_include_pad=False),
                          atol=1e-6)


def test_tfd_composes_with_dropout_and_alignment(photo_folder):
    """One option file with Dropout, TFD and the alignment regularizers: every term is logged and finite."""
    opt = tfd_options(photo_folder, paired=True, dropout={'p': 0.5})
    opt['datasets']['train']['kernel_sets'] = 2
    opt['train']['regularizers'].update(l_align={'type': 'FeatureAlignmentLoss'}, l_rff={'type': 'RFFAlignmentLoss'})
    model = model_for(opt)
    assert list(model.net_g.attached) == ['tfd', 'dropout']
    model.feed_data(next(hr_batches(photo_folder, 1)))
    model.optimize_parameters(1)
    assert {'l_pix', 'l_det', 'l_feat', 'l_align', 'l_rff'} <= set(model.log_dict)
    assert all(np.isfinite(float(v)) for v in model.log_dict.values())


def test_frequency_path_runs_under_bf16_autocast():
    torch.manual_seed(0)
    module = build_network(dict(TFD))
    torch.nn.init.normal_(module.denoiser.fuse.weight, std=0.1)
    f = torch.randn(2, 8, 16, 16, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = module(f)
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all() and f.grad is not None and torch.isfinite(f.grad).all()


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('gsr: error: '), err
    return err[0]


def test_tfd_bad_inputs_are_one_line(tmp_path, photo_folder, monkeypatch, capsys):
    from gsr.cli import main
    monkeypatch.chdir(tmp_path)
    cases = []
    opt = tfd_options(photo_folder)
    opt['degradation']['noise_prob'] = 0.0
    cases.append((opt, 'no row is noisy, so the detector has no positives'))
    opt = tfd_options(photo_folder)
    opt['attach']['tfd']['layer'] = 'conv_lastt'
    cases.append((opt, "attach.tfd.layer 'conv_lastt' is not a layer of MSRResNet"))
    opt = tfd_options(photo_folder)
    opt['attach']['tfd']['num_feat'] = 16
    cases.append((opt, 'attach.tfd: the module has num_feat 16 but the input of its layer has 8 channels'))
    opt = tfd_options(photo_folder, noise_free_twin=False)
    cases.append((opt, 'compares rows with their noise-free twins: set noise_free_twin: true'))
    opt = tfd_options(photo_folder)
    opt['attach'] = {}
    cases.append((opt, 'reads the module attach.tfd, which is not attached'))
    opt = tfd_options(photo_folder, mode='training_only')
    opt['train']['ema_decay'] = 0
    cases.append((opt, 'takes its target from the EMA network (a mean teacher): set train.ema_decay > 0'))
    opt = tfd_options(photo_folder)
    opt['attach']['tfd'].update(detector_layer='conv_first', detector_channels=4)
    cases.append((opt, "attach.tfd: its detector reads 8 channels at 'conv_first' but has detector_channels 4"))
    opt = tfd_options(photo_folder)
    opt['train']['regularizers']['l_feat']['twin_loss'] = 'residul'
    cases.append((opt, "train.regularizers.l_feat.twin_loss must be one of residual, feature, got 'residul'"))
    for opt, message in cases:
        assert main(["train", "-opt", write_yaml(tmp_path / "o.yml", opt)]) == 2
        assert "experiments" not in os.listdir(tmp_path), message  # before any folder
        assert message in _one_line(capsys)
    # a checkpoint without the TFD modules given to the inline network
    torch.save({'params': build_network(dict(BACKBONE)).state_dict()}, tmp_path / 'bare.pth')
    photos = write_yaml(tmp_path / 'o.yml', tfd_options(photo_folder))
    assert main(['infer', '-opt', photos, '--checkpoint', str(tmp_path / 'bare.pth'), '--input', photo_folder,
                 '--output', str(tmp_path / 'sr')]) == 2
    assert 'no weights for the attached module(s) tfd' in _one_line(capsys)
    assert sorted(os.listdir(tmp_path)) == ['bare.pth', 'o.yml']


STABILITY_ITERATIONS = 1500
PAPER_SCALE_WEIGHT = 1.0  # TwinFeatureLoss.loss_weight of options/train_*_tfd.yml (asserted below)


def total_loss_growth(folder, layer, mode, iterations=STABILITY_ITERATIONS, pool=150, **twin):
    """Train a tiny TFD network in process on ``pool`` degraded batches, cycled (the degradation would cost twice
    the training at this size); returns every step's logged terms and the study's growth ratio of the total loss
    (median over the last quarter / median over the first half, ``gsr.repro.runner.growth``)."""
    from gsr.repro.runner import growth
    opt = tfd_options(folder, mode=mode)
    opt['attach']['tfd'].update(layer=layer, inference=mode == 'inline', lr=5e-4)
    opt['train'].update(ema_decay=0.999, optim_g={'type': 'Adam', 'lr': 5e-4, 'betas': [0.9, 0.99]})
    opt['train']['regularizers']['l_feat'] = dict(type='TwinFeatureLoss', loss_weight=PAPER_SCALE_WEIGHT, **twin)
    opt['datasets']['train'].update(crop_pad_size=80, cache_images=True)
    model = model_for(opt, gt_size=32)
    batches = []
    for batch in hr_batches(folder, pool):
        model.feed_data(batch)
        batches.append(model.batch)
    logged = []
    for it in range(1, iterations + 1):
        model.batch = batches[it % pool]
        model.optimize_parameters(it)
        logged.append({k: float(v) for k, v in model.log_dict.items()})
    return logged, growth([(i, row['l_total']) for i, row in enumerate(logged, 1)])


@pytest.mark.slow
@pytest.mark.parametrize('layer', ['conv_last', 'upconv1'])  # HR input of the last conv; the trunk's LR output
@pytest.mark.parametrize('mode', ['inline', 'training_only'])
def test_both_modes_train_stably_at_the_paper_scale_weight(photo_folder, layer, mode):
    """1,500 iterations of a tiny TFD network at the weight the paper-scale files use: every logged value finite
    and the total loss not rising (growth <= 1.5; the study flags 2). The twin loss before the fix (same-pass
    target, twin_target: self, twin_loss: feature) fails this at the trunk in training-only mode (growth 6.5)."""
    logged, grew = total_loss_growth(photo_folder, layer, mode)
    assert all(np.isfinite(v) for row in logged for v in row.values())
    assert grew <= 1.5, grew


def test_the_paper_scale_files_use_the_weight_the_stability_test_checks():
    from gsr.models.option_check import load_option_file
    files = [f for f in os.listdir(os.path.join(REPO, 'options')) if f.startswith('train_') and 'tfd' in f]
    assert files
    for name in files:
        twin = load_option_file(os.path.join(REPO, 'options', name))['train']['regularizers']['l_feat']
        assert twin['loss_weight'] == PAPER_SCALE_WEIGHT, name


def test_the_real_world_test_file_scores_paired_folders(tmp_path, small_photo_folder):
    """options/test_srresnet_tfd_real.yml (RealSR / DRealSR pairs) with a tiny network and the first set pointed at
    HR / LR folders with the same file names, through BasicSR's validation step."""
    import cv2
    from basicsr.data import build_dataloader, build_dataset

    from gsr.models.option_check import load_option_file
    from gsr.utils.image_io import list_images, read_image_uint8_rgb, write_image
    opt = load_option_file(os.path.join(REPO, 'options', 'test_srresnet_tfd_real.yml'))
    assert [d['type'] for d in opt['datasets'].values()] == ['PairedImageDataset'] * 3
    for sub in ('HR', 'LR'):
        os.makedirs(tmp_path / sub)
    for path in list_images(small_photo_folder):
        hr = read_image_uint8_rgb(path)
        hr = hr[:hr.shape[0] // 4 * 4, :hr.shape[1] // 4 * 4]
        write_image(str(tmp_path / 'HR' / os.path.basename(path)), hr)
        lr = cv2.resize(hr, (hr.shape[1] // 4, hr.shape[0] // 4), interpolation=cv2.INTER_AREA)
        write_image(str(tmp_path / 'LR' / os.path.basename(path)), lr)
    opt['network_g'].update(num_feat=8, num_block=1)
    opt['attach']['tfd']['num_feat'] = 8
    opt['val']['metrics'].pop('lpips')  # its backbone weights cannot be downloaded here
    opt.update(is_train=False, dist=False, rank=0, world_size=1, num_gpu=0)
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'visualization': str(tmp_path / 'vis')}
    model = build_model(opt)
    ds_opt = dict(opt['datasets']['test_1'], phase='test', scale=4, dataroot_gt=str(tmp_path / 'HR'),
                  dataroot_lq=str(tmp_path / 'LR'))
    loader = build_dataloader(build_dataset(ds_opt), ds_opt, num_gpu=0, dist=False)
    model.validation(loader, current_iter=0, tb_logger=None, save_img=False)
    assert 10 < model.metric_results['psnr'] < 50 and 0 < model.metric_results['ssim'] <= 1
