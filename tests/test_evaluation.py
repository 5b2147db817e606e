"""Evaluation and analyses on real images: metrics are BasicSR's, tables agree, measures behave as defined."""
import csv
import json
import math
import os
import re

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr, calculate_ssim

from gsr.analysis.measures import band_mape, calinski_harabasz, dominant_dct_bands, entropy_bits
from gsr.archs.network_checkpoint import load_network
from gsr.data.eval_protocol import degrade, mod_crop, noise_seed
from gsr.metrics.lpips_metric import calculate_lpips, lpips_available
from gsr.utils.errors import GsrError
from gsr.utils.image_io import list_images, read_image_uint8_rgb
from gsr.utils.inference import super_resolve
from tests.conftest import run_gsr, write_yaml

NET = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1}


@pytest.fixture(scope='module')
def tiny_checkpoints(tmp_path_factory):
    """Two tiny networks' checkpoints and the option file describing them."""
    folder = tmp_path_factory.mktemp('models')
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = build_network(dict(NET))
        path = folder / f'net{seed}.pth'
        torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
        paths.append(str(path))
    return write_yaml(folder / 'net.yml', {'scale': 4, 'network_g': NET}), paths


def test_chi_is_high_for_clustered_and_low_for_mixed_features():
    rng = np.random.default_rng(0)
    labels = [f'class{i}' for i in range(4) for _ in range(30)]
    centres = np.repeat(rng.normal(0, 10, (4, 16)), 30, axis=0)
    clustered = centres + rng.normal(0, 1, (120, 16))
    mixed = rng.normal(0, 1, (120, 16))
    assert calinski_harabasz(clustered, labels) > 100 * calinski_harabasz(mixed, labels)
    assert calinski_harabasz(mixed, labels) < 5


def test_band_mape_on_known_spectra():
    rng = np.random.default_rng(1)
    gt = rng.normal(128, 20, (64, 64))
    assert np.allclose(band_mape(gt * 1.1, gt, bands=4), 10, atol=1e-6)  # 10% amplitude error everywhere
    y, x = np.mgrid[:64, :64]
    tone = 5 * np.cos(2 * np.pi * 24 * x / 64)  # 24/64 = 0.375 cycles/px = 0.75 of Nyquist -> last of 4 bands
    errors = band_mape(gt + tone, gt, bands=4)
    assert errors[3] > 1 and np.allclose(errors[:3], 0, atol=1e-9)


def test_dominant_dct_band_and_entropy():
    h = w = 16
    smooth = np.ones((1, h, w))
    y, x = np.mgrid[:h, :w]
    checker = ((x + y) % 2 * 2 - 1)[None].astype(float)  # highest DCT frequency
    bands = dominant_dct_bands(np.concatenate([smooth, checker]), bands=4)
    assert list(bands) == [0, 3]
    assert entropy_bits(np.array([0, 0, 0, 0]), 4) == 0
    assert math.isclose(entropy_bits(np.array([0, 1, 2, 3]), 4), 2.0)


def test_tiled_inference_equals_whole_image_within_tolerance(photo_folder, tiny_checkpoints):
    """Stated tolerance: with tile_pad >= the network's receptive radius the results agree to 1 grey level."""
    option, (ckpt, _) = tiny_checkpoints
    from gsr.models.option_check import load_option_file
    net = load_network(load_option_file(option), ckpt)
    hr = mod_crop(read_image_uint8_rgb(list_images(photo_folder)[0]), 4)
    lr = degrade(hr, 'b+n', seed=0)
    whole, tiled = super_resolve(net, lr, 4), super_resolve(net, lr, 4, tile=32, tile_pad=8)
    assert whole.shape == tiled.shape
    assert np.abs(whole.astype(int) - tiled).max() <= 1


def test_lpips_plumbing_with_an_explicit_random_backbone(photo_folder):
    img = read_image_uint8_rgb(list_images(photo_folder)[0])[:64, :64, ::-1]
    other = np.ascontiguousarray(img[::-1])
    assert calculate_lpips(img, img, random_backbone=True) < 1e-6
    assert calculate_lpips(img, other, random_backbone=True) > 0
    real = calculate_lpips(img, other)
    assert math.isnan(real) != lpips_available('alex')  # never a number from a backbone that is not there


