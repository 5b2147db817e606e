"""LightBSR's cost against SRResNet-64x16 (BasicSR's MSRResNet), measured in one process.

Inference at a 180x320 LR input (the size of KDSR's and DASR's complexity tables): parameters, FLOPs
(``torch.utils.flop_counter``; a multiply-add counts 2), time (the networks alternate, median of ``--repeats`` after
a warm-up each) and peak memory (``VmHWM`` reset before each network's passes; CUDA: allocated). Training: one step
of the teacher (stage joint: 4 crops per image, contrastive + L1) and of the student (stage joint: distillation + L1)
at ``--batch`` images with LR crops of 64 (GT 256), the published setting but for the batch size, against a paired
SRResNet step on the same number of LR rows as the student.

    python benchmarks/lightbsr_cost.py [--repeats 3] [--batch 4] [--device cpu]
"""
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cost_command import run_cost_benchmark  # noqa: E402

from gsr.utils.profiling import inference_table, timed  # noqa: E402

SRRESNET = {'type': 'MSRResNet', 'num_feat': 64, 'num_block': 16, 'upscale': 4}
LIGHTBSR = {'type': 'LightBSR'}
TEACHER = {'type': 'LightBSR', 'prior_channels': 15, 'contrastive': True}


def inference(device: torch.device, repeats: int) -> None:
    from basicsr.archs import build_network
    torch.manual_seed(0)
    nets = {'SRResNet 64x16': build_network(dict(SRRESNET)), 'LightBSR student': build_network(dict(LIGHTBSR))}
    nets = {name: net.eval().to(device) for name, net in nets.items()}
    print(inference_table(nets, torch.rand(1, 3, 180, 320, device=device), repeats, 'SRResNet 64x16'))


def training_models(device: torch.device, batch: int, kernel_pca: str, teacher_path: str):
    from basicsr.models import build_model

    import gsr  # noqa: F401
    common = {'num_gpu': 1 if device.type == 'cuda' else 0, 'is_train': True, 'dist': False, 'rank': 0,
              'world_size': 1, 'scale': 4, 'kernel_pca': kernel_pca, 'stage': 'joint',
              'classic_degradation': {'kernel': 'iso'},
              'datasets': {'train': {'gt_size': 256, 'kernel_sets': 1, 'batch_size_per_gpu': batch}}}
    train = {'optim_g': {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.99]},
             'scheduler': {'type': 'MultiStepLR', 'milestones': [10**6]}, 'pixel_opt': {'type': 'L1Loss'}}
    teacher_opt = dict(common, model_type='LightBSRTeacherModel', patches=4, network_g=dict(TEACHER), path={},
                       train=dict(train, regularizers={'l_contrast': {'type': 'InfoNCELoss'}}))
    teacher = build_model(teacher_opt)
    torch.save({'params': teacher.get_bare_model(teacher.net_g).backbone.state_dict()}, teacher_path)
    student_opt = dict(common, model_type='LightBSRStudentModel', patches=1, network_g=dict(LIGHTBSR),
                       network_teacher=dict(TEACHER), path={'pretrain_network_teacher': teacher_path},
                       train=dict(train, regularizers={'l_distill': {'type': 'IDRDistillationLoss'}}))
    paired_opt = dict(common, model_type='GeneralizableSRModel', paired=True, network_g=dict(SRRESNET), path={},
                      train=train)
    for key in ('kernel_pca', 'stage', 'classic_degradation'):
        paired_opt.pop(key)
    paired_opt['datasets'] = {'train': {'gt_size': 256, 'kernel_sets': 2, 'batch_size_per_gpu': batch // 2}}
    return {'LightBSR teacher (B images x 4 crops)': teacher, 'LightBSR student (B crops)': build_model(student_opt),
            'paired SRResNet (B/2 crops x 2 copies)': build_model(paired_opt)}


def feed(model, rows: int, device: torch.device) -> None:
    """LightBSR models degrade random GT crops themselves; the paired reference gets fixed LR rows (pairs)."""
    from gsr.data.degraded_batch import DegradedBatch
    gt = torch.rand(rows, 3, 256, 256, device=device)
    if model.batch_builder.options.classic is not None:
        model.feed_data({'gt': gt})
        return
    index = torch.arange(rows, device=device)
    model.batch = DegradedBatch(gt, torch.rand(rows, 3, 64, 64, device=device), index % (rows // 2), index)


def training_table(device: torch.device, batch: int, repeats: int) -> None:
    from gsr.data.kernel_pca import resolve_kernel_pca
    with tempfile.TemporaryDirectory() as folder:
        models = training_models(device, batch, resolve_kernel_pca('embedded:kernel_pca'),
                                 os.path.join(folder, 'teacher.pth'))
        times = {name: [] for name in models}
        for it in range(1, repeats + 2):
            for name, model in models.items():
                feed(model, batch, device)  # B HR crops; the teacher's builder cuts its 4 crops from each
                t = timed(lambda: model.optimize_parameters(it), device)
                if it > 1:
                    times[name].append(t)
    print(f'\n| training step (B = {batch}, LR 64) | step (s) |\n|---|---|')
    for name, values in times.items():
        print(f'| {name} | {statistics.median(values):.3f} |')


def main() -> None:
    run_cost_benchmark(__doc__, 3, 4, 'B: HR images per training step', inference, training_table)


if __name__ == '__main__':
    main()
