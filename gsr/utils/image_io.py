"""Reading images robustly: any bit depth and channel count in, float32 BGR [0, 1] out, errors that name the file."""
import os
from typing import List, Tuple

import cv2
import numpy as np
from PIL import Image

from gsr.utils.errors import GsrError

# what PIL raises for a file it cannot read: broken data, or a header that claims more pixels than it will decode
PIL_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


def decode_image(content: bytes, name: str) -> np.ndarray:
    """Decode encoded image bytes to float32 BGR HWC in [0, 1].

    Grayscale is replicated to three channels, alpha is dropped, 16-bit images are scaled by 1/65535.
    """
    if content is None or len(content) == 0:
        raise GsrError(f'{name}: empty image file (0 bytes)')
    try:
        img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. a header that claims more than OpenCV's pixel limit (a decompression bomb)
        reason = next((line.strip() for line in str(e).splitlines() if 'error:' in line), str(e).strip())
        raise GsrError(f'{name}: OpenCV refused to decode it ({reason[:200]})') from e
    if img is None:
        raise GsrError(f'{name}: not a readable image (corrupt or unsupported format)')
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.
    elif img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.
    else:
        img = np.clip(img.astype(np.float32), 0, 1)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def read_image(path: str) -> np.ndarray:
    """Read an image file as float32 BGR HWC in [0, 1] (see ``decode_image``)."""
    if not os.path.isfile(path):
        raise GsrError(f'image not found: {path}')
    with open(path, 'rb') as f:
        return decode_image(f.read(), path)


def read_image_uint8_rgb(path: str) -> np.ndarray:
    """Read an image as uint8 RGB HWC (the benchmark protocol works on 8-bit RGB)."""
    bgr = read_image(path)
    return np.ascontiguousarray((bgr[:, :, ::-1] * 255.).round().clip(0, 255).astype(np.uint8))


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) from an image file's header, without decoding it; an error naming the file otherwise."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except PIL_UNREADABLE as e:
        raise GsrError(f'{path}: not a readable image ({e})') from e


def list_images(folder: str) -> List[str]:
    """Sorted image paths directly in ``folder``; other files are ignored. Errors name the folder."""
    if os.path.isfile(folder):
        raise GsrError(f'{folder} is a file: give the folder that holds the images')
    if not os.path.isdir(folder):
        raise GsrError(f'image folder does not exist: {folder} (see docs/DATASETS.md for how to prepare data)')
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise GsrError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in folder: {folder}')
    return paths


def non_image_files(folder: str) -> List[str]:
    """The visible files of ``folder`` that ``list_images`` leaves out (not images by their extension)."""
    return sorted(f for f in os.listdir(folder) if not f.startswith('.') and not f.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, f)))


def write_image(path: str, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image atomically (format from the extension); the folder is created."""
    from gsr.utils.checkpoint import atomic_write_bytes
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or '.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise GsrError(f'could not encode image for {path}')
    atomic_write_bytes(path, buf.tobytes())
