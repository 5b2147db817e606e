"""The degradations of the DASR / KDSR / LightBSR line of work, batched on the model's device.

``y = round(clamp(bicubic_down(k * x) + n))``: a 21 x 21 isotropic or anisotropic Gaussian blur (reflect padding),
MATLAB-style bicubic x4 downsampling (BasicSR's ``imresize`` weights, as one matrix product per axis, with the code's
replicated border by default: ``bicubic_matrix``), optional additive
Gaussian noise (sigma in 0-255 units), then rounding to 8 bits (``shared/research/lightbsr_and_savl.md`` A.6).
Like ``SecondOrderDegrader``, drawing (``sample``) is separate from applying (``apply``) and every draw is a
per-sample label (``labels``). Anisotropic kernels take ``lambda`` as the standard deviations along the principal
axes, rotated by ``theta`` (the covariance ``R diag(l1^2, l2^2) R^T``, BasicSR's ``sigma_matrix2``).
"""
import functools
import math
from dataclasses import dataclass
from typing import Dict, List, Literal, Tuple, get_args

import torch
from basicsr.utils.img_process_util import filter2D
from basicsr.utils.matlab_functions import calculate_weights_indices

from gsr.utils.errors import GsrError
from gsr.utils.options import option

KernelKind = Literal['iso', 'aniso']
BicubicBorder = Literal['replicate', 'symmetric']  # the code's clamped indices | MATLAB's imresize
BORDERS = get_args(BicubicBorder)


@dataclass
class ClassicDegradationOptions:
    """``classic_degradation:`` — setting 1 is ``kernel: iso`` (sigma in [0.2, 4], no noise); setting 2 is
    ``kernel: aniso`` (lambda in [0.2, 4], theta in [0, pi]) with ``noise: 25``."""
    kernel: KernelKind = option('iso', 'isotropic or anisotropic Gaussian blur kernels')
    kernel_size: int = option(21, 'the kernel\'s side (odd)')
    sigma: Tuple[float, float] = option((0.2, 4.0), '`iso`: the range of the kernel\'s standard deviation')
    lambda_range: Tuple[float, float] = option((0.2, 4.0), '`aniso`: the range of the standard deviations along the '
                                               'two axes (theta in [0, pi])')
    noise: float = option(0.0, 'the largest Gaussian noise sigma (0-255 units); 0: no noise')
    bicubic_border: BicubicBorder = option(
        'replicate', '`replicate`: the code\'s clamped indices; `symmetric`: MATLAB\'s `imresize`; they differ in the '
        'outer 2 LR pixels by at most a few grey levels')

    def __post_init__(self):
        if self.kernel_size % 2 == 0 or self.kernel_size < 3:
            raise GsrError(f'classic_degradation.kernel_size must be odd and at least 3, got {self.kernel_size}')
        for name in ('sigma', 'lambda_range'):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise GsrError(f'classic_degradation.{name} must be [low, high] with 0 < low <= high, got '
                               f'{list(getattr(self, name))}')
        if self.noise < 0:
            raise GsrError(f'classic_degradation.noise must not be negative, got {self.noise}')


