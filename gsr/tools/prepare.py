"""``gsr prepare``: training-data preparation.

``gsr prepare subimages --input DIR --output DIR``: the DIV2K sub-image convention (crop 480, step 240,
threshold 0; BasicSR ``extract_subimages.py``) with a process pool and a progress bar.
``gsr prepare lmdb --input DIR --output X.lmdb``: an LMDB in BasicSR's format (keys = file names without
extension, percent-encoded so that any name is one ASCII token without dots; ``meta_info.txt`` with
``<key>.png (h,w,c) <compress>``, the shape of the stored image), its map size computed from all images;
``gsr_sources.json`` records the sha256 of each image's source, so a rerun packs a changed source again.
``gsr prepare kernel-pca --output kernel_pca.pth``: the 15-d PCA basis of 21 x 21 Gaussian kernels that
LightBSR's degradation prior projects kernels on (``gsr/data/kernel_pca.py``), computed once from a seeded draw.
Every source image is decoded completely before anything is written from it: a truncated or unreadable file is
one error that names it.
Both are resumable: finished crops / keys are skipped when the command is run again, and every file is
written atomically.
"""
import argparse
import io
import json
import os
import re
from multiprocessing import Pool
from typing import Dict, List, Optional, Tuple
from urllib.parse import quote

import cv2
import numpy as np
from basicsr.utils.lmdb_util import read_img_worker
from PIL import Image
from tqdm import tqdm

from gsr.utils.checkpoint import atomic_write_bytes, atomic_write_text, file_sha256
from gsr.utils.errors import GsrError, check_at_least
from gsr.utils.image_io import PIL_UNREADABLE, list_images

LR_SUFFIX = re.compile(r'x[2348]$')
COMMIT_EVERY = 500
SOURCES = 'gsr_sources.json'  # in the LMDB folder: the sha256 of the source file of each stored image


# ------------------------------------------------------------------------------------------- sub-images
def crop_starts(length: int, crop: int, step: int, thresh: int) -> List[int]:
    """Top-left offsets along one axis (BasicSR's rule: add a last crop flush with the border when the
    remainder exceeds ``thresh``); an image shorter than ``crop`` gives one crop of its whole length."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def subimage_names(path: str, shape: Tuple[int, int], crop: int, step: int, thresh: int) -> List[Tuple[str, int, int]]:
    name = LR_SUFFIX.sub('', os.path.splitext(os.path.basename(path))[0])
    h, w = shape
    boxes = [(y, x) for y in crop_starts(h, crop, step, thresh) for x in crop_starts(w, crop, step, thresh)]
    return [(f'{name}_s{i:03d}.png', y, x) for i, (y, x) in enumerate(boxes, 1)]


def check_complete(path: str) -> Tuple[int, int, int]:
    """(h, w, bands) of an image that decodes completely (PIL refuses truncated files, which OpenCV pads with grey
    rows); an error naming the file otherwise."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.size[1], im.size[0], len(im.getbands())
    except PIL_UNREADABLE as e:
        raise GsrError(f'{path}: not a complete, readable image ({e})') from e


def _crop_one(job: Tuple[str, str, int, int, int, int]) -> int:
    path, output, crop, step, thresh, level = job
    h, w, _ = check_complete(path)
    todo = [
        n for n in subimage_names(path, (h, w), crop, step, thresh) if not os.path.isfile(os.path.join(output, n[0]))
    ]
    if not todo:
        return 0
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise GsrError(f'{path}: not a readable image (corrupt or unsupported format)')
    for name, y, x in todo:
        ok, buf = cv2.imencode('.png', np.ascontiguousarray(img[y:y + crop, x:x + crop]),
                               [cv2.IMWRITE_PNG_COMPRESSION, level])
        atomic_write_bytes(os.path.join(output, name), buf.tobytes())
    return len(todo)


def extract_subimages(input_dir: str,
                      output: str,
                      crop: int = 480,
                      step: int = 240,
                      thresh: int = 0,
                      workers: int = 4,
                      compress_level: int = 3,
                      progress: bool = True) -> int:
    """Crop every image of ``input_dir`` into ``output``; returns the number of crops written now."""
    paths = list_images(input_dir)
    os.makedirs(output, exist_ok=True)
    jobs = [(p, output, crop, step, thresh, compress_level) for p in paths]
    written = 0
    with Pool(max(1, workers)) as pool:
        for n in tqdm(
                pool.imap_unordered(_crop_one, jobs), total=len(jobs), desc='subimages', unit='img',
                disable=not progress):
            written += n
    return written


