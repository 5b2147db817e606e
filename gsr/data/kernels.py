"""Real-ESRGAN blur and sinc kernels, sampled with the parameters recorded as labels.

BasicSR's ``random_mixed_kernels`` draws the same distributions but does not return what it drew; here the
parameters are drawn first (same distributions, numpy's global RNG as in BasicSR's dataset workers) and the
kernel is built with BasicSR's deterministic builders, so every kernel comes with its label vector:

``[kind, size, sigma_x, sigma_y, theta, beta, omega_c]`` — ``kind`` indexes ``KERNEL_KINDS``; fields that
do not apply to a kind are 0 (e.g. ``beta`` for plain Gaussians, ``omega_c`` for non-sinc kernels).
"""
import math
import random
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
from basicsr.data.degradations import (bivariate_Gaussian, bivariate_generalized_Gaussian, bivariate_plateau,
                                       circular_lowpass_kernel)

KERNEL_KINDS = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso', 'sinc')
KERNEL_INFO_FIELDS = ('kind', 'size', 'sigma_x', 'sigma_y', 'theta', 'beta', 'omega_c')
PAD_SIZE = 21
KERNEL_SIZES = tuple(range(7, 22, 2))


@dataclass
class BlurKernelOptions:
    """One stage's blur distribution (Real-ESRGAN defaults of the first stage)."""
    kernel_list: List[str] = field(default_factory=lambda: list(KERNEL_KINDS[:6]))
    kernel_prob: List[float] = field(default_factory=lambda: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03])
    sinc_prob: float = 0.1
    blur_sigma: Tuple[float, float] = (0.2, 3.0)
    betag_range: Tuple[float, float] = (0.5, 4.0)
    betap_range: Tuple[float, float] = (1.0, 2.0)


def _beta(beta_range: Tuple[float, float]) -> float:
    # BasicSR: half of the draws below 1, half above (shape parameter of generalized / plateau kernels)
    if np.random.uniform() < 0.5:
        return np.random.uniform(beta_range[0], 1)
    return np.random.uniform(1, beta_range[1])


def _pad(kernel: np.ndarray) -> np.ndarray:
    pad = (PAD_SIZE - kernel.shape[0]) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def sample_blur_kernel(opt: BlurKernelOptions) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one Real-ESRGAN blur kernel (21x21, float32) and its label vector."""
    size = random.choice(KERNEL_SIZES)
    info = np.zeros(len(KERNEL_INFO_FIELDS), np.float32)
    info[1] = size
    if np.random.uniform() < opt.sinc_prob:
        omega = np.random.uniform(math.pi / 3, math.pi) if size < 13 else np.random.uniform(math.pi / 5, math.pi)
        info[0], info[6] = KERNEL_KINDS.index('sinc'), omega
        return _pad(circular_lowpass_kernel(omega, size, pad_to=False)).astype(np.float32), info
    kind = random.choices(opt.kernel_list, opt.kernel_prob)[0]
    isotropic = kind.endswith('iso') and not kind.endswith('aniso')
    sig_x = np.random.uniform(*opt.blur_sigma)
    sig_y = sig_x if isotropic else np.random.uniform(*opt.blur_sigma)
    theta = 0. if isotropic else np.random.uniform(-math.pi, math.pi)
    beta = 0.
    if kind.startswith('generalized'):
        beta = _beta(opt.betag_range)
        kernel = bivariate_generalized_Gaussian(size, sig_x, sig_y, theta, beta, isotropic=isotropic)
    elif kind.startswith('plateau'):
        beta = _beta(opt.betap_range)
        kernel = bivariate_plateau(size, sig_x, sig_y, theta, beta, isotropic=isotropic)
    else:
        kernel = bivariate_Gaussian(size, sig_x, sig_y, theta, isotropic=isotropic)
    info[[0, 2, 3, 4, 5]] = KERNEL_KINDS.index(kind), sig_x, sig_y, theta, beta
    return _pad(kernel).astype(np.float32), info


def sample_final_sinc(final_sinc_prob: float = 0.8) -> Tuple[np.ndarray, np.ndarray]:
    """Draw the final sinc kernel, or an identity pulse; label ``[applied, omega_c]``."""
    if np.random.uniform() < final_sinc_prob:
        size = random.choice(KERNEL_SIZES)
        omega = np.random.uniform(math.pi / 3, math.pi)
        kernel = circular_lowpass_kernel(omega, size, pad_to=PAD_SIZE)
        return kernel.astype(np.float32), np.array([1., omega], np.float32)
    pulse = np.zeros((PAD_SIZE, PAD_SIZE), np.float32)
    pulse[PAD_SIZE // 2, PAD_SIZE // 2] = 1
    return pulse, np.zeros(2, np.float32)
