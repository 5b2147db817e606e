"""How long one run of a study takes: the training step of a study's base option file, measured as the run makes it
(the HR crop read from the dataset, degraded on the device, the step of the model; the data loader's worker is left
out: the cached images make its work small), median of ``--steps`` after ``--warmup``, and the training time its
``total_iter`` implies (validations not included: the run's log has their time).

    python benchmarks/study_step.py options/repro/base_srresnet_medium.yml --hr ../shared/data/SunHays80 [--steps 30]
    python benchmarks/study_step.py options/train_srresnet_align.yml --hr embedded:train   # a paper file, on the GPU
"""
import argparse
import os
import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('base', help='a study\'s base option file')
    parser.add_argument('--hr', required=True, help='its HR training folder')
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    args = parser.parse_args()
    import gsr  # noqa: F401  isort: skip  (its torchvision shim before basicsr imports)
    from basicsr.models import build_model

    from gsr.data.paired_degradation_dataset import PairedDegradationDataset
    from gsr.models.option_check import load_option_file
    from gsr.utils.default_data import resolve_root
    opt = load_option_file(args.base)
    opt['datasets']['train']['dataroot_gt'] = os.path.abspath(resolve_root(args.hr))
    if opt.get('num_gpu') == 'auto':  # as BasicSR's option parser resolves it
        opt['num_gpu'] = torch.cuda.device_count()
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = build_model(opt)
    train = opt['datasets']['train']
    dataset = PairedDegradationDataset(dict(train, phase='train'))
    for index in range(len(dataset)):  # fill the image cache, as the first epoch of a run does
        dataset[index]
    seconds = []
    for step in range(1, args.warmup + args.steps + 1):
        start = time.perf_counter()
        items = [dataset[random.randrange(len(dataset))] for _ in range(train['batch_size_per_gpu'])]
        model.feed_data({k: torch.stack([x[k] for x in items]) for k in items[0] if k != 'gt_path'})
        model.optimize_parameters(step)
        if model.device.type == 'cuda':
            torch.cuda.synchronize()
        if step > args.warmup:
            seconds.append(time.perf_counter() - start)
    per_step = float(np.median(seconds))
    total = opt['train']['total_iter']
    where = torch.cuda.get_device_name() if model.device.type == 'cuda' else f'{torch.get_num_threads()} threads'
    print(f'{args.base}: {per_step:.3f} s per step (median of {args.steps}, spread {np.percentile(seconds, 10):.3f}-'
          f'{np.percentile(seconds, 90):.3f}) on {where}; {model.lq.shape[0] / per_step:.1f} LR images per second; '
          f'l_total {model.log_dict["l_total"]:.4f} at step {args.warmup + args.steps}; {total} iterations: '
          f'{per_step * total / 60:.1f} min of training')


if __name__ == '__main__':
    main()
