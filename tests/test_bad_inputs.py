"""The bad-input matrix: each case gets a clear error naming the file or key, or is handled correctly."""
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network

from gsr.archs.network_checkpoint import load_network
from gsr.data.paired_degradation_dataset import PairedDegradationDataset
from gsr.tools.prepare import make_lmdb
from gsr.utils.errors import GsrError
from gsr.utils.image_io import list_images, read_image, read_image_uint8_rgb
from gsr.utils.inference import super_resolve, super_resolve_tensor
from tests.conftest import copies_batch, run_gsr, tiny_options, write_yaml


@pytest.fixture()
def photo(photo_folder) -> np.ndarray:
    """A real photograph, uint8 BGR."""
    return cv2.imread(list_images(photo_folder)[0], cv2.IMREAD_COLOR)


def dataset(root, **kw):
    return PairedDegradationDataset(dict({'name': 'train', 'dataroot_gt': str(root), 'crop_pad_size': 96}, **kw))


def test_corrupt_image_names_the_file_and_can_be_skipped(tmp_path, photo):
    cv2.imwrite(str(tmp_path / 'a_bad.png'), photo)
    data = open(tmp_path / 'a_bad.png', 'rb').read()
    (tmp_path / 'a_bad.png').write_bytes(data[:len(data) // 3])  # truncated PNG
    cv2.imwrite(str(tmp_path / 'b_good.png'), photo)
    with pytest.raises(GsrError, match='a_bad.png: not a readable image'):
        dataset(tmp_path)[0]
    item = dataset(tmp_path, skip_bad_images=True)[0]
    assert item['gt_path'].endswith('b_good.png') and item['gt'].shape == (3, 96, 96)


def test_zero_byte_file_names_the_file(tmp_path):
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(GsrError, match='empty.png: empty image file'):
        read_image(str(tmp_path / 'empty.png'))


def test_non_image_file_in_an_image_folder_is_ignored(tmp_path, photo):
    cv2.imwrite(str(tmp_path / 'img.png'), photo)
    (tmp_path / 'notes.txt').write_text('not an image')
    ds = dataset(tmp_path)
    assert len(ds) == 1 and ds[0]['gt'].shape == (3, 96, 96)


@pytest.mark.parametrize('kind', ['gray', 'rgba', 'uint16'])
def test_grayscale_rgba_and_16_bit_are_converted(tmp_path, photo, kind):
    if kind == 'gray':
        img = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    elif kind == 'rgba':
        img = np.concatenate([photo, np.full(photo.shape[:2] + (1, ), 128, np.uint8)], 2)
    else:
        img = photo.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / 'x.png'), img)
    out = read_image(str(tmp_path / 'x.png'))
    assert out.shape == photo.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    reference = photo if kind != 'gray' else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    assert np.abs(out * 255 - reference).max() < 0.51
    assert dataset(tmp_path)[0]['gt'].shape == (3, 96, 96)


def test_set14_grayscale_image_where_present():
    """Uses ../shared/data/Set14 (which has a single-channel image) when present."""
    folder = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'shared', 'data', 'Set14')
    if not os.path.isdir(folder):
        pytest.skip('../shared/data/Set14 is not present (covered by the synthetic grayscale case)')
    shapes = {read_image_uint8_rgb(p).shape[2] for p in list_images(folder)}
    assert shapes == {3}


def test_image_smaller_than_the_crop_is_padded(tmp_path, photo):
    cv2.imwrite(str(tmp_path / 'tiny.png'), photo[:40, :50])
    item = dataset(tmp_path, crop_pad_size=120)[0]
    assert item['gt'].shape == (3, 120, 120)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(GsrError, match=f'no images .* in folder: {tmp_path}'):
        dataset(tmp_path)


