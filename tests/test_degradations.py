"""The paired second-order degradation on real photographs: distributions, labels, pairing, USM equivalence."""
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from basicsr.utils import USMSharp

from gsr.data.kernels import KERNEL_KINDS, BlurKernelOptions, sample_blur_kernel, sample_final_sinc
from gsr.data.paired_degradation_dataset import PairedDegradationDataset
from gsr.data.second_order_degrader import DegradationOptions, SecondOrderDegrader, SeparableUSMSharp

DRAWS = 4000


def seed_all(seed: int = 0):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_blur_kernel_parameters_follow_the_real_esrgan_distribution():
    seed_all()
    infos = np.stack([sample_blur_kernel(BlurKernelOptions())[1] for _ in range(DRAWS)])
    kinds = Counter(KERNEL_KINDS[int(k)] for k in infos[:, 0])
    expected = dict(zip(KERNEL_KINDS[:6], np.array(BlurKernelOptions().kernel_prob) * 0.9), sinc=0.1)
    for kind, p in expected.items():
        assert abs(kinds[kind] / DRAWS - p) < 4 * math.sqrt(p * (1 - p) / DRAWS) + 1e-3, kind
    gauss = infos[infos[:, 0] != KERNEL_KINDS.index('sinc')]
    assert gauss[:, 2].min() >= 0.2 and gauss[:, 2].max() <= 3.0
    assert abs(gauss[:, 2].mean() - 1.6) < 0.05  # U[0.2, 3] has mean 1.6
    assert set(infos[:, 1].astype(int)) == set(range(7, 22, 2))
    iso = infos[infos[:, 0] == 0]
    assert np.all(iso[:, 2] == iso[:, 3]) and np.all(iso[:, 4] == 0)


def test_kernels_are_normalised_and_final_sinc_probability():
    seed_all(1)
    for _ in range(50):
        kernel, _ = sample_blur_kernel(BlurKernelOptions())
        assert kernel.shape == (21, 21) and abs(kernel.sum() - 1) < 1e-4
    applied = np.mean([sample_final_sinc(0.8)[1][0] for _ in range(DRAWS)])
    assert abs(applied - 0.8) < 0.03


@pytest.fixture()
def batch(photo_folder):
    seed_all(2)
    ds = PairedDegradationDataset({'name': 't', 'dataroot_gt': photo_folder, 'crop_pad_size': 96, 'kernel_sets': 2})
    items = [ds[i % len(ds)] for i in range(4)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0] if k != 'gt_path'}


def _kernels(batch, k=0):
    return [batch[n][:, k] for n in ('kernel1', 'kernel2', 'sinc_kernel', 'kernel1_info', 'kernel2_info', 'sinc_info')]


def test_labels_are_within_the_configured_ranges(batch):
    degrader = SecondOrderDegrader(DegradationOptions())
    for _ in range(20):
        p = degrader.sample(batch['gt'], *_kernels(batch))
        labels = degrader.labels(p)
        q = labels['jpeg1_quality']
        assert ((q >= 30) & (q <= 95)).all()
        assert 0.15 <= labels['resize1_scale'][0] <= 1.5
        sigma = labels['noise1_sigma']
        assert ((sigma == 0) | ((sigma >= 1) & (sigma <= 30))).all()
        assert torch.equal(labels['blur1_kind'], batch['kernel1_info'][:, 0, 0])
        gaussian = labels['noise1_kind'] == 1
        assert torch.equal(gaussian, sigma > 0)


def test_noise_probability_zero_skips_noise_and_labels_say_so(batch):
    degrader = SecondOrderDegrader(DegradationOptions(noise_prob=0.0))
    p = degrader.sample(batch['gt'], *_kernels(batch))
    labels = degrader.labels(p)
    for key in ('noise1_kind', 'noise1_sigma', 'noise1_poisson_scale', 'noise2_kind', 'noise2_sigma'):
        assert labels[key].abs().sum() == 0, key
    assert torch.equal(degrader.apply(batch['gt'], p), degrader.apply(batch['gt'], p, add_noise=False))