@pytest.mark.slow
def test_evaluate_end_to_end_resumes_and_tables_agree(tmp_path, photo_folder, tiny_checkpoints):
    option, (ckpt0, ckpt1) = tiny_checkpoints
    cfg = {
        'name': 'bench',
        'output': str(tmp_path / 'out'),
        'scale': 4,
        'settings': ['clean', 'noise', 'b+n+j'],
        'reference': 'Baseline',
        'datasets': {
            'Set': photo_folder
        },
        'models': {
            'Baseline': {
                'option_file': option,
                'checkpoint': ckpt0
            },
            'Baseline + Other': {
                'option_file': option,
                'checkpoint': ckpt1
            }
        },
    }
    path = write_yaml(tmp_path / 'bench.yml', cfg)
    first = run_gsr(['evaluate', path], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / 'out'
    cached = open(out / 'per_image.jsonl').read().splitlines()
    n_images = len(list_images(photo_folder))
    assert len(cached) == 2 * n_images * 3
    second = run_gsr(['evaluate', path], cwd=tmp_path)
    assert second.returncode == 0 and open(out / 'per_image.jsonl').read().splitlines() == cached  # all from cache

    row = json.loads(cached[0])
    hr = mod_crop(read_image_uint8_rgb(list_images(photo_folder)[0]), 4)
    lr = degrade(hr, row['setting'], 4, 20, noise_seed(0, row['image'], row['setting']))
    from gsr.models.option_check import load_option_file
    sr = super_resolve(load_network(load_option_file(option), ckpt0), lr, 4)
    assert row['psnr'] == calculate_psnr(sr, hr, 4) and row['ssim'] == calculate_ssim(sr, hr, 4)

    rows = list(csv.DictReader(open(out / 'results.csv')))
    table = open(out / 'table.md').read()
    psnr_table = table.split('### PSNR')[1].split('###')[0]
    for model in cfg['models']:
        line = next(row for row in psnr_table.splitlines() if row.startswith(f'| {model} |'))
        cells = [float(c) for c in line.strip('|').split('|')[1:]]
        expected = [float(r['psnr']) for r in rows if r['model'] == model]
        assert np.allclose(cells, expected, atol=0.005)
    gain_line = next(row for row in psnr_table.splitlines() if row.startswith('| Improvement'))
    gains = [float(c) for c in gain_line.strip('|').split('|')[1:]]
    ref = [float(r['psnr']) for r in rows if r['model'] == 'Baseline']
    other = [float(r['psnr']) for r in rows if r['model'] == 'Baseline + Other']
    assert np.allclose(gains, np.subtract(other, ref), atol=0.011)
    assert os.path.getsize(out / 'gains.png') > 1000

    # a setting that changes the numbers is part of the cache key: no stale rows are reused
    before = {(r['model'], r['setting']): float(r['psnr']) for r in rows}
    cfg.update(noise_sigma=40, crop_border=0, metrics=['psnr'], models={'Baseline': cfg['models']['Baseline']})
    third = run_gsr(['evaluate', write_yaml(tmp_path / 'bench.yml', cfg)], cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    after = {r['setting']: float(r['psnr']) for r in csv.DictReader(open(out / 'results.csv'))}
    assert all(after[s] != before[('Baseline', s)] for s in cfg['settings'])
    assert len(open(out / 'per_image.jsonl').read().splitlines()) == len(cached) + n_images * 3


@pytest.mark.slow
@pytest.mark.parametrize('analysis, output', [('ddr', 'ddr_tsne.png'), ('freq', 'freq_mape.png'),
                                              ('dct', 'dct_bands.png')])
def test_analyses_write_a_table_and_a_plot(tmp_path, photo_folder, tiny_checkpoints, analysis, output):
    option, (ckpt, _) = tiny_checkpoints
    result = run_gsr([
        'analyze', analysis, '-opt', option, '--checkpoint', ckpt, '--hr', photo_folder, '--output',
        str(tmp_path), '--settings', 'clean', 'noise', 'b+n+j'
    ],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.getsize(tmp_path / output) > 1000
    table = open(tmp_path / f'{analysis}.md').read()
    numbers = [float(v) for v in re.findall(r'\| (-?\d+\.\d+)', table)]
    assert numbers and all(np.isfinite(numbers))


@pytest.mark.slow
def test_tfd_analyses_cossim_over_checkpoints_and_the_residual_spectrum(tmp_path, photo_folder, tiny_checkpoints):
    option, checkpoints = tiny_checkpoints
    result = run_gsr(['analyze', 'cossim', '-opt', option, '--checkpoints', *checkpoints, '--hr', photo_folder,
                      '--output', str(tmp_path / 'cos')], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in open(tmp_path / 'cos' / 'cossim.md').read().splitlines()[2:] if line]
    assert len(rows) == len(checkpoints)
    values = [float(v) for row in rows for v in row.strip('|').split('|')[1:]]
    assert len(values) == 3 * len(checkpoints) and all(-1 <= v <= 1 for v in values)
    assert os.path.getsize(tmp_path / 'cos' / 'cossim.png') > 1000

    result = run_gsr(['analyze', 'spectrum', '--hr', photo_folder, '--output', str(tmp_path / 'spec')], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = open(tmp_path / 'spec' / 'spectrum.md').read()
    noise = [float(v) for v in next(r for r in table.splitlines() if r.startswith('| noise')).strip('|').split('|')[1:]]
    assert np.std(noise[1:-1]) / np.mean(noise[1:-1]) < 0.2  # i.i.d. noise: flat over the bands above the lowest


def test_bicubic_entry_scores_matlab_bicubic_upscaling_in_the_same_run(tmp_path, photo_folder, tiny_checkpoints):
    """``models: {bicubic: bicubic}`` needs no option file or checkpoint, scores BasicSR's MATLAB ``imresize`` of
    the same LR, and can be the reference of the Improvement rows."""
    from basicsr.utils.matlab_functions import imresize

    from gsr.analysis.evaluation import evaluate, load_config, write_reports
    option, (ckpt0, _) = tiny_checkpoints
    cfg = {'name': 'floor', 'output': str(tmp_path / 'out'), 'settings': ['clean', 'noise'], 'metrics': ['psnr'],
           'reference': 'bicubic', 'datasets': {'Set': photo_folder},
           'models': {'bicubic': 'bicubic', 'net': {'option_file': option, 'checkpoint': ckpt0}}}
    rows = evaluate(load_config(write_yaml(tmp_path / 'floor.yml', cfg)), progress=False)
    row = next(r for r in rows if r['model'] == 'bicubic' and r['setting'] == 'noise')
    path = next(p for p in list_images(photo_folder) if os.path.splitext(os.path.basename(p))[0] == row['image'])
    hr = mod_crop(read_image_uint8_rgb(path), 4)
    lr = degrade(hr, 'noise', 4, 20, noise_seed(0, row['image'], 'noise'))
    expected = np.clip(np.round(imresize(lr.astype(np.float32) / 255., 4) * 255.), 0, 255).astype(np.uint8)
    assert row['psnr'] == calculate_psnr(expected, hr, 4)
    table = open(write_reports(load_config(str(tmp_path / 'floor.yml')), rows)['md']).read()
    assert '| Improvement (net vs bicubic) |' in table
    cfg['models']['bicubic'] = 'bilinear'
    with pytest.raises(Exception, match='models.bicubic must be a mapping'):
        load_config(write_yaml(tmp_path / 'floor.yml', cfg))


def test_a_dataset_may_be_the_embedded_photographs(tmp_path):
    """``datasets: {photos: embedded:val}`` scores the photographs gsr embeds (as the option files' ``embedded:val``),
    which a fresh clone has; an unknown split is one error naming it."""
    from gsr.analysis.evaluation import evaluate, load_config
    from gsr.utils.default_data import materialize
    cfg = {'output': str(tmp_path / 'out'), 'settings': ['clean'], 'metrics': ['psnr'],
           'datasets': {'photos': 'embedded:val'}, 'models': {'bicubic': 'bicubic'}}
    rows = evaluate(load_config(write_yaml(tmp_path / 'ev.yml', cfg)), progress=False)
    names = {os.path.splitext(os.path.basename(p))[0] for p in list_images(materialize()['val'])}
    assert {r['image'] for r in rows} == names and all(r['psnr'] > 20 for r in rows)
    cfg['datasets'] = {'photos': 'embedded:test'}
    with pytest.raises(GsrError, match="'embedded:test': the embedded data sets are embedded:train and embedded:val"):
        load_config(write_yaml(tmp_path / 'ev.yml', cfg))


def test_the_cache_is_keyed_on_the_images_content(tmp_path, photo_folder):
    """A test image replaced under the same name is scored again (it once kept the old image's cached numbers)."""
    import shutil

    from gsr.analysis.evaluation import evaluate, load_config
    images = list_images(photo_folder)[:2]
    folder = tmp_path / 'set'
    folder.mkdir()
    for path in images:
        shutil.copy(path, folder / os.path.basename(path))
    cfg = {'output': str(tmp_path / 'out'), 'settings': ['clean'], 'metrics': ['psnr'],
           'datasets': {'S': str(folder)}, 'models': {'bicubic': 'bicubic'}}
    config = write_yaml(tmp_path / 'ev.yml', cfg)
    first = {r['image']: r['psnr'] for r in evaluate(load_config(config), progress=False)}
    replaced = os.path.basename(images[0])
    shutil.copy(images[1], folder / replaced)  # another photo under the first one's name
    second = {r['image']: r['psnr'] for r in evaluate(load_config(config), progress=False)}
    name = os.path.splitext(replaced)[0]
    assert second[name] != first[name] and second[name] == first[os.path.splitext(os.path.basename(images[1]))[0]]
