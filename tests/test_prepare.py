"""``gsr prepare subimages``: the DIV2K sub-image convention on real images, resumable, through the CLI."""
import os

import cv2
import numpy as np
import pytest

from gsr.tools.prepare import crop_starts, extract_subimages, subimage_names
from gsr.utils.image_io import list_images
from tests.conftest import run_gsr


def test_crop_starts_follow_basicsr():
    # BasicSR extract_subimages: range(0, h - crop + 1, step), plus a border crop when the rest exceeds thresh
    assert crop_starts(1020, 480, 240, 0) == [0, 240, 480, 540]
    assert crop_starts(960, 480, 240, 0) == [0, 240, 480]
    assert crop_starts(1000, 480, 240, 100) == [0, 240, 480]  # 40 px left over <= thresh: no extra crop
    assert crop_starts(300, 480, 240, 0) == [0]  # smaller than the crop: one crop of the whole side


def test_lr_suffix_is_stripped_and_names_are_numbered():
    names = subimage_names('/x/0001x4.png', (600, 600), 480, 240, 0)
    assert [n for n, _, _ in names] == ['0001_s001.png', '0001_s002.png', '0001_s003.png', '0001_s004.png']


def test_subimages_are_exact_crops_and_a_rerun_skips_them(tmp_path, photo_folder):
    out = tmp_path / 'sub'
    written = extract_subimages(photo_folder, str(out), crop=120, step=60, workers=2, progress=False)
    first = list_images(photo_folder)[0]
    img = cv2.imread(first, cv2.IMREAD_UNCHANGED)
    stem = os.path.splitext(os.path.basename(first))[0]
    expected = subimage_names(first, img.shape[:2], 120, 60, 0)
    assert written == sum(
        len(subimage_names(p,
                           cv2.imread(p).shape[:2], 120, 60, 0)) for p in list_images(photo_folder))
    for name, y, x in expected:
        assert np.array_equal(cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED), img[y:y + 120, x:x + 120])
    os.remove(out / expected[0][0])
    assert extract_subimages(photo_folder, str(out), crop=120, step=60, workers=1, progress=False) == 1
    assert not [f for f in os.listdir(out) if f.endswith('.tmp')] and stem in expected[0][0]


@pytest.mark.slow
def test_prepare_cli_runs_and_reports(tmp_path, photo_folder):
    result = run_gsr([
        'prepare', 'subimages', '--input', photo_folder, '--output',
        str(tmp_path / 's'), '--crop-size', '200', '--step', '200', '--workers', '1'
    ],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'sub-images to' in result.stdout and len(os.listdir(tmp_path / 's')) > 0
    missing = run_gsr(['prepare', 'lmdb', '--input',
                       str(tmp_path / 'nope'), '--output',
                       str(tmp_path / 'x.lmdb')],
                      cwd=tmp_path)
    assert missing.returncode == 2 and 'image folder does not exist' in missing.stderr


def test_lmdb_refuses_truncated_images_and_round_trips_any_name(tmp_path, photo_folder):
    """A truncated JPEG is named, not packed with grey rows; names with spaces, dots and non-ASCII letters are
    keys training can read; a rerun over palette and gray+alpha PNGs keeps meta_info.txt equal to the stored data."""
    import pytest
    from PIL import Image

    from gsr.data.paired_degradation_dataset import PairedDegradationDataset
    from gsr.tools.prepare import make_lmdb
    from gsr.utils.errors import GsrError
    photo = cv2.imread(list_images(photo_folder)[0])[:96, :96]
    bad = tmp_path / 'bad'
    bad.mkdir()
    cv2.imwrite(str(bad / 'cut.jpg'), photo)
    (bad / 'cut.jpg').write_bytes((bad / 'cut.jpg').read_bytes()[:2000])
    with pytest.raises(GsrError, match='cut.jpg: not a complete, readable image'):
        make_lmdb(str(bad), str(tmp_path / 'bad.lmdb'), workers=1, progress=False)

    src = tmp_path / 'src'
    src.mkdir()
    cv2.imwrite(str(src / 'a b.png'), photo)
    cv2.imwrite(str(src / 'Zürich v1.2.png'), photo)
    Image.fromarray(photo[..., 0]).convert('P').save(src / 'palette.png')
    Image.fromarray(photo[..., 0]).convert('LA').save(src / 'gray_alpha.png')
    out = str(tmp_path / 'hr.lmdb')
    assert make_lmdb(str(src), out, workers=1, progress=False) == 4
    meta = open(os.path.join(out, 'meta_info.txt')).read()
    assert make_lmdb(str(src), out, workers=1, progress=False) == 0
    assert open(os.path.join(out, 'meta_info.txt')).read() == meta  # the rerun does not rewrite it differently
    ds = PairedDegradationDataset({'name': 'train', 'dataroot_gt': out, 'io_backend': {'type': 'lmdb'},
                                   'crop_pad_size': 64})
    assert len(ds) == 4 and all(ds[i]['gt'].shape == (3, 64, 64) for i in range(4))
    for line in meta.splitlines():
        key, shape = line.split(' ')[:2]
        stored = ds._read(key[:-len('.png')])
        assert key.isascii() and key.count('.') == 1 and stored.shape[:2] == (96, 96)
        assert shape == '(96,96,{})'.format(4 if key.startswith('gray_alpha') else 3)


def test_lmdb_rerun_packs_a_changed_source_again(tmp_path, photo_folder):
    """Review case c4: keys were skipped by name, so a source replaced under the same name kept its old image."""
    from gsr.tools.prepare import make_lmdb, stored_shape
    photo = cv2.imread(list_images(photo_folder)[0])
    src = tmp_path / 'src'
    src.mkdir()
    cv2.imwrite(str(src / 'my photo.png'), photo[:96, :96])
    cv2.imwrite(str(src / 'other.png'), photo[:32, :32])
    out = str(tmp_path / 'hr.lmdb')
    assert make_lmdb(str(src), out, workers=1, progress=False) == 2
    cv2.imwrite(str(src / 'my photo.png'), cv2.resize(photo, (64, 48)))
    assert make_lmdb(str(src), out, workers=1, progress=False) == 1  # only the changed one
    meta = open(os.path.join(out, 'meta_info.txt')).read()
    assert 'my%20photo.png (48,64,3) 1' in meta and 'other.png (32,32,3) 1' in meta
    import lmdb
    with lmdb.open(out, readonly=True, lock=False) as env, env.begin() as txn:
        assert stored_shape(txn.get(b'my%20photo')) == (48, 64, 3)
    assert make_lmdb(str(src), out, workers=1, progress=False) == 0