# ------------------------------------------------------------------------------------------- LMDB
def lmdb_key(path: str) -> str:
    """The file name without extension, percent-encoded (spaces, non-ASCII and dots too): BasicSR's readers take
    the first space-separated token of ``meta_info.txt`` and cut keys at the first dot."""
    return quote(os.path.splitext(os.path.basename(path))[0], safe='').replace('.', '%2E')


def lmdb_keys(paths: List[str]) -> Dict[str, str]:
    """key (``lmdb_key``) -> path; duplicate keys are an error naming both files."""
    keys: Dict[str, str] = {}
    for path in paths:
        key = lmdb_key(path)
        if key in keys:
            raise GsrError(f'duplicate LMDB key {key!r}: {keys[key]} and {path}')
        keys[key] = path
    return keys


def map_size_for(paths: List[str]) -> int:
    """Map size from every image's header: 8 bytes a pixel (RGBA at 16 bits, the most a stored PNG holds), +10%
    and 64 MiB of headroom. The map is reserved address space, not disk."""
    total = 0
    for path in paths:
        try:
            with Image.open(path) as im:
                total += im.size[0] * im.size[1] * 8
        except PIL_UNREADABLE as e:
            raise GsrError(f'{path}: not a readable image ({e})') from e
    return int(total * 1.1) + (64 << 20)


def make_lmdb(input_dir: str,
              output: str,
              compress_level: int = 1,
              workers: int = 4,
              verify: bool = True,
              progress: bool = True) -> int:
    """Write (or complete) ``output``; returns the number of keys written now."""
    import lmdb
    if not output.endswith('.lmdb'):
        raise GsrError(f'LMDB output must end with .lmdb: {output}')
    keys = lmdb_keys(list_images(input_dir))
    sources = {key: file_sha256(path) for key, path in keys.items()}
    map_size = map_size_for(list(keys.values()))
    # the workers are forked before the environment is opened: an LMDB environment must not cross a fork (LMDB's
    # caveats); opened first, a later commit crashed the process (a segfault in the test suite)
    with Pool(max(1, workers)) as pool:
        env = lmdb.open(output, map_size=map_size)
        try:
            return _fill_lmdb(env, pool, output, keys, sources, compress_level, verify, progress)
        finally:
            env.close()


def _fill_lmdb(env, pool, output: str, keys: Dict[str, str], sources: Dict[str, str], compress_level: int,
               verify: bool, progress: bool) -> int:
    with env.begin(write=False) as txn:
        stored = {k.decode() for k in txn.cursor().iternext(keys=True, values=False)}
    packed_from = packed_sources(output)
    done = {key for key in stored if packed_from.get(key) == sources.get(key)}  # a changed source is packed again
    todo = [(path, key, compress_level) for key, path in keys.items() if key not in done]
    shapes: Dict[str, Tuple[int, ...]] = {}
    txn = env.begin(write=True)
    for i, (key, data, shape) in enumerate(
            tqdm(pool.imap(_read_worker, todo), total=len(todo), desc='lmdb', unit='img', disable=not progress)):
        txn.put(key.encode('ascii'), data)
        shapes[key] = shape
        if (i + 1) % COMMIT_EVERY == 0:
            txn.commit()
            txn = env.begin(write=True)
    txn.commit()
    with env.begin(write=False) as txn:
        for key in done & set(keys):
            shapes[key] = stored_shape(txn.get(key.encode('ascii')))
    lines = [f'{k}.png ({",".join(map(str, shapes[k]))}) {compress_level}\n' for k in sorted(keys)]
    atomic_write_text(os.path.join(output, 'meta_info.txt'), ''.join(lines))
    atomic_write_text(os.path.join(output, SOURCES), json.dumps(dict(packed_from, **sources), indent=1, sort_keys=True))
    if verify:
        verify_lmdb(env, {k: shapes[k] for k in keys})
    return len(todo)


