"""``gsr export``: a trained checkpoint -> an ONNX network with dynamic height and width, verified before it is kept.

The network is the option file's (``network_g`` with its ``attach:`` modules as at inference), loaded from
``--checkpoint`` (``--param-key``). The exported graph includes the inference path's padding to the network's
size multiple (SwinIR's window), so it accepts any LR size, and its output is scale x the input. The file is
written by ``torch.onnx``'s exporter (``dynamo=True``, opset ``--opset``, default 18; input ``lr``, output ``sr``,
float32 RGB in [0, 1], NCHW) and then run with onnxruntime on a real image at two sizes and compared with PyTorch;
it is kept only when the largest absolute difference is within ``--tolerance``. Needs ``pip install gsr[export]``.
"""
import argparse
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from gsr.archs.network_checkpoint import load_network
from gsr.models.option_check import load_option_file
from gsr.tools.arguments import add_network_arguments
from gsr.utils.checkpoint import atomic_write
from gsr.utils.default_data import materialize
from gsr.utils.errors import GsrError
from gsr.utils.image_io import read_image_uint8_rgb
from gsr.utils.inference import pad_to_multiple, size_multiple, to_tensor

DEFAULT_OPSET = 18
CHECK_SIZE = 96  # the default check image's LR side: large enough for real content, quick for every arch


class ExportedNetwork(nn.Module):
    """What is exported: padding to the network's size multiple, the network, the output cut to scale x input."""

    def __init__(self, net: nn.Module, scale: int):
        super().__init__()
        self.net, self.scale, self.multiple = net, scale, size_multiple(net)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[-2:]
        return self.net(pad_to_multiple(lr, self.multiple))[..., :h * self.scale, :w * self.scale]


def import_onnx_tools():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter)
    except ImportError as e:
        raise GsrError(f'gsr export needs onnx, onnxscript and onnxruntime ({e}): pip install "gsr[export]"') from e
    return onnxruntime


def found_in_chain(error: Optional[BaseException], pattern: str) -> List[str]:
    """The groups of ``pattern``'s matches in the messages of ``error`` and the errors that caused it."""
    while error is not None:
        found = re.findall(pattern, str(error))
        if found:
            return found
        error = error.__cause__ or error.__context__
    return []


