"""Does TFD's twin-feature loss train stably, and does its detector learn? The measurements behind docs/TFD.md.

``growth``: a tiny TFD network (MSRResNet ``--feat`` x ``--blocks``, GT 32, 4 crops + their noise-free twins per step,
fresh Real-ESRGAN degradations of ``--hr`` crops every step, lr 5e-4, EMA 0.999) trained for ``--iterations`` in
each mode at each place (the trunk's LR output, ``upconv1`` input; the HR input of ``conv_last``), with the old loss
(a same-pass target: ``twin_target: self, twin_loss: feature``) and the fixed one (the defaults), at each
``--weights``. Prints, per run, the study's growth of the total loss (median over the last quarter / first half,
``gsr.repro.runner.growth``), the twin term's median over the first and the last 100 iterations and the detector's
balanced accuracy over the last 300.

``detector``: the detector alone, trained on the pipeline's own rows (LR images and their twins, no backbone, no
twin loss) with ``NoiseDetectionLoss``'s binary target: its balanced accuracy over the first and the last quarter of
``--iterations`` steps, at GT ``--gt`` (LR = GT / 4).

``trained``: the detector of a trained TFD run (``--options``, its ``--checkpoint``: the weights it trained with,
not the EMA copy) on fresh degradations of ``--hr`` crops, with the run's own crops, batch and degradations, its
network in training mode as in a step: one balanced accuracy over every row (LQ rows and twins) of
``--iterations`` batches. Run it on photographs the run did not train on.

    python benchmarks/tfd_stability.py growth --hr ../shared/data/Set14 [--iterations 1500] [--weights 0.1 1.0]
    python benchmarks/tfd_stability.py detector --hr ../shared/data/Set14 --gt 64 [--iterations 400] [--lr 3e-3]
    python benchmarks/tfd_stability.py trained --options RUN/options.yml --checkpoint RUN/.../net_g_4000.pth \
        --hr ../shared/data/Set14 [--iterations 50]
"""
import argparse
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gsr  # noqa: F401,E402  (registration)

PLACES = {'trunk': 'upconv1', 'conv_last': 'conv_last'}
LOSSES = {'old': {'twin_target': 'self', 'twin_loss': 'feature'}, 'fixed': {}}


def options(hr: str, layer: str, mode: str, weight: float, twin: dict, feat: int, blocks: int, gt: int,
            batch: int) -> dict:
    tfd = {'type': 'TargetedFeatureDenoising', 'num_feat': feat, 'layer': layer, 'mode': mode, 'lr': 5e-4,
           'inference': mode == 'inline'}
    return {
        'name': 'tfd_stability', 'model_type': 'GeneralizableSRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1, 'paired': False, 'noise_free_twin': True,
        'degradation': {'noise_prob': 0.5}, 'attach': {'tfd': tfd},
        'datasets': {'train': {'name': 'train', 'type': 'PairedDegradationDataset', 'dataroot_gt': hr,
                               'crop_pad_size': max(gt + 32, 80), 'gt_size': gt, 'kernel_sets': 1,
                               'batch_size_per_gpu': batch, 'cache_images': True}},
        'network_g': {'type': 'MSRResNet', 'num_feat': feat, 'num_block': blocks, 'upscale': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 5e-4, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [10**9], 'gamma': 0.5}, 'total_iter': 10**9,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                  'regularizers': {'l_det': {'type': 'NoiseDetectionLoss'},
                                   'l_feat': dict(type='TwinFeatureLoss', loss_weight=weight, **twin)}},
    }


def batches(opt: dict):
    """HR crops with their kernels, drawn at random from the dataset forever."""
    from gsr.data.paired_degradation_dataset import PairedDegradationDataset
    train = opt['datasets']['train']
    ds = PairedDegradationDataset(dict(train, phase='train'))
    while True:
        items = [ds[random.randrange(len(ds))] for _ in range(train['batch_size_per_gpu'])]
        yield {k: torch.stack([x[k] for x in items]) for k in items[0] if k != 'gt_path'}


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def growth_run(args, place: str, mode: str, weight: float, loss: str) -> str:
    from basicsr.models import build_model

    from gsr.repro.runner import growth
    seed_everything()
    opt = options(args.hr, PLACES[place], mode, weight, LOSSES[loss], args.feat, args.blocks, 32, 4)
    model = build_model(opt)
    logged = []
    for it, data in zip(range(1, args.iterations + 1), batches(opt)):
        model.feed_data(data)
        model.optimize_parameters(it)
        logged.append({k: float(v) for k, v in model.log_dict.items()})
    feat = [row['l_feat'] for row in logged]
    grew = growth([(i, row['l_total']) for i, row in enumerate(logged, 1)])
    finite = all(np.isfinite(v) for row in logged for v in row.values())
    return (f'| {place} | {mode} | {loss} | {weight:g} | {grew:.3f} | {np.median(feat[:100]):.3g} -> '
            f'{np.median(feat[-100:]):.3g} | {np.mean([row["bacc_det"] for row in logged[-300:]]):.3f} | {finite} |')


