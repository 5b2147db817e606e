"""HR crops plus one or two independent sets of Real-ESRGAN kernels, for paired (twice-degraded) training."""
import os
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Tuple

import cv2
import numpy as np
import torch
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from gsr.data.kernels import BlurKernelOptions, sample_blur_kernel, sample_final_sinc
from gsr.utils.default_data import resolve_root
from gsr.utils.errors import GsrError
from gsr.utils.image_io import decode_image, list_images, non_image_files
from gsr.utils.options import dataset_options, option


@dataclass
class PairedDegradationOptions:
    """``datasets.train`` keys of ``PairedDegradationDataset`` (kernel defaults: Real-ESRGAN's)."""
    dataroot_gt: str = option(
        '', 'HR folder (required), or an `.lmdb` with `io_backend: {type: lmdb}`, or `embedded:train` / '
        '`embedded:val` (the photographs shipped with scikit-image and matplotlib, written to `~/.cache/gsr` on first '
        'use; `options/tiny/`)')
    meta_info: Optional[str] = option(
        None, 'file listing the images (first token per line, relative to `dataroot_gt`); for LMDB the default is '
        '`<dataroot_gt>/meta_info.txt`')
    crop_pad_size: int = option(400, 'HR is reflect-padded to at least this size and randomly cropped to it '
                                '(Real-ESRGAN)')
    use_hflip: bool = option(True, 'horizontal flips (BasicSR `augment`)')
    use_rot: bool = option(False, 'rotations (BasicSR `augment`)')
    kernel_sets: Literal[1, 2] = option(
        2, 'independent Real-ESRGAN kernel sets per sample; `1` shares the kernels between the two copies '
        '(Simple-Align\'s 2024 code), `2` draws them independently (its current code)')
    skip_bad_images: bool = option(False, 'skip unreadable images with a warning instead of stopping with an error '
                                   'naming the file')
    cache_images: bool = option(
        False, 'keep every decoded HR image in memory after its first read (each data-loader worker holds its own '
        'copy: float32, about 9 MB per 1024x768 image): for small training sets such as SunHays80, where decoding a '
        'whole JPEG per crop costs a tenth of a 2-core training step')
    crops_per_image: int = option(
        1, 'C > 1: each item is C crops of `crop_pad_size` taken independently anywhere in the image, sharing its '
        'kernels (`gt`: (C, 3, S, S)); a LightBSR model with `patches: C` degrades each with the image\'s draws (the '
        'code\'s positives)')
    blur_kernel_size: int = option(21, 'accepted for compatibility with Real-ESRGAN option files; as there, sizes are '
                                   'drawn from 7..21')
    kernel_list: List[str] = option(doc='first blur: the kernel kinds', factory=lambda: BlurKernelOptions().kernel_list)
    kernel_prob: List[float] = option(doc='first blur: their probabilities',
                                      factory=lambda: BlurKernelOptions().kernel_prob)
    sinc_prob: float = option(0.1, 'first blur: probability of a sinc kernel instead')
    blur_sigma: Tuple[float, float] = option((0.2, 3.), 'first blur: the range of the Gaussian kernels\' sigma')
    betag_range: Tuple[float, float] = option((0.5, 4.), 'first blur: generalized Gaussian beta')
    betap_range: Tuple[float, float] = option((1., 2.), 'first blur: plateau beta')
    blur_kernel_size2: int = option(21, 'as `blur_kernel_size`, second blur')
    kernel_list2: List[str] = option(doc='second blur: the kernel kinds',
                                     factory=lambda: BlurKernelOptions().kernel_list)
    kernel_prob2: List[float] = option(doc='second blur: their probabilities',
                                       factory=lambda: BlurKernelOptions().kernel_prob)
    sinc_prob2: float = option(0.1, 'second blur: probability of a sinc kernel instead')
    blur_sigma2: Tuple[float, float] = option((0.2, 1.5), 'second blur: the range of the Gaussian kernels\' sigma')
    betag_range2: Tuple[float, float] = option((0.5, 4.), 'second blur: generalized Gaussian beta')
    betap_range2: Tuple[float, float] = option((1., 2.), 'second blur: plateau beta')
    final_sinc_prob: float = option(0.8, 'probability of the final sinc filter')

    def __post_init__(self):
        if self.crops_per_image < 1:
            raise GsrError(f'crops_per_image must be at least 1, got {self.crops_per_image}')

    def stage(self, suffix: str) -> BlurKernelOptions:
        return BlurKernelOptions(
            kernel_list=getattr(self, f'kernel_list{suffix}'),
            kernel_prob=getattr(self, f'kernel_prob{suffix}'),
            sinc_prob=getattr(self, f'sinc_prob{suffix}'),
            blur_sigma=getattr(self, f'blur_sigma{suffix}'),
            betag_range=getattr(self, f'betag_range{suffix}'),
            betap_range=getattr(self, f'betap_range{suffix}'))


def crop_or_pad(img: np.ndarray, size: int) -> np.ndarray:
    """Real-ESRGAN's crop/pad: reflect-pad an image smaller than ``size``, then take a random ``size`` crop."""
    h, w = img.shape[:2]
    if h < size or w < size:
        img = cv2.copyMakeBorder(img, 0, max(0, size - h), 0, max(0, size - w), cv2.BORDER_REFLECT_101)
        h, w = img.shape[:2]
    top, left = random.randint(0, h - size), random.randint(0, w - size)
    return img[top:top + size, left:left + size]