def export_onnx(net: ExportedNetwork, example: torch.Tensor, path: str, opset: int) -> None:
    """Export with dynamic height and width; a missing ONNX operator is one error naming it."""
    dynamic = ({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}, )
    try:
        torch.onnx.export(net, (example, ), path, dynamo=True, opset_version=opset, input_names=['lr'],
                          output_names=['sr'], dynamic_shapes=dynamic, external_data=False, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; each becomes one line
        ops = found_in_chain(e, r"No ONNX function found for <OpOverload\(op='([^']+)'")
        if ops:
            raise GsrError(f'the network uses {ops[0]}, which ONNX (opset {opset}) cannot represent; '
                           'it cannot be exported') from e
        fixed = found_in_chain(e, r'tracing inferred a static shape of (\d+)')
        if fixed:
            raise GsrError(f'the network fixes its input size while it is traced (to {" x ".join(fixed)} here: sizes '
                           'used as Python numbers), so it cannot be exported with dynamic height and width') from e
        summary = found_in_chain(e, r"<class '([^']+)'>: ([^\n]+)")  # the exporter's "Exception summary"
        kind, text = summary[0] if summary else (type(e).__name__, (str(e).strip().splitlines() or [''])[0])
        raise GsrError(f'ONNX export failed: {kind.split(".")[-1]}: {text[:300]}') from e
    written = written_opset(path)
    if written != opset:  # torch exports at its own opset and converts down; a failed conversion keeps its own
        raise GsrError(f'--opset {opset}: torch.onnx could not convert the network to opset {opset} (it wrote '
                       f'opset {written}); use --opset {written} or an opset its version converter reaches')


def written_opset(path: str) -> int:
    """The default-domain opset an ONNX file imports."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))


def check_images(image: Optional[str], scale: int) -> List[Tuple[str, np.ndarray]]:
    """The LR images the export is checked on: ``image`` (or an embedded photo, downscaled and cropped to
    ``CHECK_SIZE``) and the same cropped by a few pixels, so a second, odd size is run too."""
    import cv2
    if image is None:
        image = os.path.join(materialize()['val'], 'coffee.png')
        rgb = read_image_uint8_rgb(image)
        h, w = rgb.shape[:2]
        rgb = cv2.resize(rgb, (w // scale, h // scale), interpolation=cv2.INTER_AREA)[:CHECK_SIZE, :CHECK_SIZE]
    else:
        rgb = read_image_uint8_rgb(image)
    name = os.path.basename(image)
    odd = rgb[:max(rgb.shape[0] - 5, 1), :max(rgb.shape[1] - 3, 1)]
    return [(name, rgb), (f'{name} cropped', odd)]


def verify_onnx(path: str, net: nn.Module, images: List[Tuple[str, np.ndarray]],
                tolerance: float) -> Dict[str, float]:
    """Run the ONNX file with onnxruntime and ``net`` with PyTorch on each image; the largest absolute difference
    per image. Above ``tolerance`` it is an error (the file is then not kept)."""
    onnxruntime = import_onnx_tools()
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    differences = {}
    for name, rgb in images:
        x = to_tensor(rgb, torch.device('cpu'))
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {'lr': x.numpy()})[0]
        if got.shape != expected.shape:
            raise GsrError(f'the ONNX network turns {name} ({rgb.shape[1]}x{rgb.shape[0]}) into {got.shape}, PyTorch '
                           f'into {expected.shape}')
        differences[f'{name} ({rgb.shape[1]}x{rgb.shape[0]})'] = float(np.abs(got - expected).max())
    worst = max(differences, key=differences.get)
    if differences[worst] > tolerance:
        raise GsrError(f'the ONNX network differs from PyTorch by {differences[worst]:.3g} on {worst} (tolerance '
                       f'{tolerance:g}); nothing was written')
    return differences


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='gsr export', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser)
    parser.add_argument('--output', required=True, help='the .onnx file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--image', help='LR image to check the export on (default: an embedded photo)')
    parser.add_argument('--tolerance', type=float, default=1e-3,
                        help='largest |ONNX - PyTorch| accepted on [0, 1] outputs (default: 1/4 of an 8-bit level)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    args = parser.parse_args(argv)
    import_onnx_tools()
    if os.path.exists(args.output) and not args.overwrite:
        raise GsrError(f'{args.output} exists: choose another --output or pass --overwrite')
    if os.path.isdir(args.output):
        raise GsrError(f'--output {args.output} is a folder; give the .onnx file to write')
    output = os.path.realpath(args.output)
    for source in (args.opt, args.checkpoint, args.image):
        if source and os.path.realpath(source) == output:
            raise GsrError(f'--output {args.output} is an input of the export: choose another file')
    opt = load_option_file(args.opt)
    scale = int(opt.get('scale', 4))
    net = ExportedNetwork(load_network(opt, args.checkpoint, args.param_key), scale).eval()
    images = check_images(args.image, scale)
    differences: Dict[str, float] = {}

    def write(tmp: str) -> None:
        export_onnx(net, to_tensor(images[0][1], torch.device('cpu')), tmp, args.opset)
        differences.update(verify_onnx(tmp, net, images, args.tolerance))

    atomic_write(args.output, write)
    checked = ', '.join(f'{name}: {d:.2e}' for name, d in differences.items())
    print(f'wrote {args.output} (opset {args.opset}, input lr: N x 3 x H x W float32 in [0, 1] with dynamic H and W, '
          f'output sr: N x 3 x {scale}H x {scale}W); max |onnxruntime - PyTorch|: {checked} (tolerance '
          f'{args.tolerance:g})')
    return 0