def test_lmdb_round_trip_and_missing_key(tmp_path, photo_folder):
    lmdb_path = str(tmp_path / 'hr.lmdb')
    assert make_lmdb(photo_folder, lmdb_path, workers=1, progress=False) == len(list_images(photo_folder))
    assert make_lmdb(photo_folder, lmdb_path, workers=1, progress=False) == 0  # re-run skips finished keys
    first = list_images(photo_folder)[0]
    key = os.path.splitext(os.path.basename(first))[0]
    meta = tmp_path / 'meta.txt'
    meta.write_text(f'{key}.png (1,1,3) 1\nno_such_key.png (10,10,3) 1\n')
    ds = dataset(lmdb_path, io_backend={'type': 'lmdb'}, meta_info=str(meta))
    assert ds.keys == [key, 'no_such_key']
    assert np.array_equal(ds._read(key), read_image(first))  # bit-exact round trip
    with pytest.raises(GsrError, match="key 'no_such_key'.* is missing"):
        ds[1]


def _cli_error(tmp_path, opt) -> str:
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt)], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('gsr: error:')
    return lines[0]


def test_string_where_a_number_is_expected(tmp_path, photo_folder):
    opt = tiny_options(photo_folder, photo_folder, **{'train.optim_g.lr': '2e-4'})
    assert "train.optim_g.lr must be a number, got '2e-4'" in _cli_error(tmp_path, opt)


def test_unknown_key_in_a_loss_config(tmp_path, photo_folder):
    opt = tiny_options(photo_folder, photo_folder, **{'train.regularizers.l_align.wieght': 1.0})
    message = _cli_error(tmp_path, opt)
    assert 'train.regularizers.l_align: unknown key(s) wieght for FeatureAlignmentLoss' in message
    assert 'loss_weight' in message


def test_unknown_key_in_the_degradation_block_when_built_directly(tmp_path, photo_folder):
    from basicsr.models import build_model
    opt = tiny_options(photo_folder, photo_folder)
    opt.update(degradation={'noise_prop': 0.5}, is_train=True, dist=False, rank=0, world_size=1)
    with pytest.raises(GsrError, match='degradation: unknown key.*noise_prop.*noise_prob'):
        build_model(opt)


def test_python_tag_in_options_is_rejected(tmp_path):
    path = tmp_path / 'evil.yml'
    path.write_text('name: x\nmodel_type: !!python/object/apply:os.system ["echo pwned"]\n')
    result = run_gsr(['train', '-opt', str(path)], cwd=tmp_path)
    assert result.returncode == 2 and 'pwned' not in result.stdout
    assert 'rejected YAML tag' in result.stderr and 'evil.yml' in result.stderr


def test_constant_images_give_finite_loss_and_gradients(photo_folder):
    from basicsr.models import build_model
    opt = tiny_options(photo_folder, photo_folder)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    model = build_model(opt)
    model.batch = copies_batch(torch.full((4, 3, 8, 8), 0.5), torch.full((4, 3, 32, 32), 0.5))
    model.optimize_parameters(1)
    assert all(np.isfinite(v) for v in model.log_dict.values())
    assert all(torch.isfinite(p.grad).all() for p in model.net_g.parameters() if p.grad is not None)


