"""The kernel PCA code of SRMD / LightBSR's degradation prior (``shared/research/lightbsr_and_savl.md`` A.3.1).

The basis: ``samples`` random anisotropic Gaussian kernels with theta ~ U[0, pi] and covariance eigenvalues
``l1 = 0.1 + l_max U``, ``l2 = 0.1 + (l1 - 0.1) U`` (variances, so sigma <= about 3.2 at ``l_max = 10``), flattened in
column-major (Fortran) order; the basis is the top ``components`` eigenvectors of ``K K^T`` (K: one kernel per
column, not centred), a (size^2, components) matrix. Kernels are projected flattened row-major (the trainers'
``view(b, -1)``): LightBSR's code uses both conventions and so does this module, so that a prior computed here is the
code's. ``gsr prepare kernel-pca`` writes the basis once; option files point to the file.
"""
import math
import os
from typing import Any, Dict

import torch

from gsr.data.classic_degrader import gaussian_kernels
from gsr.utils.checkpoint import atomic_torch_save
from gsr.utils.errors import GsrError


def srmd_kernels(samples: int, size: int = 21, l_max: float = 10.0, seed: int = 0) -> torch.Tensor:
    """(samples, size, size) kernels drawn as the module docstring says, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(3, samples, generator=generator, dtype=torch.float64)
    theta = u[0] * math.pi
    l1 = 0.1 + l_max * u[1]
    l2 = 0.1 + (l1 - 0.1) * u[2]
    return gaussian_kernels(l1.sqrt(), l2.sqrt(), theta, size)


def kernel_pca_basis(kernels: torch.Tensor, components: int = 15) -> torch.Tensor:
    """(size^2, components): the leading eigenvectors of ``K K^T`` over Fortran-order flattened kernels."""
    k = kernels.double().transpose(1, 2).reshape(kernels.shape[0], -1).t()  # transpose: Fortran-order flattening
    values, vectors = torch.linalg.eigh(k @ k.t())
    return vectors[:, values.argsort(descending=True)[:components]].float()


def project(kernels: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(B, components) PCA code of (B, size, size) kernels, flattened row-major as LightBSR's trainers do."""
    return kernels.reshape(kernels.shape[0], -1) @ basis.to(kernels)


def write_kernel_pca(path: str, samples: int = 5000, size: int = 21, components: int = 15, l_max: float = 10.0,
                     seed: int = 0) -> Dict[str, Any]:
    if size % 2 == 0 or not 0 < components <= size * size:
        raise GsrError(f'kernel PCA: --kernel-size must be odd ({size}) and 0 < --components <= size^2 '
                       f'({components})')
    basis = kernel_pca_basis(srmd_kernels(samples, size, l_max, seed), components)
    content = {'basis': basis, 'kernel_size': size, 'components': components, 'samples': samples, 'l_max': l_max,
               'seed': seed}
    atomic_torch_save(content, path)
    return content


EMBEDDED_KERNEL_PCA = 'embedded:kernel_pca'


def resolve_kernel_pca(path: str) -> str:
    """``embedded:kernel_pca`` (the tiny option files) -> the default basis, written once to gsr's cache folder
    (the same as ``gsr prepare kernel-pca`` with its defaults); any other path is returned as it is."""
    if path != EMBEDDED_KERNEL_PCA:
        return path
    from gsr.utils.default_data import cache_dir
    cached = os.path.join(cache_dir(), 'kernel_pca_default.pth')
    if not os.path.isfile(cached):
        write_kernel_pca(cached)
    return cached


def load_kernel_pca(path: str, where: str) -> Dict[str, Any]:
    """The file ``gsr prepare kernel-pca`` writes (or ``embedded:kernel_pca``); a missing or foreign file is one
    error naming ``where``."""
    path = resolve_kernel_pca(path)
    if not os.path.isfile(path):
        raise GsrError(f'{where}: kernel PCA file not found: {path} (write it with `gsr prepare kernel-pca '
                       f'--output {path}`)')
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise GsrError(f'{where}: {path} is not a kernel PCA file ({type(e).__name__})') from e
    basis = content.get('basis') if isinstance(content, dict) else None
    if not isinstance(basis, torch.Tensor) or basis.dim() != 2:
        raise GsrError(f'{where}: {path} is not a kernel PCA file (no basis matrix)')
    if not torch.isfinite(basis).all():
        raise GsrError(f'{where}: {path} holds a basis with non-finite values; write it again with `gsr prepare '
                       'kernel-pca` (a positive --l-max)')
    return content
