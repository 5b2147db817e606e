"""The degraded batch: groupings, labels cropped with the images, the twin, and what the regularizers are handed."""
import random

import numpy as np
import pytest
import torch

from gsr.data.batch_builder import DegradedBatchBuilder, batch_options
from gsr.data.degraded_batch import DegradedBatch
from gsr.data.paired_degradation_dataset import PairedDegradationDataset
from gsr.data.second_order_degrader import DegradationOptions
from gsr.utils.errors import GsrError


@pytest.fixture(scope='module')
def hr_batch(photo_folder):
    random.seed(0)
    np.random.seed(0)
    ds = PairedDegradationDataset({'name': 'train', 'dataroot_gt': photo_folder, 'crop_pad_size': 96})
    items = [ds[i % len(ds)] for i in range(3)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0] if k != 'gt_path'}


def build(hr_batch, grouping='copies', twin=False, noise_prob=1.0, seed=0):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    options = batch_options(2, twin, DegradationOptions(noise_prob=noise_prob), {'gt_size': 64}, grouping)
    return DegradedBatchBuilder(options, 4)(hr_batch)


def test_copies_share_content_row_wise_and_differ_in_degradation(hr_batch):
    batch = build(hr_batch)
    b = hr_batch['gt'].shape[0]
    assert batch.lq.shape == (2 * b, 3, 16, 16) and batch.copies() == 2
    assert torch.equal(batch.content, torch.arange(b).repeat(2))
    assert len(set(batch.degradation.tolist())) == 2 * b
    assert torch.equal(batch.gt[:b], batch.gt[b:])
    assert not torch.equal(batch.labels['jpeg1_quality'][:b], batch.labels['jpeg1_quality'][b:])


def test_shared_degradation_groups_crops_of_one_degraded_image(hr_batch):
    batch = build(hr_batch, 'shared_degradation')
    b = hr_batch['gt'].shape[0]
    assert batch.lq.shape == (2 * b, 3, 16, 16) and batch.copies() == 1
    assert torch.equal(batch.degradation, torch.arange(b).repeat(2))
    assert len(set(batch.content.tolist())) == 2 * b
    for key in ('jpeg1_quality', 'blur1_sigma_x', 'noise2_sigma'):
        assert torch.equal(batch.labels[key][:b], batch.labels[key][b:]), key
    assert not torch.equal(batch.gt[:b], batch.gt[b:])  # two places of each image


@pytest.mark.parametrize('grouping', ['copies', 'shared_degradation'])
def test_per_pixel_noise_map_is_cropped_with_the_images(hr_batch, grouping):
    batch = build(hr_batch, grouping, twin=True)
    noise_map = batch.labels['noise_map']
    assert [k for k, t in batch.labels.items() if t.dim() == 4] == ['noise_map']
    assert noise_map.shape == (batch.lq.shape[0], 1, 16, 16)
    assert torch.allclose(noise_map, (batch.lq - batch.lq_noise_free).abs().mean(1, keepdim=True))
    assert noise_map.mean() > 1 / 255  # noise drawn for every sample survived the pipeline
    clean = build(hr_batch, grouping, twin=True, noise_prob=0.0)
    assert torch.equal(clean.lq, clean.lq_noise_free) and clean.labels['noise_map'].abs().max() == 0


def test_batch_checks_its_shapes():
    lq, gt = torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 32, 32)
    rows = torch.arange(4)
    with pytest.raises(GsrError, match="label 'map' has shape"):
        DegradedBatch(gt, lq, rows, rows, labels={'map': torch.zeros(4, 1, 7, 8)})
    with pytest.raises(GsrError, match='content has 3 rows'):
        DegradedBatch(gt, lq, rows[:3], rows)
    assert DegradedBatch.of_pairs(lq, gt).copies() == 1


def test_kernel_sets_beyond_the_copies_is_an_error():
    with pytest.raises(GsrError, match='kernel_sets is 2 but the model degrades each crop 1 time'):
        batch_options(1, False, DegradationOptions(), {'kernel_sets': 2})
    assert batch_options(2, False, DegradationOptions(), {'kernel_sets': 1}).copies == 2  # shared kernels: allowed


def test_real_lq_batches_are_not_degraded_again(photo_folder):
    from basicsr.models import build_model

    from tests.conftest import tiny_options
    opt = tiny_options(photo_folder, photo_folder)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    model = build_model(opt)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    model.feed_data({'lq': lq, 'gt': gt})
    assert torch.equal(model.batch.lq, lq) and model.batch.copies() == 1
    with pytest.raises(GsrError, match='not paired'):  # the alignment regularizers refuse unpaired rows
        model.optimize_parameters(1)