def test_checkpoint_of_another_architecture_lists_keys(tmp_path):
    other = build_network({
        'type': 'RRDBNet',
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 8,
        'num_block': 1,
        'num_grow_ch': 4
    })
    torch.save({'params': other.state_dict()}, tmp_path / 'rrdb.pth')
    with pytest.raises(GsrError) as e:
        load_network({'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1}}, str(tmp_path / 'rrdb.pth'))
    message = str(e.value)
    assert 'rrdb.pth does not fit MSRResNet' in message
    assert 'missing keys: body.0.conv1.bias' in message and 'unexpected keys: body.0.rdb1' in message


@pytest.mark.slow
def test_very_large_image_through_tiled_inference():
    torch.manual_seed(0)
    net = build_network({'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1}).eval()
    lr = (np.random.default_rng(0).random((700, 900, 3)) * 255).astype(np.uint8)
    tiled = super_resolve(net, lr, 4, tile=128, tile_pad=16)
    assert tiled.shape == (2800, 3600, 3)
    crop = torch.from_numpy(lr[:160, :200].astype(np.float32) / 255.).permute(2, 0, 1)[None]
    with torch.no_grad():
        whole = super_resolve_tensor(net, crop, 4)
    assert np.abs(tiled[:160 * 4 - 64, :200 * 4 - 64].astype(int) -
                  (whole[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round()[:-64, :-64]).max() <= 1


def test_failed_inference_leaves_no_partial_output(tmp_path, photo_folder):
    net_opt = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1}
    torch.save({'params': build_network(dict(net_opt)).state_dict()}, tmp_path / 'net.pth')
    opt = write_yaml(tmp_path / 'o.yml', {'scale': 4, 'network_g': net_opt})
    inputs = tmp_path / 'in'
    inputs.mkdir()
    cv2.imwrite(str(inputs / 'a.png'), cv2.imread(list_images(photo_folder)[0])[:32, :32])
    (inputs / 'b.png').write_bytes(b'\x89PNG broken')
    result = run_gsr([
        'infer', '-opt', opt, '--checkpoint',
        str(tmp_path / 'net.pth'), '--input',
        str(inputs), '--output',
        str(tmp_path / 'out')
    ],
                     cwd=tmp_path)
    assert result.returncode == 2 and 'b.png' in result.stderr
    assert sorted(os.listdir(tmp_path)) == ['in', 'net.pth', 'o.yml']


@pytest.mark.parametrize('change, message', [
    ({'paired': 'false'}, "paired must be true or false, got 'false'"),
    ({'feature_tapp': {'layer': 'conv_last'}}, 'GeneralizableSRModel (top level): unknown key(s) feature_tapp '
     '(did you mean feature_tap?)'),
    ({'degradation': {'jpeg_rang': [30, 95]}}, 'degradation: unknown key(s) jpeg_rang (did you mean jpeg_range?)'),
    ({'network_g.num_feat': '64'}, "network_g.num_feat must be an integer, got '64'"),
    ({'network_g.num_feats': 64}, 'network_g: unknown key(s) num_feats for MSRResNet'),
    ({'paired': False, 'train.regularizers': None}, 'datasets.train.kernel_sets is 2 but the model degrades each '
     'crop 1 time(s) (paired: false): set kernel_sets to 1'),
    ({'feature_tap': {'layer': 'conv_lost'}}, "feature_tap.layer 'conv_lost' is not a layer of MSRResNet"),
    ({'attach': {'adapter': {'type': 'ResidualConvAdapter', 'num_feat': 16}}},
     'attach.adapter: the module has num_feat 16 but the input of its layer has 8 channels'),
    ({'train.regularizers.l_pix2': {'type': 'L1Loss'}}, 'train.regularizers.l_pix2: L1Loss is not a regularizer'),
    ({'train.optim_g.type': 'Adamm'}, "train.optim_g.type 'Adamm' is not an optimizer BasicSR builds"),
    ({'train.optim_g.lr': -1e-4}, 'train.optim_g.lr must not be negative'),
    ({'train.scheduler.type': 'Cosine'}, "train.scheduler.type 'Cosine' is not a scheduler BasicSR builds"),
    ({'train.regularizer': {'l_align': {'type': 'FeatureAlignmentLoss'}}},
     'GeneralizableSRModel train: unknown key(s) regularizer (did you mean regularizers?)'),
    ({'network_g.upscale': 2}, 'network_g.upscale is 2 but scale is 4'),
    ({'scale': 0}, 'scale must be positive, got 0'),
    ({'num_gpu': 64}, 'num_gpu is 64 but'),
    ({'datasets.train.batch_size_per_gpu': 0}, 'datasets.train.batch_size_per_gpu must be positive, got 0'),
    ({'datasets.train.gt_size': 100}, 'datasets.train.gt_size 100 is larger than crop_pad_size 80'),
    ({'datasets.train.gt_size': 30}, 'datasets.train.gt_size 30 is not a multiple of scale 4'),
    ({'degradation': {'jpeg_range': [95, 30]}}, 'degradation.jpeg_range must be [low, high] within [1, 100], got '
     '[95.0, 30.0]'),
    ({'degradation': {'resize_prob': [0.5, 0.5]}}, 'degradation.resize_prob must be 3 probabilities that sum to 1'),
    ({'datasets.train': None}, 'datasets.train is missing: training needs a training set'),
    ({'val.metrics.psnr.type': 'calc_psnr'}, "unknown val.metrics.psnr.type 'calc_psnr'"),
    ({'datasets.train.io_backend.type': 'ftp'}, "datasets.train.io_backend.type 'ftp' is not one of disk, lmdb"),
    ({'datasets.train.dataroot_gt': '/data/DIV2K_sub.lmdb'}, 'is an LMDB but io_backend is disk: set io_backend'),
    ({'train.max_nonfinite_steps': 'ten'}, "train.max_nonfinite_steps must be an integer, got 'ten'"),
    ({'train.regularizers.l_align.mode': 'frobenius'},
     "train.regularizers.l_align.mode must be one of official, spatial, got 'frobenius'"),
    ({'attach': {'tfd': {'type': 'TargetedFeatureDenoising', 'num_feat': 8, 'mode': 'both'}}},
     "attach.tfd.mode must be one of inline, training_only, got 'both'"),
    ({'attach': {'adapter': {'type': 'ResidualConvAdapter', 'num_feat': 8, 'capture': 'in'}}},
     "attach.adapter.capture must be one of input, output, got 'in'"),
    ({'feature_tap': {'capture': 'middle'}}, "feature_tap.capture must be one of input, output, got 'middle'"),
    ({'datasets.train.kernel_sets': 0}, 'datasets.train.kernel_sets must be one of 1, 2, got 0'),
    ({'datasets.train.crop_pad_sise': 80},
     'datasets.train: unknown key(s) crop_pad_sise (did you mean crop_pad_size?)'),
    ({'datasets.val.noise_sigma': 'high'}, "datasets.val.noise_sigma must be a number, got 'high'"),
    ({'datasets.train.crops_per_image': 0}, 'datasets.train.crops_per_image must be at least 1, got 0'),
    ({'network_g': {'type': 'LightBSR', 'upscale': 3}, 'scale': 3},
     'network_g.upscale must be one of 2, 4, 8, got 3'),
    ({'datasets.train.batch_size_per_gpu': 1}, 'train.regularizers.l_align: FeatureAlignmentLoss centres each copy '
     'over the batch, so with datasets.train.batch_size_per_gpu 1 it is 0 on every step: use at least 2'),
])
def test_model_option_mistakes_are_one_line_before_any_folder(tmp_path, photo_folder, monkeypatch, capsys, change,
                                                              message):
    """Each mistake ends in one `gsr: error:` line that names the key, and BasicSR never starts (no folder)."""
    from gsr.cli import main
    opt = tiny_options(photo_folder, photo_folder, **{k: v for k, v in change.items() if '.' in k})
    opt.update({k: v for k, v in change.items() if '.' not in k})
    path = write_yaml(tmp_path / 'o.yml', opt)
    monkeypatch.chdir(tmp_path)
    assert main(['train', '-opt', path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('gsr: error: ') and message in err[0], err
    assert os.listdir(tmp_path) == ['o.yml']


TILE_MEMORY = '''
import json, sys
import numpy as np, torch
import gsr
from basicsr.archs import build_network
from gsr.utils.inference import super_resolve

def high_water_mark():
    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')) * 1024

net = build_network({'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1}).eval()
rng = np.random.default_rng(0)
super_resolve(net, rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), 4, tile=96)  # warm-up: tile buffers
lr = rng.integers(0, 255, (int(sys.argv[1]), int(sys.argv[1]), 3), dtype=np.uint8)
before = high_water_mark()
out = super_resolve(net, lr, 4, tile=96)
print(json.dumps({'growth': high_water_mark() - before, 'output': out.nbytes}))
'''


@pytest.mark.slow
def test_tiled_inference_memory_does_not_grow_with_the_image_beyond_the_output():
    """Peak memory (VmHWM) added by a tiled SR stays within the uint8 output plus a tile-sized budget, at two
    image sizes; a float output alone would be 4x the uint8 one."""
    import json
    import subprocess
    import sys
    budget = 64 * 2**20
    for side in (700, 1400):
        result = subprocess.run([sys.executable, '-c', TILE_MEMORY, str(side)], capture_output=True, text=True,
                                check=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        assert measured['output'] == (4 * side)**2 * 3
        assert measured['growth'] <= measured['output'] + budget, measured


def test_a_network_of_another_scale_is_refused_in_tiles_and_whole():
    net = build_network({'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 2}).eval()
    lr = np.zeros((40, 40, 3), np.uint8)
    for tile in (0, 16):
        with pytest.raises(GsrError, match='not the scale 4 of the option file'):
            super_resolve(net, lr, 4, tile=tile)


def test_command_line_mistakes_are_one_line(tmp_path, photo_folder, monkeypatch, capsys):
    """--force_yml values are checked like the file's; testing without weights is refused; infer's flags."""
    from gsr.cli import main
    path = write_yaml(tmp_path / 'o.yml', tiny_options(photo_folder, photo_folder))
    monkeypatch.chdir(tmp_path)
    cases = [
        (['train', '-opt', path, '--force_yml', 'datasets:train:batch_size_per_gpu=0'], 'must be positive, got 0'),
        (['train', '-opt', path, '--force_yml', 'train:nope:lr=1'], "'nope' is not a block of the option file"),
        (['train', '-opt', path, '--force_yml', 'train:total_iter=[1,'], "'[1,' is not a value (SyntaxError"),  # d10
        (['train', '-opt', path, '--force_yml', 'train:ema_decay=!!float x'], "is not a value (ValueError"),  # d12
        (['train', '-opt', path, '--force_yml', 'name=a=b'], 'a value cannot contain "="'),
        # d15: BasicSR exec()s the keys as Python source; a key that is code never reaches it
        (['train', '-opt', path, '--force_yml', 'name"]=print("ran");x=opt["name=1'], 'a value cannot contain'),
        (['train', '-opt', path, '--force_yml', 'train"]; import os; opt["train:x=1'],
         "'train\"]; import os; opt[\"train' is not an option key"),
        (['test', '-opt', path], 'path.pretrain_network_g is not set: testing would score a randomly initialised'),
        (['infer', '-opt', path, '--checkpoint', 'x.pth', '--input', photo_folder, '--output', 'o', '--tile-pad',
          '-1'], 'must not be negative'),
    ]
    if not torch.cuda.is_available():
        cases.append((['infer', '-opt', path, '--checkpoint', 'x.pth', '--input', photo_folder, '--output', 'o',
                       '--device', 'cuda'], 'CUDA is not available here'))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('gsr: error: ') and message in err[0], err
    assert os.listdir(tmp_path) == ['o.yml']
    assert main(['--version']) == 0 and capsys.readouterr().out.startswith('gsr 0.1.0 (BasicSR 1.4.2')


def test_numeric_and_choice_mistakes_of_the_commands_are_one_line(tmp_path, photo_folder, monkeypatch, capsys):
    """Values that used to reach the work and end in a traceback, an all-NaN file or a silently wrong number (the
    reliability review's c5, c6, D1, D4, D7, L9-L11, V10, V13, V14, E3-E7): one line, nothing written."""
    from gsr.cli import main
    monkeypatch.chdir(tmp_path)
    tiny_folder = str(tmp_path / 'tiny')
    os.makedirs(tiny_folder)
    cv2.imwrite(os.path.join(tiny_folder, 't.png'), np.zeros((4, 4, 3), np.uint8))
    opt = write_yaml(tmp_path / 'o.yml', tiny_options(photo_folder, photo_folder))
    checkpoint = str(tmp_path / 'net.pth')
    torch.save({'params': build_network({'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1}).state_dict()},
               checkpoint)
    analyze = ['analyze', 'freq', '-opt', opt, '--checkpoint', checkpoint, '--hr', photo_folder, '--output', 'a']
    evaluate = {'output': 'e', 'settings': ['clean'], 'datasets': {'S': photo_folder},
                'models': {'m': {'option_file': opt, 'checkpoint': checkpoint}}}
    cases = [
        (['prepare', 'subimages', '--input', photo_folder, '--output', 's', '--step', '0'], '--step must be at'),
        (['prepare', 'subimages', '--input', photo_folder, '--output', 's', '--crop-size', '0'], '--crop-size must'),
        (['prepare', 'kernel-pca', '--output', 'k.pth', '--l-max', '-5'], '--l-max must be greater than 0'),
        (['prepare', 'kernel-pca', '--output', 'k.pth', '--samples', '0'], '--samples must be at least 1'),
        (['degrade', '--hr', photo_folder, '--output', 'd', '--scale', '0'], '--scale must be at least 1'),
        (['degrade', '--hr', photo_folder, '--output', 'd', '--noise-sigma', '-5'], '--noise-sigma must be at'),
        (['degrade', '--protocol', 'spatial', '--hr', tiny_folder, '--output', 'd'], 'too small for the spatial'),
        (analyze + ['--bands', '-2'], '--bands must be at least 1'),
        (['analyze', 'spectrum', '--hr', photo_folder, '--output', 'a', '--bands', '0'], '--bands must be at least 1'),
        (['analyze', 'ddr', '-opt', opt, '--checkpoint', checkpoint, '--hr', photo_folder, '--output', 'a',
          '--settings', 'clean'], 'give at least two --settings'),
        (['evaluate', write_yaml(tmp_path / 'e1.yml', dict(evaluate, metrics=['psnr', 'ssimm']))],
         'metrics must be a non-empty list of psnr, ssim, lpips'),
        (['evaluate', write_yaml(tmp_path / 'e2.yml', dict(evaluate, scale='four'))], 'scale must be an integer'),
        (['evaluate', write_yaml(tmp_path / 'e3.yml', dict(evaluate, noise_sigma=-20))], 'noise_sigma must be at'),
        (['evaluate', write_yaml(tmp_path / 'e5.yml', dict(evaluate, crop_border=500))], 'crop_border 500 leaves 0'),
        (['evaluate', write_yaml(tmp_path / 'e4.yml', dict(evaluate, models={'m': dict(
            evaluate['models']['m'], param_key='params_emma')}))], 'models.m.param_key must be params_ema or params'),
    ]
    before = sorted(os.listdir(tmp_path))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('gsr: error: ') and message in err[0], (argv, err)
    assert sorted(os.listdir(tmp_path)) == before


def test_a_kernel_pca_file_with_non_finite_values_is_refused(tmp_path):
    from gsr.data.kernel_pca import load_kernel_pca
    torch.save({'basis': torch.full((441, 15), float('nan'))}, tmp_path / 'nan.pth')
    with pytest.raises(GsrError, match='non-finite values'):
        load_kernel_pca(str(tmp_path / 'nan.pth'), 'kernel_pca')
    torch.save({'basis': [1, 2, 3]}, tmp_path / 'list.pth')
    with pytest.raises(GsrError, match='not a kernel PCA file'):
        load_kernel_pca(str(tmp_path / 'list.pth'), 'kernel_pca')


def test_evaluate_with_ssim_alone_writes_its_tables(tmp_path, photo_folder):
    """A valid config without PSNR (E3b) once crashed in the gains chart after scoring every image."""
    from gsr.analysis.evaluation import evaluate, load_config, write_reports
    cfg = load_config(write_yaml(tmp_path / 'e.yml', {'output': str(tmp_path / 'e'), 'settings': ['clean'],
                                                      'metrics': ['ssim'], 'datasets': {'S': photo_folder},
                                                      'models': {'bicubic': 'bicubic'}}))
    paths = write_reports(cfg, evaluate(cfg, progress=False))
    assert '### SSIM' in open(paths['md']).read() and 'png' not in paths


def test_damaged_files_and_missing_keys_are_one_line(tmp_path, photo_folder, monkeypatch, capsys):
    """Review cases R2 (a study without ``base``), I9 (a damaged shipped-network manifest), b5 (a cache line gsr
    did not write) and P3 (a profile size that does not fit in memory): one line or ignored, not a traceback."""
    from gsr.analysis.evaluation import ResultCache
    from gsr.cli import main
    from gsr.tools import profile
    from gsr.utils.pretrained import manifest
    monkeypatch.chdir(tmp_path)
    raw = {'name': 'nobase', 'seeds': [0], 'variants': {'baseline': {}},
           'benchmark': {'datasets': {'S': [photo_folder]}}}
    study = write_yaml(tmp_path / 'r.yml', raw)
    assert main(['repro', study]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'missing required key: base' in err[0], err

    def no_memory(opt, args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(profile, 'profile', no_memory)
    opt = write_yaml(tmp_path / 'o.yml', tiny_options(photo_folder, photo_folder))
    assert main(['profile', '-opt', opt, '--lr-size', '60000x60000', '--device', 'cpu']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('gsr: error: --lr-size 60000x60000: the network does not fit'), err
    assert sorted(os.listdir(tmp_path)) == ['o.yml', 'r.yml']

    (tmp_path / 'm').mkdir()
    (tmp_path / 'm' / 'manifest.json').write_text('{"x": ')
    with pytest.raises(GsrError, match='manifest.json: not valid JSON'):
        manifest(str(tmp_path / 'm'))
    cache = tmp_path / 'per_image.jsonl'
    cache.write_text('{"model": "base"}\n[1, 2]\n{"torn": \n')
    assert ResultCache(str(cache)).rows == {}


def bomb_png(side: int = 40000) -> bytes:
    """A PNG whose header declares side x side grey pixels (past OpenCV's and PIL's pixel limits); both readers
    refuse it from the header, so its data holds only the first rows."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)

    packer, row = zlib.compressobj(9), b'\0' * (side + 1)
    data = b''.join(packer.compress(row) for _ in range(8)) + packer.flush()
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0)) +
            chunk(b'IDAT', data) + chunk(b'IEND', b''))


def test_a_decompression_bomb_is_one_line_in_every_reader(tmp_path):
    """Review cases I7 (gsr infer: OpenCV's pixel limit as a traceback) and I7b (gsr prepare lmdb: PIL's)."""
    from gsr.tools.prepare import make_lmdb
    from gsr.utils.image_io import read_image
    (tmp_path / 'bomb').mkdir()
    path = tmp_path / 'bomb' / 'bomb.png'
    path.write_bytes(bomb_png())
    with pytest.raises(GsrError, match='bomb.png: OpenCV refused to decode it'):
        read_image(str(path))
    with pytest.raises(GsrError, match='bomb.png: not a readable image'):
        make_lmdb(str(tmp_path / 'bomb'), str(tmp_path / 'b.lmdb'), workers=1, progress=False)


def test_mistakes_found_only_by_running_are_one_line_before_anything_is_written(
        tmp_path, photo_folder, monkeypatch, capsys):
    """Review cases that failed after a folder existed or after hours of other runs: a module at a layer of another
    width (t3), SAVL networks of different latent sizes (S8), `gsr infer` on a LightBSR teacher (N1), a `path:`
    entry that is not a folder name (U20), a missing or mismatching pretrain_network_g (d21, U7b), a study variant's
    mistake (R4, R17), `gsr analyze` creating its output before its checkpoint is checked (V3), `gsr profile --json`
    unwritable found after the work (P5)."""
    from gsr.archs.attached_arch import network_from_options
    from gsr.cli import main
    from gsr.models.option_check import load_option_file
    from gsr.tools import profile
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tiny = os.path.join(repo, 'options', 'tiny')
    monkeypatch.chdir(tmp_path)
    teacher_opt = os.path.join(tiny, 'train_lightbsr_teacher.yml')
    teacher = str(tmp_path / 'teacher.pth')
    torch.save({'params': network_from_options(load_option_file(teacher_opt)).backbone.state_dict()}, teacher)
    opt = tiny_options(photo_folder, photo_folder)
    bomb = dict(opt, path={'pretrain_network_g': None, 'a1': [['lol'] * 10] * 10})
    other = str(tmp_path / 'other.pth')
    torch.save({'params': build_network({'type': 'MSRResNet', 'num_feat': 16, 'num_block': 2}).state_dict()}, other)
    study = {'name': 's', 'base': os.path.join(repo, 'options', 'repro', 'base_srresnet_small.yml'),
             'hr': [photo_folder], 'seeds': [0], 'output': str(tmp_path / 'study'),
             'benchmark': {'datasets': {'S': [photo_folder]}}, 'variants': {'baseline': {}}}
    typo = dict(study, variants={'baseline': {}, 'dropout': {'dropot': {'p': 0.7}}})
    tfd = ['train', '-opt', os.path.join(tiny, 'train_srresnet_tfd.yml'), '--force_yml']
    cases = [
        ('t3', tfd + ['attach:tfd:layer=pixel_shuffle'], 'does not run on an LR batch of shape (2, 3, 16, 16): '),
        ('S8', ['train', '-opt', os.path.join(tiny, 'train_savl_a.yml'), '--force_yml',
                'network_degrader:latent_dim=4'],
         "network_degrader.latent_dim is 4 but network_g's is 8"),
        ('N1', ['infer', '-opt', teacher_opt, '--checkpoint', teacher, '--input', photo_folder, '--output', 'n1'],
         'this network is a LightBSR teacher'),
        ('U20', ['train', '-opt', write_yaml(tmp_path / 'bomb.yml', bomb)], 'path.a1 must be a folder name, got list'),
        ('d21', tfd + ['path:pretrain_network_g=nope.pth'], 'path.pretrain_network_g: checkpoint not found: nope.pth'),
        ('U7b', ['train', '-opt', write_yaml(tmp_path / 'o.yml', opt), '--force_yml',
                 f'path:pretrain_network_g={other}'], f'checkpoint {other} does not fit MSRResNet'),
        ('R4', ['repro', write_yaml(tmp_path / 'r4.yml', typo)], 'variant dropout, seed 0'),
        ('R17', ['repro', write_yaml(tmp_path / 'r17.yml', dict(study, iterations=-3))],
         'iterations must be at least 1, got -3'),
        ('V3', ['analyze', 'variance', '-opt', str(tmp_path / 'o.yml'), '--checkpoint', 'nope.pth', '--hr',
                photo_folder, '--output', 'v3'], 'checkpoint not found: nope.pth'),
        ('P5', ['profile', '-opt', str(tmp_path / 'o.yml'), '--lr-size', '16x16', '--json', '/proc/p.json'],
         'could not write /proc/p.json'),
    ]
    monkeypatch.setattr(profile, 'profile', lambda opt, args: pytest.fail('gsr profile ran before --json was checked'))
    before = sorted(os.listdir(tmp_path))
    for case, argv, message in cases:
        assert main(argv) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('gsr: error: ') and message in err[0], (case, err)
    assert sorted(os.listdir(tmp_path)) == before


def test_force_yml_reads_numbers_in_exponent_notation():
    """Review case d17: `--force_yml train:optim_g:lr=2.0e-4` was refused as a string (BasicSR's parser keeps
    exponent notation as text) with a hint that gave the same value."""
    from gsr.train import apply_force_yml
    opt = {'train': {'optim_g': {'lr': 1.0}}}
    for text, value in (('2e-4', 2e-4), ('2.0e-4', 2e-4), ('-1.5E+3', -1500.0), ('7', 7), ('1e', '1e')):
        apply_force_yml(opt, f'train:optim_g:lr={text}')
        assert opt['train']['optim_g']['lr'] == value and type(opt['train']['optim_g']['lr']) is type(value), text


def test_infer_says_what_it_skipped_a_file_for_a_folder_and_ctrl_c_are_one_line(tmp_path, monkeypatch, capsys):
    """Noted in the review (section 6): `gsr infer` skipped .gif / .txt files without a word, `--input` given a file
    said the folder does not exist, Ctrl-C printed a KeyboardInterrupt traceback."""
    from gsr.cli import main
    from gsr.tools import infer
    (tmp_path / 'lr').mkdir()
    cv2.imwrite(str(tmp_path / 'lr' / 'a.png'), np.full((12, 12, 3), 128, np.uint8))
    (tmp_path / 'lr' / 'notes.txt').write_text('a note')
    (tmp_path / 'lr' / 'b.gif').write_bytes(b'GIF89a')
    argv = ['infer', '--model', 'srresnet-small-baseline', '--input', str(tmp_path / 'lr'), '--output']
    assert main(argv + [str(tmp_path / 'out')]) == 0
    assert 'skipped 2 file(s) that are not images (b.gif, notes.txt)' in capsys.readouterr().out
    assert main(['infer', '--model', 'srresnet-small-baseline', '--input', str(tmp_path / 'lr' / 'a.png'),
                 '--output', str(tmp_path / 'o2')]) == 2
    assert capsys.readouterr().err.strip() == f'gsr: error: {tmp_path / "lr" / "a.png"} is a file: give the folder ' \
                                              'that holds the images'

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(infer, 'main', interrupted)
    assert main(argv + [str(tmp_path / 'o3')]) == 130
    assert capsys.readouterr().err.strip().startswith('gsr: interrupted: infer stopped')
