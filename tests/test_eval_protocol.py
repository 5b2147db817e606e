"""The eight benchmark settings on real images: the protocol's operations, determinism, the written layout."""
import hashlib
import io
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from gsr.data import eval_protocol as bd
from gsr.data.degraded_benchmark_dataset import DegradedBenchmarkDataset
from gsr.tools.degrade import write_benchmark_sets
from gsr.utils.errors import GsrError
from gsr.utils.image_io import list_images, read_image_uint8_rgb


@pytest.fixture(scope='module')
def hr(photo_folder):
    return bd.mod_crop(read_image_uint8_rgb(list_images(photo_folder)[0]), 4)


def test_clean_is_pil_bicubic(hr):
    h, w = hr.shape[:2]
    expected = np.asarray(Image.fromarray(hr).resize((w // 4, h // 4), Image.BICUBIC))
    assert np.array_equal(bd.degrade(hr, 'clean'), expected)


def test_blur_noise_jpeg_follow_the_protocol(hr):
    h, w = hr.shape[:2]
    blurred = cv2.GaussianBlur(hr, (21, 21), 2)
    lr = np.asarray(Image.fromarray(blurred).resize((w // 4, h // 4), Image.BICUBIC))
    assert np.array_equal(bd.degrade(hr, 'blur'), lr)
    noisy = bd.degrade(hr, 'noise', seed=5)
    clean = bd.degrade(hr, 'clean')
    mid = (clean > 80) & (clean < 175)  # far from 0 and 255, where clipping would bias the statistics
    diff = (noisy.astype(float) - clean)[mid]
    assert 19 < diff.std() < 21  # sigma 20 on the 0-255 scale
    assert abs(diff.mean() + 0.5) < 0.4  # truncation to 8 bits (not rounding) shifts by -0.5 on average
    buf = io.BytesIO()
    Image.fromarray(clean).save(buf, format='JPEG', quality=50)
    assert np.array_equal(bd.degrade(hr, 'jpeg'), np.asarray(Image.open(buf).convert('RGB')))


def test_noise_is_deterministic_per_image_and_setting(hr):
    a = bd.degrade(hr, 'b+n+j', seed=bd.noise_seed(0, 'img', 'b+n+j'))
    b = bd.degrade(hr, 'b+n+j', seed=bd.noise_seed(0, 'img', 'b+n+j'))
    c = bd.degrade(hr, 'b+n+j', seed=bd.noise_seed(1, 'img', 'b+n+j'))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert bd.noise_seed(0, 'img', 'noise') == 1466522880  # crc32: the same in every process and on every machine


def test_folder_names_match_the_published_layout():
    names = [bd.folder_name(s) for s in bd.SETTINGS]
    assert names == [
        'bicubic', 'blur2_bicubic', 'bicubic_noise20', 'bicubic_jepg50', 'blur2_bicubic_noise20',
        'blur2_bicubic_jepg50', 'bicubic_noise20_jepg50', 'blur2_bicubic_noise20_jepg50'
    ]
    assert bd.folder_name('noise', 40) == 'bicubic_noise40'
    with pytest.raises(GsrError, match='unknown degradation setting'):
        bd.folder_name('rain')


def test_written_sets_are_bit_identical_across_runs(tmp_path, photo_folder):
    first = write_benchmark_sets(photo_folder, str(tmp_path / 'a'), ['all'], progress=False)
    second = write_benchmark_sets(photo_folder, str(tmp_path / 'b'), ['all'], progress=False)
    m1, m2 = json.load(open(first)), json.load(open(second))
    assert m1['files'] == m2['files'] and len(m1['files']) == len(list_images(photo_folder)) * 9
    for rel, digest in m1['files'].items():
        assert hashlib.sha256(open(tmp_path / 'a' / rel, 'rb').read()).hexdigest() == digest
    assert sorted(os.listdir(tmp_path / 'a' / 'LR_degra')) == sorted(bd.folder_name(s) for s in bd.SETTINGS)


def test_existing_output_is_kept_and_a_failed_run_leaves_nothing(tmp_path, photo_folder):
    out = tmp_path / 'set'
    write_benchmark_sets(photo_folder, str(out), ['clean'], progress=False)
    with pytest.raises(GsrError, match='already exists'):
        write_benchmark_sets(photo_folder, str(out), ['clean'], progress=False)
    bad = tmp_path / 'bad_hr'
    bad.mkdir()
    (bad / 'a.png').write_bytes(open(list_images(photo_folder)[0], 'rb').read())
    (bad / 'b.png').write_bytes(b'not an image')
    with pytest.raises(GsrError, match='b.png'):
        write_benchmark_sets(str(bad), str(tmp_path / 'new'), ['clean'], progress=False)
    assert sorted(os.listdir(tmp_path)) == ['bad_hr', 'set']


def test_dataset_matches_the_written_files(tmp_path, photo_folder):
    write_benchmark_sets(photo_folder, str(tmp_path / 's'), ['b+n'], progress=False)
    ds = DegradedBenchmarkDataset({'dataroot_gt': photo_folder, 'setting': 'b+n', 'scale': 4})
    item = ds[0]
    name = os.path.basename(ds.paths[0])
    written = read_image_uint8_rgb(str(tmp_path / 's' / 'LR_degra' / 'blur2_bicubic_noise20' / name))
    assert np.array_equal((item['lq'].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), written)
    assert item['gt'].shape[1] == item['lq'].shape[1] * 4
