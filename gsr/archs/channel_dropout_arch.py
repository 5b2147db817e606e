"""Channel Dropout at the feature tap (Kong et al., "Reflash Dropout in Image Super-Resolution", CVPR 2022)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from gsr.utils.errors import GsrError


@ARCH_REGISTRY.register()
class ChannelDropout(nn.Dropout2d):
    """``nn.Dropout2d(p)``: whole channels zeroed, the rest scaled by 1/(1-p), in training mode only (Sec. 4).

    Attached by ``dropout: {p}`` to the layer of ``feature_tap`` (the input of the last conv by default); it has
    no parameters, so checkpoints are those of the bare network.
    """

    def __init__(self, p: float = 0.5):
        if not 0 <= p < 1:
            raise GsrError(f'dropout.p must be in [0, 1), got {p}')
        super().__init__(p)
