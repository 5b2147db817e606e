"""The embedded default data: real photographs shipped with scikit-image and matplotlib, written as PNGs on first use.

Training: astronaut, chelsea, rocket, hubble_deep_field, immunohistochemistry, retina, the motorcycle pair.
Validation (held out): coffee, grace_hopper. The cache folder is ``$GSR_CACHE`` or ``~/.cache/gsr``.
"""
import os
from typing import Callable, Dict

import cv2
import numpy as np

from gsr.utils.image_io import write_image


def _skimage(name: str) -> Callable[[], np.ndarray]:

    def load() -> np.ndarray:
        from skimage import data
        return getattr(data, name)()

    return load


def _motorcycle(side: int) -> Callable[[], np.ndarray]:

    def load() -> np.ndarray:
        from skimage import data
        return data.stereo_motorcycle()[side]

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    path = cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


TRAIN: Dict[str, Callable[[], np.ndarray]] = {
    'astronaut': _skimage('astronaut'),
    'chelsea': _skimage('chelsea'),
    'rocket': _skimage('rocket'),
    'hubble_deep_field': _skimage('hubble_deep_field'),
    'immunohistochemistry': _skimage('immunohistochemistry'),
    'retina': _skimage('retina'),
    'motorcycle_left': _motorcycle(0),
    'motorcycle_right': _motorcycle(1),
}
VAL: Dict[str, Callable[[], np.ndarray]] = {'coffee': _skimage('coffee'), 'grace_hopper': _grace_hopper}


def cache_dir() -> str:
    return os.environ.get('GSR_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'gsr')


EMBEDDED = 'embedded:'


def resolve_root(root: str) -> str:
    """``embedded:train`` / ``embedded:val`` (the option files under ``options/tiny/``) -> the folder of the embedded
    photographs, written on first use; any other root is returned as it is."""
    if not isinstance(root, str) or not root.startswith(EMBEDDED):
        return root
    split = root[len(EMBEDDED):]
    if split not in ('train', 'val'):
        from gsr.utils.errors import GsrError
        raise GsrError(f'{root!r}: the embedded data sets are embedded:train and embedded:val')
    return materialize()[split]


def materialize(root: str = None) -> Dict[str, str]:
    """Write the default images (once) and return ``{'train': folder, 'val': folder}``."""
    root = root or os.path.join(cache_dir(), 'default_data')
    folders = {}
    for split, images in (('train', TRAIN), ('val', VAL)):
        folder = os.path.join(root, split)
        os.makedirs(folder, exist_ok=True)
        for name, load in images.items():
            path = os.path.join(folder, f'{name}.png')
            if not os.path.isfile(path):
                write_image(path, load())
        folders[split] = folder
    return folders