def test_noise_free_twin_differs_only_by_the_noise(batch):
    opts = DegradationOptions(gaussian_noise_prob=1.0, gaussian_noise_prob2=1.0, noise_range=(20., 30.))
    degrader = SecondOrderDegrader(opts)
    p = degrader.sample(batch['gt'], *_kernels(batch))
    noisy, clean = degrader.apply(batch['gt'], p), degrader.apply(batch['gt'], p, add_noise=False)
    assert noisy.shape == clean.shape == (4, 3, 24, 24)
    residual = (noisy - clean).std().item()
    assert residual > 5 / 255  # sigma >= 20 in stage 1 leaves visible noise
    assert torch.corrcoef(torch.stack([noisy.flatten(), clean.flatten()]))[0, 1] > 0.6


def test_jpeg_label_is_not_overwritten_by_diffjpeg(batch):
    degrader = SecondOrderDegrader(DegradationOptions())
    p = degrader.sample(batch['gt'], *_kernels(batch))
    before = p['jpeg1_quality'].clone()
    degrader.apply(batch['gt'], p)
    assert torch.equal(before, p['jpeg1_quality'])


def test_separable_usm_equals_basicsr_usm(batch):
    gt = batch['gt']
    assert torch.allclose(SeparableUSMSharp()(gt), USMSharp()(gt), atol=2e-5)


def test_degrader_accepts_non_contiguous_input(batch):
    gt = batch['gt'].transpose(2, 3)
    assert not gt.is_contiguous()
    degrader = SecondOrderDegrader(DegradationOptions())
    out = degrader.apply(degrader.sharpen(gt), degrader.sample(gt, *_kernels(batch)))
    assert torch.isfinite(out).all()


def test_model_pairs_share_content_and_differ_in_degradation(batch):
    from basicsr.models import build_model

    from tests.conftest import tiny_options
    opt = tiny_options('unused', 'unused')
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['datasets']['train']['gt_size'] = 64
    seed_all(3)
    model = build_model(opt)
    model.feed_data(batch)
    b = batch['gt'].shape[0]
    assert model.lq.shape == (2 * b, 3, 16, 16) and model.gt.shape == (2 * b, 3, 64, 64)
    assert torch.equal(model.gt[:b], model.gt[b:])  # one crop location for both copies
    assert not torch.equal(model.lq[:b], model.lq[b:])  # independent degradations
    up = torch.nn.functional.interpolate(model.lq, scale_factor=4, mode='bicubic').flatten(1)
    corr = torch.corrcoef(torch.cat([up, model.gt.flatten(1)]))[:2 * b, 2 * b:]  # LQ copy x GT crop
    own = corr.diagonal()
    others = corr[~torch.eye(2 * b, dtype=torch.bool)]
    assert own.mean() > others.mean() + 0.3  # each copy shows its own crop's content
    assert (own > 0.2).all()
    assert model.batch.labels['jpeg1_quality'].shape == (2 * b, )
    assert not torch.equal(model.batch.labels['blur1_sigma_x'][:b], model.batch.labels['blur1_sigma_x'][b:])