def detector_run(args) -> str:
    """The detector alone on the pipeline's LR rows and twins (module docstring)."""
    from basicsr.archs import build_network
    from basicsr.models import build_model

    from gsr.data.second_order_degrader import effective_noise_std
    from gsr.losses.tfd_loss import balanced_accuracy
    seed_everything()
    opt = options(args.hr, 'conv_last', 'inline', 1.0, {}, 8, 1, args.gt, 4)
    model = build_model(opt)  # its batch builder degrades the crops; its network is not used
    detector = build_network({'type': 'TargetedFeatureDenoising', 'num_feat': 3}).detector
    optimizer = torch.optim.Adam(detector.parameters(), args.lr)
    scores = []
    for _, data in zip(range(args.iterations), batches(opt)):
        model.feed_data(data)
        rows = torch.cat([model.batch.lq, model.batch.lq_noise_free])
        level = effective_noise_std(model.batch.labels)
        truth = torch.cat([level, torch.zeros_like(level)]) > 2.0
        logit = detector(rows)[0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, truth.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scores.append(float(balanced_accuracy(logit.detach() > 0, truth)))
    quarter = max(1, args.iterations // 4)
    return (f'detector alone, LR {args.gt // 4}, lr {args.lr:g}, {args.iterations} steps: balanced accuracy '
            f'{np.mean(scores[:quarter]):.3f} (first quarter) -> {np.mean(scores[-quarter:]):.3f} (last quarter)')


def trained_detector_run(args) -> str:
    """The detector of a trained run on fresh degradations of ``--hr`` crops (module docstring)."""
    from basicsr.models import build_model

    from gsr.data.second_order_degrader import effective_noise_std
    from gsr.losses.tfd_loss import balanced_accuracy
    from gsr.models.option_check import load_option_file
    from gsr.utils.default_data import resolve_root
    seed_everything()
    opt = load_option_file(args.options)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['datasets']['train'].update(dataroot_gt=os.path.abspath(resolve_root(args.hr)), num_worker_per_gpu=0)
    opt['path'].update(pretrain_network_g=args.checkpoint, param_key_g='params', strict_load_g=True)
    model = build_model(opt)
    threshold = opt['train']['regularizers']['l_det'].get('threshold', 2.0)
    said, truth = [], []
    with torch.no_grad():
        for _, data in zip(range(args.iterations), batches(opt)):
            model.feed_data(data)
            context = model.forward_train()  # net_g in training mode: the detector's BatchNorm as in training
            level = effective_noise_std(context.labels)
            said.append(torch.cat([context.record('tfd', 'logit'), context.record('tfd', 'logit', twin=True)]) > 0)
            truth.append(torch.cat([level, torch.zeros_like(level)]) > threshold)
    said, truth = torch.cat(said), torch.cat(truth)
    return (f'{args.checkpoint}: balanced accuracy {float(balanced_accuracy(said, truth)):.3f} over {len(truth)} rows '
            f'({int(truth.sum())} noisy above {threshold:g}) of {args.iterations} batches of {args.hr}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=['growth', 'detector', 'trained'])
    parser.add_argument('--hr', required=True, help='HR photographs to crop (e.g. ../shared/data/Set14)')
    parser.add_argument('--iterations', type=int, default=None, help='1500 (growth) or 400 (detector)')
    parser.add_argument('--weights', type=float, nargs='+', default=[0.1, 1.0])
    parser.add_argument('--feat', type=int, default=16)
    parser.add_argument('--blocks', type=int, default=2)
    parser.add_argument('--gt', type=int, default=64, help='detector: GT crop size')
    parser.add_argument('--lr', type=float, default=3e-3, help='detector: Adam learning rate')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--options', help='trained: the run\'s option file')
    parser.add_argument('--checkpoint', help='trained: its checkpoint (net_g_<iter>.pth)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == 'trained':
        args.iterations = args.iterations or 50
        print(trained_detector_run(args), flush=True)
        return
    if args.what == 'detector':
        args.iterations = args.iterations or 400
        print(detector_run(args), flush=True)
        return
    args.iterations = args.iterations or 1500
    print('| place | mode | loss | weight | growth | l_feat, first -> last 100 | bacc_det, last 300 | finite |')
    print('|---|---|---|---|---|---|---|---|')
    for weight in args.weights:
        for place in PLACES:
            for mode in ('training_only', 'inline'):
                for loss in LOSSES:
                    print(growth_run(args, place, mode, weight, loss), flush=True)


if __name__ == '__main__':
    main()
