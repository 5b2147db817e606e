"""A BasicSR val/test dataset whose LR is made on the fly from HR under one of the eight benchmark settings."""
import os
from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from gsr.data.eval_protocol import degrade_file, folder_name
from gsr.utils.default_data import resolve_root
from gsr.utils.image_io import list_images
from gsr.utils.options import dataset_options, option


@dataclass
class DegradedBenchmarkOptions:
    """``datasets.val*`` / ``datasets.test_*`` keys of ``DegradedBenchmarkDataset``."""
    dataroot_gt: str = option('', 'HR folder (required); images are mod-cropped to the scale')
    setting: str = option('clean', '`clean`, `blur`, `noise`, `jpeg`, `b+n`, `b+j`, `n+j`, `b+n+j` (Kong et al. '
                          'protocol)')
    noise_sigma: float = option(20., 'Gaussian noise sigma in 0-255 units (published noise-only sets before mid-2024 '
                                'used 40)')
    seed: int = option(0, 'noise seed; the noise of an image depends only on (seed, image name, setting)')
    cache: bool = option(True, 'keep generated pairs in memory')


@DATASET_REGISTRY.register()
class DegradedBenchmarkDataset(data.Dataset):
    """HR folder -> (LR under ``setting``, mod-cropped HR), cached in memory (keys: ``DegradedBenchmarkOptions``;
    ``scale`` comes from the top level of the option file)."""
    OPTIONS = DegradedBenchmarkOptions

    def __init__(self, opt: Dict[str, Any]):
        super().__init__()
        self.opt = opt
        o = dataset_options(self.OPTIONS, opt)
        self.scale = int(opt.get('scale', 4))
        self.setting, self.noise_sigma, self.seed = o.setting, o.noise_sigma, o.seed
        folder_name(self.setting, self.noise_sigma)  # validates the setting name
        self.paths = list_images(resolve_root(o.dataroot_gt))
        self.cache: Dict[int, Dict[str, Any]] = {}
        self.use_cache = o.cache

    def pair(self, index: int):
        """(LR, HR) as uint8 RGB arrays for image ``index``."""
        hr, lrs = degrade_file(self.paths[index], [self.setting], self.scale, self.noise_sigma, self.seed)
        return lrs[self.setting], hr

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if index in self.cache:
            return self.cache[index]
        lr, hr = self.pair(index)
        path = self.paths[index]
        lq_path = os.path.join(
            os.path.dirname(path), 'LR_degra', folder_name(self.setting, self.noise_sigma), os.path.basename(path))
        lq, gt = img2tensor([lr.astype(np.float32) / 255., hr.astype(np.float32) / 255.], bgr2rgb=False)
        item = {'lq': lq, 'gt': gt, 'lq_path': lq_path, 'gt_path': path}
        if self.use_cache:
            self.cache[index] = item
        return item

    def __len__(self) -> int:
        return len(self.paths)