def test_a_model_that_forwards_the_twin_gets_its_features_in_the_same_pass(hr_batch):
    """``forward_twin`` (for systems that compare noisy and noise-free features): one pass over LQ and twin rows,
    the twin rows' features in ``twin_features``, the output and pixel loss on the LQ rows only."""
    from basicsr.models.sr_model import SRModel  # noqa: F401  (BasicSR's models registered)

    from gsr.archs.feature_tap import FeatureTap
    from gsr.models.generalizable_sr_model import GeneralizableSRModel
    from tests.conftest import tiny_options

    opt = tiny_options('unused', 'unused', noise_free_twin=True)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['datasets']['train']['gt_size'] = 64
    model = GeneralizableSRModel(opt)
    model.forward_twin = True
    model.feed_data(hr_batch)
    context = model.forward_train()
    n = model.batch.lq.shape[0]
    assert context.output.shape[0] == n
    lq_features, twin_features = context.features['feature_tap'], context.twin_features['feature_tap']
    reference = FeatureTap(model.net_g)
    with torch.no_grad():
        model.net_g(model.batch.lq_noise_free)
    assert torch.allclose(twin_features, reference.features, atol=1e-5)
    assert lq_features.shape == twin_features.shape and not torch.allclose(lq_features, twin_features)


def crop_origins(crops: torch.Tensor) -> list:
    """(top, left) of each crop of a coordinate image (channel 0 = row / 1023, channel 1 = column / 1023)."""
    return [(round(float(c[0, 0, 0]) * 1023), round(float(c[1, 0, 0]) * 1023)) for c in crops]


def mean_pairwise_overlap(origins: list, size: int) -> float:
    shares = [max(0, size - abs(a[0] - b[0])) * max(0, size - abs(a[1] - b[1])) / size**2
              for i, a in enumerate(origins) for b in origins[i + 1:]]
    return float(np.mean(shares))


def test_positives_cut_anywhere_in_the_image_share_its_draws_and_little_content(tmp_path):
    """crops_per_image C: C crops of one image taken independently anywhere in it (LightBSR's code: 2.8 % mean
    pairwise overlap on a 2K image), each degraded on its own with the image's draws; the old region mode
    (crops_per_image 1, crop_pad_size R) cuts them from one R-px region, whose crops overlap far more."""
    import cv2

    from gsr.data.classic_degrader import ClassicDegradationOptions
    rows, cols = np.meshgrid(np.arange(768), np.arange(1024), indexing='ij')
    coordinates = np.stack([np.zeros_like(rows), cols, rows], -1) / 1023.  # BGR: R = row, G = column
    cv2.imwrite(str(tmp_path / 'coords.png'), np.round(coordinates * 65535).astype(np.uint16))
    random.seed(0)
    anywhere = PairedDegradationDataset({'name': 'train', 'dataroot_gt': str(tmp_path), 'crop_pad_size': 64,
                                         'crops_per_image': 4, 'use_hflip': False})
    region = PairedDegradationDataset({'name': 'train', 'dataroot_gt': str(tmp_path), 'crop_pad_size': 128,
                                       'use_hflip': False})
    items = [anywhere[0] for _ in range(50)]
    assert items[0]['gt'].shape == (4, 3, 64, 64)
    spread = np.mean([mean_pairwise_overlap(crop_origins(item['gt']), 64) for item in items])
    classic = ClassicDegradationOptions(kernel='iso', sigma=[0.2, 4.0], noise=10)
    builder = DegradedBatchBuilder(batch_options(4, False, DegradationOptions(), {'gt_size': 64}, 'shared_degradation',
                                                 classic), 4)
    torch.manual_seed(0)
    regional = []
    for _ in range(50):
        batch = builder({'gt': region[0]['gt'][None]})  # 4 crops of 64 cut from one 128-px region
        regional.append(mean_pairwise_overlap(crop_origins(batch.gt), 64))
    assert spread < 0.05 < 0.2 < np.mean(regional), (spread, np.mean(regional))

    batch = builder({'gt': torch.stack([items[0]['gt'], items[1]['gt']])})  # 2 images x 4 crops
    assert batch.lq.shape == (8, 3, 16, 16)
    assert torch.equal(batch.degradation, torch.arange(2).repeat(4)) and len(set(batch.content.tolist())) == 8
    for key in ('sigma_x', 'noise_sigma'):  # the image's draws, on every one of its crops
        assert torch.equal(batch.labels[key][:2], batch.labels[key][6:]), key
    assert torch.equal(batch.gt[0], items[0]['gt'][0]) and torch.equal(batch.gt[2], items[0]['gt'][1])
    with pytest.raises(GsrError, match='gives 4 crops per image .* but the model cuts 2'):
        DegradedBatchBuilder(batch_options(2, False, DegradationOptions(), {}, 'shared_degradation', classic), 4)(
            {'gt': items[0]['gt'][None]})