def gaussian_kernels(sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size) normalised Gaussian kernels with covariance ``R(theta) diag(sigma_x^2, sigma_y^2) R^T``
    on the grid centred at 0 (BasicSR's ``bivariate_Gaussian`` / ``mesh_grid``, batched)."""
    axis = torch.arange(size, dtype=torch.float64, device=sigma_x.device) - size // 2
    yy, xx = torch.meshgrid(axis, axis, indexing='ij')
    grid = torch.stack([xx, yy], -1).view(1, -1, 2)
    cos, sin = torch.cos(theta.double()), torch.sin(theta.double())
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    variances = torch.diag_embed(torch.stack([sigma_x.double()**2, sigma_y.double()**2], -1))
    inverse = torch.linalg.inv(rotation @ variances @ rotation.transpose(1, 2))
    kernels = torch.exp(-0.5 * ((grid @ inverse) * grid).sum(-1)).view(-1, size, size)
    return (kernels / kernels.sum((1, 2), keepdim=True)).float()


@functools.lru_cache(maxsize=32)
def bicubic_matrix(in_length: int, scale: int, border: str = 'symmetric') -> torch.Tensor:
    """(in_length // scale, in_length) matrix of MATLAB's antialiased bicubic downsampling along one axis: BasicSR's
    ``calculate_weights_indices`` with the taps beyond the ends folded back onto the input pixels, mirrored
    (``symmetric``, MATLAB's ``imresize``) or onto the end pixel (``replicate``: the clamped indices of the torch
    "MATLAB bicubic" in DASR's and LightBSR's code)."""
    out_length = math.ceil(in_length / scale)
    weights, indices, start, _ = calculate_weights_indices(in_length, out_length, 1 / scale, 'cubic', 4, True)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    for row in range(out_length):
        for offset in range(weights.shape[1]):
            padded = int(indices[row][0]) + offset  # index into [mirror of the first `start` | input | mirror]
            if border == 'replicate':
                source = min(max(padded - start, 0), in_length - 1)
            else:
                source = start - 1 - padded if padded < start else padded - start
                source = 2 * in_length - 1 - source if source >= in_length else source
            matrix[row, source] += float(weights[row, offset])
    return matrix.float()


def bicubic_downsample(x: torch.Tensor, scale: int, border: str = 'symmetric') -> torch.Tensor:
    """MATLAB ``imresize(x, 1/scale)`` (bicubic, antialiased) of an (N, C, H, W) batch: ``M_h x M_w^T``; ``border``:
    ``bicubic_matrix``."""
    rows = bicubic_matrix(x.shape[-2], scale, border).to(x)
    cols = bicubic_matrix(x.shape[-1], scale, border).to(x)
    return rows @ x @ cols.t()


class ClassicDegrader(torch.nn.Module):
    """Blur -> bicubic -> noise -> 8-bit rounding (module docstring); draws on the device of the images."""

    def __init__(self, options: ClassicDegradationOptions, scale: int = 4):
        super().__init__()
        self.options, self.scale = options, scale

    def sample(self, gt: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One draw per row of ``gt``: kernel standard deviations and angle, noise level (0-255)."""
        b, o, device = gt.shape[0], self.options, gt.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(b, device=device) * (high - low) + low

        if o.kernel == 'iso':
            sigma_x = uniform(*o.sigma)
            sigma_y, theta = sigma_x, torch.zeros(b, device=device)
        else:
            sigma_x, sigma_y, theta = uniform(*o.lambda_range), uniform(*o.lambda_range), uniform(0, math.pi)
        return {'sigma_x': sigma_x, 'sigma_y': sigma_y, 'theta': theta, 'noise_sigma': uniform(0, o.noise)}

    def kernels(self, draws: Dict[str, torch.Tensor]) -> torch.Tensor:
        return gaussian_kernels(draws['sigma_x'], draws['sigma_y'], draws['theta'], self.options.kernel_size)

    def apply(self, gt: torch.Tensor, draws: Dict[str, torch.Tensor], add_noise: bool = True) -> torch.Tensor:
        lr = bicubic_downsample(filter2D(gt, self.kernels(draws)), self.scale, self.options.bicubic_border) * 255.
        if add_noise and self.options.noise > 0:
            lr = lr + torch.randn_like(lr) * draws['noise_sigma'][:, None, None, None]
        return lr.round().clamp(0, 255) / 255.

    @staticmethod
    def labels(draws: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return dict(draws)


def fixed_draws(sigma_x: List[float], sigma_y: List[float], theta_degrees: List[float], noise: List[float],
                device: torch.device = torch.device('cpu')) -> Dict[str, torch.Tensor]:
    """Draws given by value (the test protocols' kernels), in ``sample``'s format."""
    values = {'sigma_x': sigma_x, 'sigma_y': sigma_y, 'theta': [math.radians(t) for t in theta_degrees],
              'noise_sigma': noise}
    return {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in values.items()}
