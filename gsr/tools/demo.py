"""``gsr demo``: first the networks shipped with gsr (``gsr/pretrained``: each reproduction study's baseline and
best regularized SRResNet) on the held-out embedded photographs -- a table and side-by-side PNGs bicubic | each
shipped network | HR under clean, noise and b+n+j; then a short training run of a small SRResNet with paired
degradations + alignment on the embedded photographs, which proves the pipeline: its table and a bicubic | SR | HR
PNG per validation image."""
import argparse
import os
from typing import Dict, List, Optional

import numpy as np
import yaml
from basicsr.metrics import calculate_psnr

from gsr.archs.network_checkpoint import load_network
from gsr.data.eval_protocol import degrade_file
from gsr.models.option_check import load_option_file
from gsr.train import run
from gsr.utils.checkpoint import atomic_write_text
from gsr.utils.default_data import materialize
from gsr.utils.image_io import list_images, write_image
from gsr.utils.inference import bicubic_upscale, super_resolve

OPTION_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'options', 'demo_srresnet_align.yml')
TABLE_SETTINGS = ('clean', 'blur', 'noise', 'jpeg', 'b+n+j')
PANEL_SETTINGS = ('clean', 'noise', 'b+n+j')
PANEL = 128


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return img[top:top + size, left:left + size]


def evaluate(net, val_folder: str, scale: int, out_dir: str) -> List[str]:
    """Print the validation table; write one side-by-side PNG per image; return their paths."""
    rows = {s: [] for s in TABLE_SETTINGS}
    pngs = []
    for path in list_images(val_folder):
        name = os.path.splitext(os.path.basename(path))[0]
        hr, lrs = degrade_file(path, list(TABLE_SETTINGS), scale)
        panel_rows = []
        for setting, lr in lrs.items():
            bic, sr = bicubic_upscale(lr, scale), super_resolve(net, lr, scale)
            rows[setting].append((calculate_psnr(bic, hr, scale), calculate_psnr(sr, hr, scale)))
            if setting in PANEL_SETTINGS:
                panel_rows.append(np.concatenate([center_crop(x, PANEL) for x in (bic, sr, hr)], axis=1))
        png = os.path.join(out_dir, f'{name}_bicubic_sr_hr.png')
        write_image(png, np.concatenate(panel_rows, axis=0))
        pngs.append(png)
    print(f'\nValidation on the held-out embedded images (PSNR dB, RGB, crop {scale}):')
    print('| setting | bicubic | SR | gain |\n|---|---|---|---|')
    for setting, values in rows.items():
        bic, sr = np.mean([v[0] for v in values]), np.mean([v[1] for v in values])
        print(f'| {setting} | {bic:.2f} | {sr:.2f} | {sr - bic:+.2f} |')
    return pngs


def show_shipped(val_folder: str, out_dir: str) -> List[str]:
    """Every network shipped in the package beside bicubic on the validation photographs: print the table, write
    the PNGs, return their paths (none when the package ships none)."""
    from gsr.utils.pretrained import manifest, shipped
    entries = manifest()
    if not entries:
        print('No shipped networks in this installation (gsr/pretrained/manifest.json); skipping their comparison.')
        return []
    names = sorted(entries, key=lambda n: (entries[n]['study'], not n.endswith('-baseline'), n))
    nets, scale = {}, 4
    for name in names:
        entry = shipped(name)
        scale = entry['scale']
        nets[name] = load_network({'network_g': entry['network_g']}, entry['checkpoint'], entry['param_key'])
    rows: Dict[str, List[List[float]]] = {s: [] for s in TABLE_SETTINGS}
    pngs = []
    for path in list_images(val_folder):
        hr, lrs = degrade_file(path, list(TABLE_SETTINGS), scale)
        panel_rows = []
        for setting, lr in lrs.items():
            outputs = [bicubic_upscale(lr, scale)] + [super_resolve(net, lr, scale) for net in nets.values()]
            rows[setting].append([calculate_psnr(x, hr, scale) for x in outputs])
            if setting in PANEL_SETTINGS:
                panel_rows.append(np.concatenate([center_crop(x, PANEL) for x in outputs + [hr]], axis=1))
        stem = os.path.splitext(os.path.basename(path))[0]
        png = os.path.join(out_dir, f'{stem}_bicubic_shipped_hr.png')
        write_image(png, np.concatenate(panel_rows, axis=0))
        pngs.append(png)
    print(f'\nShipped networks on the held-out embedded images (PSNR dB, RGB, crop {scale}); each trained by:')
    for name in names:
        entry = entries[name]
        print(f'  {name}: `{entry["command"]}` (variant {entry["variant"]}, seed {entry["seed"]})')
    print('| setting | bicubic | ' + ' | '.join(names) + ' |\n|---|---|' + '---|' * len(names))
    for setting, values in rows.items():
        print('| ' + setting + ' | ' + ' | '.join(f'{v:.2f}' for v in np.mean(values, axis=0)) + ' |')
    print('Side-by-side images (rows: clean, noise, b+n+j; columns: bicubic | ' + ' | '.join(names) + ' | HR crop):')
    for png in pngs:
        print(f'  {png}')
    return pngs


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='gsr demo', description=__doc__)
    parser.add_argument('--iters', type=int, default=None, help='training iterations (default: the option file\'s)')
    args = parser.parse_args(argv)
    folders = materialize()
    show_shipped(folders['val'], os.path.join(os.getcwd(), 'experiments', 'gsr_demo_shipped'))
    print('\nNow a short training run that proves the pipeline:')
    opt = load_option_file(OPTION_FILE)
    for key, ds in opt['datasets'].items():
        ds['dataroot_gt'] = folders['train' if key == 'train' else 'val']
    if args.iters:
        opt['train']['total_iter'] = args.iters
        opt['train']['scheduler']['periods'] = [args.iters]
        opt['val']['val_freq'] = opt['logger']['save_checkpoint_freq'] = args.iters
    root = os.path.join(os.getcwd(), 'experiments')
    option_path = os.path.join(root, f'{opt["name"]}_options.yml')
    atomic_write_text(option_path, yaml.safe_dump(opt, sort_keys=False))
    run(['-opt', option_path], is_train=True)
    exp = os.path.join(root, opt['name'])
    net = load_network(opt, os.path.join(exp, 'models', 'net_g_latest.pth'), 'params_ema')
    pngs = evaluate(net, folders['val'], opt['scale'], os.path.join(exp, 'demo'))
    print('\nSide-by-side images (rows: clean, noise, b+n+j; columns: bicubic | SR | HR crop):')
    for png in pngs:
        print(f'  {png}')
    return 0
