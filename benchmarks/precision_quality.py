"""Does bf16 training cost quality? The same short training (same seed, same data and degradation draws) in fp32
and in bf16 + channels_last, then PSNR on Set5 under the eight settings; a second fp32 seed shows how far two
fp32 runs already differ, which is the scale a bf16 difference must be read against.

The run is ``options/tiny/train_srresnet_align.yml`` (SRResNet 32x4, paired, linear + RFF alignment, embedded
training photos) lengthened to ``--iters`` iterations; RGB PSNR with a 4-pixel border, EMA weights. Goal
(issue 14): bf16 within 0.05 dB of fp32 on average over the eight settings.

    python benchmarks/precision_quality.py [--iters 2000] [--hr ../shared/data/Set5] [--work /tmp/gsr_precision]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
RUNS = {  # name: (seed, train: execution keys)
    'fp32 seed 0': (0, {}),
    'bf16 + channels_last seed 0': (0, {'precision': 'bf16', 'channels_last': True}),
    'fp32 seed 1': (1, {}),
}


def train(name: str, seed: int, execution: dict, iters: int, work: str) -> tuple:
    """Train one run in ``work`` (skipped when its checkpoint exists); returns (checkpoint, option file, seconds)."""
    with open(os.path.join(REPO, 'options', 'tiny', 'train_srresnet_align.yml')) as f:
        opt = yaml.safe_load(f)
    tag = name.replace(' ', '_').replace('+', 'and')
    opt.update(name=tag, manual_seed=seed)
    opt['datasets'].pop('val')
    opt.pop('val')
    opt['train'].update(total_iter=iters, **execution)
    opt['logger'].update(print_freq=iters // 4, save_checkpoint_freq=iters)
    option_file = os.path.join(work, f'{tag}.yml')
    with open(option_file, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    checkpoint = os.path.join(work, 'experiments', tag, 'models', 'net_g_latest.pth')
    start = time.perf_counter()
    if not os.path.isfile(checkpoint):
        result = subprocess.run([sys.executable, '-m', 'gsr.cli', 'train', '-opt', option_file], cwd=work,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f'training {name} failed:\n{result.stderr[-3000:]}')
    return checkpoint, option_file, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--hr', default=os.path.join(REPO, '..', 'shared', 'data', 'Set5'))
    parser.add_argument('--work', default='/tmp/gsr_precision')
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    import gsr  # noqa: F401
    from gsr.analysis.evaluation import evaluate, load_config, summarize
    trained = {name: train(name, seed, execution, args.iters, args.work) for name, (seed, execution) in RUNS.items()}
    config = {'name': 'precision_quality', 'output': os.path.join(args.work, 'evaluation'), 'metrics': ['psnr'],
              'device': 'cpu', 'datasets': {'Set5': os.path.abspath(args.hr)},
              'models': {name: {'option_file': t[1], 'checkpoint': t[0]} for name, t in trained.items()}}
    config_file = os.path.join(args.work, 'evaluate.yml')
    with open(config_file, 'w') as f:
        yaml.safe_dump(config, f, sort_keys=False)
    summary = summarize(evaluate(load_config(config_file), progress=False), ['psnr'])
    psnr = {(s['model'], s['setting']): s['psnr'] for s in summary}
    settings = list(dict.fromkeys(s['setting'] for s in summary))
    print(f'{args.iters} iterations each; training time (s): '
          + ', '.join(f'{name} {t[2]:.0f}' for name, t in trained.items()) + '\n')
    print('| run | ' + ' | '.join(settings) + ' | mean |\n|---|' + '---|' * (len(settings) + 1))
    for name in RUNS:
        values = [psnr[(name, s)] for s in settings]
        print(f'| {name} | ' + ' | '.join(f'{v:.3f}' for v in values) + f' | {np.mean(values):.3f} |')
    for name in list(RUNS)[1:]:
        gaps = [psnr[(name, s)] - psnr[('fp32 seed 0', s)] for s in settings]
        print(f'| {name} - fp32 seed 0 | ' + ' | '.join(f'{g:+.3f}' for g in gaps) + f' | **{np.mean(gaps):+.3f}** |')


if __name__ == '__main__':
    main()
