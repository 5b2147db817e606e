"""Where the LightBSR teacher's positives come from, and what it does to its IDR: the tiny teacher
(``options/tiny/train_lightbsr_teacher.yml``) trained in stage encoder (InfoNCE only) with its 2 positives cut
anywhere in each image (``crops_per_image: 2``, 64-px crops, the code's way) or from one 120-px region
(``crops_per_image: 1``, ``crop_pad_size: 120``: the earlier default's ratio of region to crop), then the
Calinski-Harabasz index of its channel IDR on ``--val`` under the blind-aniso protocol's 18 settings
(``gsr analyze ddr --protocol blind-aniso``). Runs in a temporary folder; prints one table.

    python benchmarks/lightbsr_positives.py --hr ../shared/data/SunHays80 --val ../shared/data/Set14 [--iterations 800]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = {'anywhere in the image': {'crops_per_image': 2, 'crop_pad_size': 64},
         'one 120-px region': {'crops_per_image': 1, 'crop_pad_size': 120}}


def teacher_options(hr: str, iterations: int, name: str, crops: dict) -> dict:
    with open(os.path.join(REPO, 'options', 'tiny', 'train_lightbsr_teacher.yml')) as f:
        opt = yaml.safe_load(f)
    opt.update(name=name, stage='encoder', find_unused_parameters=True)
    opt['datasets']['train'].update(dataroot_gt=os.path.abspath(hr), cache_images=True, batch_size_per_gpu=8, **crops)
    opt['train'].update(total_iter=iterations)
    opt['train'].pop('pixel_opt')
    opt['train']['regularizers']['l_contrast']['loss_weight'] = 1.0
    opt['logger'].update(print_freq=50, save_checkpoint_freq=iterations)
    return opt


def gsr(args, cwd: str) -> str:
    result = subprocess.run([sys.executable, '-m', 'gsr.cli'] + args, cwd=cwd, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO))
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hr', required=True, help='training photographs (large ones: ../shared/data/SunHays80)')
    parser.add_argument('--val', required=True, help='HR folder the IDR is analysed on (../shared/data/Set14)')
    parser.add_argument('--iterations', type=int, default=800)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for i, (mode, crops) in enumerate(MODES.items()):
            name = f'teacher_{i}'
            path = os.path.join(work, f'{name}.yml')
            with open(path, 'w') as f:
                yaml.safe_dump(teacher_options(args.hr, args.iterations, name, crops), f)
            gsr(['train', '-opt', path], work)
            experiment = os.path.join(work, 'experiments', name)
            with open(next(os.path.join(experiment, f) for f in os.listdir(experiment) if f.endswith('.log'))) as f:
                loss = re.findall(r'l_contrast: ([\d.e+-]+)', f.read())
            checkpoint = os.path.join(experiment, 'models', f'net_g_{args.iterations}.pth')
            out = gsr(['analyze', 'ddr', '-opt', path, '--checkpoint', checkpoint, '--hr', os.path.abspath(args.val),
                       '--protocol', 'blind-aniso', '--output', os.path.join(work, f'ddr_{i}')], work)
            pooled, tsne = re.findall(r'\| \d+ \| \d+ \| \d+ \| ([\d.]+) \| ([\d.]+) \|', out)[-1]
            rows.append(f'| {mode} | {float(loss[-1]):.3f} | {float(pooled):.1f} | {float(tsne):.1f} |')
    print(f'| positives | InfoNCE at iteration {args.iterations} | CH, pooled IDR | CH, 2-D t-SNE |')
    print('|---|---|---|---|')
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
