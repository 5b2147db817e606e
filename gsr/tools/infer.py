"""``gsr infer``: super-resolve a folder of real images with a trained checkpoint, tiled for large images.

The network is described by the option file it was trained with (``network_g``); ``--param-key`` picks
``params_ema`` (default, falling back to ``params``) or ``params``. ``--model NAME`` runs a network shipped with
gsr instead (``gsr/pretrained/manifest.json``: the reproduction studies' SRResNets). With ``--tile T`` each
image is processed in T x T input tiles with ``--tile-pad`` pixels of context, so memory is bounded by the tile
size.
``--precision bf16`` (fp16 on CUDA), ``--channels-last`` and ``--compile`` choose how the network runs. The output
folder appears only when every image is done.
"""
import argparse
import os
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from gsr.archs.network_checkpoint import load_network
from gsr.tools.arguments import (add_execution_arguments, add_network_arguments, execution_from_arguments,
                                 network_from_arguments)
from gsr.utils.errors import GsrError
from gsr.utils.execution import inference_network
from gsr.utils.image_io import list_images, non_image_files, read_image_uint8_rgb, write_image
from gsr.utils.inference import super_resolve
from gsr.utils.staging import staged_folder


def output_names(paths: List[str]) -> Dict[str, str]:
    """``<stem>.png`` for each input; two inputs with one stem (``x.png``, ``x.jpg``) are an error."""
    names: Dict[str, str] = {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0] + '.png'
        if name in names.values():
            other = next(p for p, n in names.items() if n == name)
            raise GsrError(f'{path} and {other} would both be written as {name}: rename one of them')
        names[path] = name
    return names


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='gsr infer', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser, shipped=True)
    parser.add_argument('--input', required=True, help='folder of LR images')
    parser.add_argument('--output', required=True, help='folder to create')
    parser.add_argument('--tile', type=int, default=0, help='input tile size (0: whole image)')
    parser.add_argument('--tile-pad', type=int, default=16)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--overwrite', action='store_true')
    add_execution_arguments(parser)
    args = parser.parse_args(argv)
    if args.tile < 0 or args.tile_pad < 0:
        raise GsrError(f'--tile ({args.tile}) and --tile-pad ({args.tile_pad}) must not be negative')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise GsrError(f'--device {args.device}: CUDA is not available here; use --device cpu')
    device = torch.device(args.device)
    execution = execution_from_arguments(args, device.type)
    opt, checkpoint, param_key = network_from_arguments(args)
    net = inference_network(load_network(opt, checkpoint, param_key, device), execution, device.type, '--')
    scale = int(opt.get('scale', 4))
    paths = list_images(args.input)
    outputs = output_names(paths)
    inputs = [p for p in (args.input, args.opt, checkpoint) if p]
    with staged_folder(args.output, args.overwrite, inputs=inputs) as out:
        for path in tqdm(paths, desc='infer', unit='img'):
            sr = super_resolve(net, read_image_uint8_rgb(path), scale, args.tile, args.tile_pad)
            write_image(os.path.join(out, outputs[path]), sr)
    skipped = non_image_files(args.input)
    print(f'wrote {len(paths)} images to {args.output}' + (
        f'; skipped {len(skipped)} file(s) that are not images ({", ".join(skipped[:3])}'
        f'{", ..." if len(skipped) > 3 else ""})' if skipped else ''))
    return 0