def test_batch_level_draws_follow_their_probabilities(batch):
    """Over many draws: resize up/down/keep, Gaussian vs Poisson, gray noise, second blur, final order, JPEG."""
    seed_all(4)
    degrader = SecondOrderDegrader(DegradationOptions())
    draws = [degrader.labels(degrader.sample(batch['gt'], *_kernels(batch))) for _ in range(1500)]
    scale = np.array([d['resize1_scale'][0].item() for d in draws])
    for observed, expected in (((scale > 1).mean(), 0.2), ((scale < 1).mean(), 0.7), ((scale == 1).mean(), 0.1)):
        assert abs(observed - expected) < 0.04
    assert abs(np.mean([d['noise1_kind'][0].item() == 1 for d in draws]) - 0.5) < 0.05
    gray = np.concatenate([d['noise2_gray'].numpy() for d in draws])
    assert abs(gray.mean() - 0.4) < 0.03
    assert abs(np.mean([d['blur2_applied'][0].item() for d in draws]) - 0.8) < 0.04
    assert abs(np.mean([d['final_order'][0].item() for d in draws]) - 0.5) < 0.05
    quality = np.concatenate([d['jpeg2_quality'].numpy() for d in draws])
    assert quality.min() >= 30 and quality.max() <= 95 and abs(quality.mean() - 62.5) < 1.0
    sigma2 = np.concatenate([d['noise2_sigma'].numpy() for d in draws])
    assert sigma2[sigma2 > 0].min() >= 1 and sigma2.max() <= 25


def _model(**top):
    from basicsr.models import build_model

    from tests.conftest import tiny_options
    opt = tiny_options('unused', 'unused')
    opt.update(is_train=True, dist=False, rank=0, world_size=1, **top)
    opt['datasets']['train']['gt_size'] = 64
    return build_model(opt)


def test_noise_free_twin_is_cropped_with_the_pair(batch):
    seed_all(5)
    model = _model(noise_free_twin=True, degradation={'noise_prob': 0.0})
    model.feed_data(batch)
    assert torch.equal(model.lq, model.batch.lq_noise_free)  # no noise drawn: the twin is the LQ itself
    model = _model(noise_free_twin=True)
    model.feed_data(batch)
    assert model.batch.lq_noise_free.shape == model.lq.shape and not torch.equal(model.lq, model.batch.lq_noise_free)


def test_one_kernel_set_is_shared_by_both_copies(batch):
    model = _model()
    shared = dict(
        batch, **{
            k: batch[k][:, :1]
            for k in ('kernel1', 'kernel2', 'sinc_kernel', 'kernel1_info', 'kernel2_info', 'sinc_info')
        })
    model.feed_data(shared)
    labels, b = model.batch.labels, batch['gt'].shape[0]
    for key in ('blur1_sigma_x', 'blur2_kind', 'sinc_omega_c'):
        assert torch.equal(labels[key][:b], labels[key][b:]), key
    assert not torch.equal(labels['jpeg1_quality'][:b], labels['jpeg1_quality'][b:])  # other draws stay independent


def test_jpeg_probability_compresses_exactly_the_rows_its_labels_name(batch):
    seed_all(3)
    degrader = SecondOrderDegrader(DegradationOptions(jpeg_prob=0.5, noise_prob=0.0))
    p = degrader.sample(batch['gt'], *_kernels(batch))
    both = (p['jpeg1_applied'] * p['jpeg2_applied']).bool()
    assert 0 < int(both.sum()) < len(both), 'seed 3 should draw compressed and uncompressed rows'
    always = dict(p, jpeg1_applied=torch.ones_like(both).float(), jpeg2_applied=torch.ones_like(both).float())
    lq, lq_always = degrader.apply(batch['gt'], p), degrader.apply(batch['gt'], always)
    assert torch.equal(lq[both], lq_always[both])
    assert all(not torch.equal(a, b) for a, b in zip(lq[~both], lq_always[~both]))
    labels = degrader.labels(p)
    assert torch.equal(labels['jpeg1_applied'], p['jpeg1_applied'])


def test_jpeg_probability_one_compresses_every_row_as_real_esrgan(batch):
    p = SecondOrderDegrader(DegradationOptions()).sample(batch['gt'], *_kernels(batch))
    assert torch.equal(p['jpeg1_applied'], torch.ones(len(batch['gt'])))
    assert torch.equal(p['jpeg2_applied'], torch.ones(len(batch['gt'])))