@DATASET_REGISTRY.register()
class PairedDegradationDataset(data.Dataset):
    """HR crops with ``kernel_sets`` independent Real-ESRGAN kernel sets per sample.

    With ``kernel_sets: 2`` the model degrades each crop twice with independent kernels (Simple-Align's current
    code); with ``kernel_sets: 1`` both copies share the kernels (its 2024 code). HR comes from a folder, a
    ``meta_info`` list, or an LMDB (``io_backend: {type: lmdb}``) through BasicSR's ``FileClient``.

    Returns ``gt`` (3, S, S) RGB — with ``crops_per_image`` C > 1, (C, 3, S, S): C crops taken independently anywhere
    in the image, which share its kernels (the positives of a contrastive degradation encoder, as LightBSR's code
    cuts them) —, ``kernel1``/``kernel2``/``sinc_kernel`` (K, 21, 21), their label vectors
    ``kernel1_info``/``kernel2_info`` (K, 7) and ``sinc_info`` (K, 2), and ``gt_path``.
    """
    OPTIONS = PairedDegradationOptions

    def __init__(self, opt: Dict[str, Any]):
        super().__init__()
        self.opt = opt
        self.options = dataset_options(self.OPTIONS, opt)
        self.io_backend = dict(opt.get('io_backend') or {'type': 'disk'})
        self.file_client = None
        self.keys = self._list_keys()
        self.decoded: Dict[str, np.ndarray] = {}  # ``cache_images``: key -> decoded image, filled on first read

    def _list_keys(self) -> List[str]:
        self.options.dataroot_gt = resolve_root(self.options.dataroot_gt)
        root, meta = self.options.dataroot_gt, self.options.meta_info
        if not root or not os.path.exists(root):
            raise GsrError(f'dataroot_gt does not exist: {root!r} — prepare it as described in docs/DATASETS.md')
        if self.io_backend['type'] == 'lmdb':
            meta = meta or os.path.join(root, 'meta_info.txt')
            self.io_backend.update(db_paths=[root], client_keys=['gt'])
        if meta:
            if not os.path.isfile(meta):
                raise GsrError(f'meta_info file not found: {meta}')
            with open(meta) as f:
                keys = [line.split(' ')[0].strip() for line in f if line.strip()]
            if self.io_backend['type'] == 'lmdb':
                keys = [os.path.splitext(k)[0] for k in keys]
            else:
                keys = [os.path.join(root, k) for k in keys]
            if not keys:
                raise GsrError(f'meta_info file lists no images: {meta}')
            return keys
        ignored = non_image_files(root)
        if ignored:
            get_root_logger().warning(f'{root}: ignoring {len(ignored)} non-image file(s), e.g. {ignored[0]}')
        return list_images(root)

    def _read(self, key: str) -> np.ndarray:
        if key in self.decoded:
            return self.decoded[key]
        img = self._decode(key)
        if self.options.cache_images:
            self.decoded[key] = img
        return img

    def _decode(self, key: str) -> np.ndarray:
        if self.file_client is None:  # opened lazily, in the worker process that reads
            backend = dict(self.io_backend)
            self.file_client = FileClient(backend.pop('type'), **backend)
        try:
            content = self.file_client.get(key, 'gt')
        except FileNotFoundError as e:
            raise GsrError(f'training image not found: {key}') from e
        if content is None:  # the LMDB backend returns None for a missing key
            raise GsrError(f'LMDB {self.options.dataroot_gt}: key {key!r} (listed in meta_info) is missing')
        return decode_image(content, key)

    def _read_with_skip(self, index: int) -> Tuple[np.ndarray, str]:
        for attempt in range(len(self.keys)):
            key = self.keys[(index + attempt) % len(self.keys)]
            try:
                return self._read(key), key
            except GsrError as e:
                if not self.options.skip_bad_images:
                    raise
                get_root_logger().warning(f'skipping unreadable training image: {e}')
        raise GsrError(f'no readable image in {self.options.dataroot_gt}')

    def _kernels(self) -> Dict[str, torch.Tensor]:
        o = self.options
        sets = [(sample_blur_kernel(o.stage('')), sample_blur_kernel(o.stage('2')),
                 sample_final_sinc(o.final_sinc_prob)) for _ in range(o.kernel_sets)]
        out = {}
        for i, name in enumerate(('kernel1', 'kernel2', 'sinc_kernel')):
            info_name = 'sinc_info' if name == 'sinc_kernel' else f'{name}_info'
            out[name] = torch.from_numpy(np.stack([s[i][0] for s in sets]))
            out[info_name] = torch.from_numpy(np.stack([s[i][1] for s in sets]))
        return out

    def __getitem__(self, index: int) -> Dict[str, Any]:
        img, key = self._read_with_skip(index)
        # crop, then flip and rotate the crop (the same distribution as Real-ESRGAN's flip-then-crop): BasicSR's
        # ``augment`` flips in place, which must not reach a cached image, and a crop is cheaper to flip
        o = self.options
        crops = [img2tensor([augment(crop_or_pad(img, o.crop_pad_size).copy(), o.use_hflip, o.use_rot)],
                            bgr2rgb=True, float32=True)[0] for _ in range(o.crops_per_image)]
        item = {'gt': crops[0] if o.crops_per_image == 1 else torch.stack(crops), 'gt_path': key}
        item.update(self._kernels())
        return item

    def __len__(self) -> int:
        return len(self.keys)
