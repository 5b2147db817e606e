"""A BasicSR val/test dataset whose LR is made on the fly from HR under one of the eight benchmark settings."""
import os
from typing import Any, Dict

import numpy as np
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from gsr.data.benchmark_degradations import degrade, folder_name, mod_crop, noise_seed
from gsr.utils.image_io import list_images, read_image_uint8_rgb


@DATASET_REGISTRY.register()
class DegradedBenchmarkDataset(data.Dataset):
    """HR folder -> (LR under ``setting``, mod-cropped HR), cached in memory.

    Keys: ``dataroot_gt`` (HR folder), ``setting`` (clean, blur, noise, jpeg, b+n, b+j, n+j, b+n+j),
    ``noise_sigma`` (default 20), ``seed`` (default 0), ``scale`` (set by BasicSR from the top level),
    ``cache`` (default true).
    """

    def __init__(self, opt: Dict[str, Any]):
        super().__init__()
        self.opt = opt
        self.scale = int(opt.get('scale', 4))
        self.setting = opt.get('setting', 'clean')
        self.noise_sigma = float(opt.get('noise_sigma', 20))
        self.seed = int(opt.get('seed', 0))
        folder_name(self.setting, self.noise_sigma)  # validates the setting name
        self.paths = list_images(opt['dataroot_gt'])
        self.cache: Dict[int, Dict[str, Any]] = {}
        self.use_cache = bool(opt.get('cache', True))

    def pair(self, index: int):
        """(LR, HR) as uint8 RGB arrays for image ``index``."""
        path = self.paths[index]
        name = os.path.splitext(os.path.basename(path))[0]
        hr = mod_crop(read_image_uint8_rgb(path), self.scale)
        seed = noise_seed(self.seed, name, self.setting)
        return degrade(hr, self.setting, self.scale, self.noise_sigma, seed), hr

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if index in self.cache:
            return self.cache[index]
        lr, hr = self.pair(index)
        path = self.paths[index]
        lq_path = os.path.join(os.path.dirname(path), 'LR_degra', folder_name(self.setting, self.noise_sigma),
                               os.path.basename(path))
        lq, gt = img2tensor([lr.astype(np.float32) / 255., hr.astype(np.float32) / 255.], bgr2rgb=False)
        item = {'lq': lq, 'gt': gt, 'lq_path': lq_path, 'gt_path': path}
        if self.use_cache:
            self.cache[index] = item
        return item

    def __len__(self) -> int:
        return len(self.paths)