def packed_sources(output: str) -> Dict[str, str]:
    """key -> sha256 of the source file each stored image was packed from (``SOURCES``; empty for an LMDB that
    gsr did not write, whose images are then all packed again: their sources are unknown)."""
    path = os.path.join(output, SOURCES)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return dict(json.load(f))
    except (ValueError, TypeError) as e:
        raise GsrError(f'{path}: not the JSON gsr wrote ({e}); delete it to pack every image again') from e


def stored_shape(data: bytes) -> Tuple[int, int, int]:
    """(h, w, c) of a stored PNG, from its header: what training decodes, whatever the source file was."""
    with Image.open(io.BytesIO(data)) as im:
        return im.size[1], im.size[0], len(im.getbands())


def _read_worker(job: Tuple[str, str, int]):
    path, key, level = job
    check_complete(path)
    key, data, _ = read_img_worker(path, key, level)
    return key, data, stored_shape(data)


def verify_lmdb(env, shapes: Dict[str, Tuple[int, ...]]) -> None:
    """Every key is present and decodes to its recorded shape."""
    with env.begin(write=False) as txn:
        for key, shape in shapes.items():
            data = txn.get(key.encode('ascii'))
            img = None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            got = None if img is None else (img.shape if img.ndim == 3 else img.shape + (1, ))
            if got != tuple(shape):
                raise GsrError(f'LMDB verification failed for key {key!r}: expected shape {shape}, got {got}')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='gsr prepare', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='what', required=True)
    sp = sub.add_parser('subimages', help='crop HR images into overlapping sub-images')
    sp.add_argument('--input', required=True)
    sp.add_argument('--output', required=True)
    sp.add_argument('--crop-size', type=int, default=480)
    sp.add_argument('--step', type=int, default=240)
    sp.add_argument('--thresh-size', type=int, default=0)
    sp.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    sp.add_argument('--compression-level', type=int, default=3)
    lp = sub.add_parser('lmdb', help='pack a folder of images into an LMDB')
    lp.add_argument('--input', required=True)
    lp.add_argument('--output', required=True)
    lp.add_argument('--compression-level', type=int, default=1)
    lp.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    lp.add_argument('--no-verify', action='store_true')
    kp = sub.add_parser('kernel-pca', help='the kernel PCA basis of the LightBSR degradation prior')
    kp.add_argument('--output', required=True, help='file to write (e.g. experiments/kernel_pca.pth)')
    kp.add_argument('--samples', type=int, default=5000)
    kp.add_argument('--kernel-size', type=int, default=21)
    kp.add_argument('--components', type=int, default=15)
    kp.add_argument('--l-max', type=float, default=10.0, help='largest covariance eigenvalue drawn')
    kp.add_argument('--seed', type=int, default=0)
    kp.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    for flag, minimum in {'kernel-pca': (('--samples', 1), ('--components', 1), ('--kernel-size', 3)),
                          'subimages': (('--crop-size', 1), ('--step', 1), ('--thresh-size', 0), ('--workers', 1)),
                          'lmdb': (('--workers', 1), )}[args.what]:
        check_at_least(flag, getattr(args, flag[2:].replace('-', '_')), minimum)
    if args.what == 'kernel-pca':
        check_at_least('--l-max', args.l_max, 0, exclusive=True)
        if args.kernel_size % 2 == 0 or args.components > args.kernel_size**2:
            raise GsrError(f'--kernel-size must be odd and --components at most its square, got {args.kernel_size} '
                           f'and {args.components}')
        from gsr.data.kernel_pca import write_kernel_pca
        if os.path.exists(args.output) and not args.overwrite:
            raise GsrError(f'{args.output} exists: choose another --output or pass --overwrite')
        write_kernel_pca(args.output, args.samples, args.kernel_size, args.components, args.l_max, args.seed)
        print(f'wrote {args.output} ({args.components} components of {args.kernel_size}x{args.kernel_size} '
              f'kernels, {args.samples} samples, seed {args.seed})')
        return 0
    if args.what == 'subimages':
        n = extract_subimages(args.input, args.output, args.crop_size, args.step, args.thresh_size, args.workers,
                              args.compression_level)
        print(f'wrote {n} sub-images to {args.output}')
    else:
        n = make_lmdb(args.input, args.output, args.compression_level, args.workers, not args.no_verify)
        print(f'wrote {n} images to {args.output} (meta_info.txt beside them)')
    return 0