def test_first_order_draws_make_the_one_stage_image_and_say_so(batch):
    """second_order_prob 0: blur, resize and noise once, then the final resize + sinc + JPEG (RDSR's onedegra)."""
    from basicsr.utils.img_process_util import filter2D
    from torch.nn import functional as F
    seed_all(4)
    degrader = SecondOrderDegrader(DegradationOptions(second_order_prob=0.0, noise_prob=0.0))
    gt = batch['gt']
    p = degrader.sample(gt, *_kernels(batch))
    assert torch.equal(p['second_order'], torch.zeros(len(gt)))
    for key in ('jpeg1_applied', 'blur2_applied', 'noise2_sigma', 'noise2_poisson_scale'):
        assert not bool(p[key].any()), key
    out = F.interpolate(filter2D(gt, p['kernel1']), scale_factor=float(p['resize1_scale'][0]),
                        mode=degrader._mode(p, 'resize1_mode')).clamp(0, 1)
    lq_size, mode = (gt.shape[-2] // 4, gt.shape[-1] // 4), degrader._mode(p, 'final_resize_mode')

    def resize_and_sinc(img):
        return filter2D(F.interpolate(img, size=lq_size, mode=mode).contiguous(), p['sinc_kernel'])

    if int(p['final_order'][0]) == 0:
        out = degrader._jpeg(resize_and_sinc(out), p, '2')
    else:
        out = resize_and_sinc(degrader._jpeg(out, p, '2'))
    expected = torch.clamp((out * 255.).round(), 0, 255) / 255.
    assert torch.equal(degrader.apply(gt, p), expected)


def test_first_order_noise_at_lr_is_added_after_the_final_resize_and_sinc(batch):
    """first_order_noise 'lr': the first-order batch's noise draws are added at the LR resolution, after the final
    resize and sinc (white there, as the protocol's noise), before a resize-sinc-JPEG order's JPEG."""
    from basicsr.utils.img_process_util import filter2D
    from torch.nn import functional as F
    gt, orders = batch['gt'], set()
    for seed in (4, 8):
        seed_all(seed)
        degrader = SecondOrderDegrader(DegradationOptions(second_order_prob=0.0, first_order_noise='lr'))
        p = degrader.sample(gt, *_kernels(batch))
        orders.add(int(p['final_order'][0]))
        out = F.interpolate(filter2D(gt, p['kernel1']), scale_factor=float(p['resize1_scale'][0]),
                            mode=degrader._mode(p, 'resize1_mode')).clamp(0, 1)
        lq_size, mode = (gt.shape[-2] // 4, gt.shape[-1] // 4), degrader._mode(p, 'final_resize_mode')
        torch.manual_seed(seed)

        def resize_sinc_noise(img):
            img = filter2D(F.interpolate(img, size=lq_size, mode=mode).contiguous(), p['sinc_kernel'])
            return degrader._noise(img, p, '1')

        if int(p['final_order'][0]) == 0:
            out = degrader._jpeg(resize_sinc_noise(out), p, '2')
        else:
            out = resize_sinc_noise(degrader._jpeg(out, p, '2'))
        expected = torch.clamp((out * 255.).round(), 0, 255) / 255.
        torch.manual_seed(seed)
        assert torch.equal(degrader.apply(gt, p), expected), seed
        # the noise-free twin of the same draws has none of it
        assert not torch.equal(degrader.apply(gt, p, add_noise=False), expected)
    assert orders == {0, 1}  # both final orders were composed


def test_second_order_probability_one_draws_nothing_and_runs_both_stages(batch):
    seed_all(5)
    p = SecondOrderDegrader(DegradationOptions()).sample(batch['gt'], *_kernels(batch))
    state = np.random.get_state()[1].copy()
    seed_all(5)
    q = SecondOrderDegrader(DegradationOptions(second_order_prob=1.0)).sample(batch['gt'], *_kernels(batch))
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(q['second_order'], torch.ones(len(batch['gt'])))
    assert all(torch.equal(p[k], q[k]) for k in p)
