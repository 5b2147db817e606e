"""Each system's whole life on the CPU, as a user runs it: ``basicsr train``, killed and resumed with
``--auto_resume``, then the trained checkpoint through ``basicsr test``, ``gsr infer`` and ``gsr export``.

One run per system is trained once (a module-scoped fixture) and only read by the tests that follow it; each test
writes into its own folder.
"""
import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
import torch

from gsr.cli import main
from gsr.utils.checkpoint import load_checkpoint
from gsr.utils.image_io import list_images, read_image_uint8_rgb
from tests.conftest import run_gsr, tiny_options, write_yaml
from tests.test_lightbsr import tiny as tiny_lightbsr
from tests.test_savl import tiny_savl
from tests.test_tfd import tfd_options

pytestmark = pytest.mark.slow


@dataclass
class TrainedRun:
    """What a system's training left: the folder it ran in, the final network's training options and checkpoint,
    the logs of the first and the resumed run, and what else the system's checks read."""
    folder: Path
    options: Dict[str, Any]
    checkpoint: Path
    logs: List[str]
    extra: Dict[str, Any] = field(default_factory=dict)

    def options_file(self, folder: Path) -> str:
        """The final network's training options, written into ``folder`` (the run's own folder is only read)."""
        return write_yaml(folder / 'network.yml', self.options)


def train(folder: Path, opt: Dict[str, Any], name: str, flags=()) -> None:
    """``basicsr train -opt <name>.yml`` in ``folder``: the console script users launch."""
    result = run_gsr(['train', '-opt', write_yaml(folder / f'{name}.yml', opt)] + list(flags), cwd=folder,
                     program='basicsr')
    assert result.returncode == 0, result.stderr[-3000:]


def train_then_resume(folder: Path, opt: Dict[str, Any], first: int, last: int) -> List[str]:
    """Train to ``first`` iterations, then resume the same option file to ``last``; the two runs' logs."""
    opt = copy.deepcopy(opt)
    for total_iter, flags in ((first, []), (last, ['--auto_resume'])):
        opt['train']['total_iter'] = total_iter
        train(folder, opt, opt['name'], flags)
    return [open(p).read() for p in sorted((folder / 'experiments' / opt['name']).glob('train_*.log'))]


def models(folder: Path, name: str) -> Path:
    return folder / 'experiments' / name / 'models'


def train_srresnet_align(folder: Path, photos: str) -> TrainedRun:
    opt = tiny_options(photos, photos)
    logs = train_then_resume(folder, opt, 4, 8)
    return TrainedRun(folder, opt, models(folder, 'tiny') / 'net_g_8.pth', logs)


def train_tfd(mode: str) -> Callable[[Path, str], TrainedRun]:
    def run(folder: Path, photos: str) -> TrainedRun:
        opt = tfd_options(photos, mode=mode, name=f'tfd_{mode}')
        opt['attach']['tfd']['inference'] = mode == 'inline'  # training_only: the bare network at inference
        logs = train_then_resume(folder, opt, 4, 6)
        return TrainedRun(folder, opt, models(folder, f'tfd_{mode}') / 'net_g_6.pth', logs)

    return run


def train_lightbsr(folder: Path, photos: str) -> TrainedRun:
    """The teacher (resumed: its MoCo queue continues), then the student initialised from and distilled by it
    (resumed: its weights from the state, not from the teacher again)."""
    teacher = tiny_lightbsr('teacher', stage='encoder', find_unused_parameters=True)
    teacher['train'].pop('pixel_opt')
    teacher_logs = train_then_resume(folder, teacher, 2, 4)
    teacher_models = models(folder, 'tiny_lightbsr_teacher')
    student = tiny_lightbsr('student')
    student['path']['pretrain_network_teacher'] = str(teacher_models / 'net_g_latest.pth')
    student['val'].update(val_freq=2)
    logs = train_then_resume(folder, student, 2, 4)
    return TrainedRun(folder, student, models(folder, 'tiny_lightbsr_student') / 'net_g_4.pth', logs,
                      extra={'teacher': teacher, 'teacher_models': teacher_models, 'teacher_logs': teacher_logs})


def train_savl(folder: Path, photos: str) -> TrainedRun:
    """Stage A (estimator, SR network and re-degrader; resumed), then stage B fine-tuning its SR network."""
    stage_a = tiny_savl('a')
    logs = train_then_resume(folder, stage_a, 2, 4)
    stage_b = tiny_savl('b')
    stage_b['path']['pretrain_network_g'] = str(models(folder, 'tiny_savl_a') / 'net_g_4.pth')
    train(folder, stage_b, 'stage_b')
    return TrainedRun(folder, stage_b, models(folder, 'tiny_savl_b') / 'net_g_latest.pth', logs,
                      extra={'stage_a_models': models(folder, 'tiny_savl_a')})


SYSTEMS = {
    'srresnet_align': train_srresnet_align,
    'tfd_inline': train_tfd('inline'),
    'tfd_training_only': train_tfd('training_only'),
    'lightbsr': train_lightbsr,
    'savl': train_savl,
}


@pytest.fixture(scope='module', params=list(SYSTEMS))
def trained(request, tmp_path_factory, small_photo_folder) -> TrainedRun:
    folder = tmp_path_factory.mktemp(request.param)
    return SYSTEMS[request.param](folder, small_photo_folder)


# ------------------------------------------------------------------------------------------------ resume
def resumed_at(log: str, iteration: int) -> bool:
    return f'Resuming training from epoch: 0, iter: {iteration}.' in log


def check_srresnet_align(run: TrainedRun) -> None:
    exp = run.folder / 'experiments' / 'tiny'
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state', '6.state', '8.state']
    assert set(torch.load(run.checkpoint, weights_only=True)) == {'params', 'params_ema'}
    first, resumed = run.logs
    assert resumed_at(resumed, 4)
    assert 'iter:       5,' in resumed and 'iter:       1,' not in resumed and 'iter:       8,' in resumed
    assert len(re.findall(r'l_align: [-+.e0-9]+ ', first + resumed)) == 8  # the regularizer on every step


def check_tfd(run: TrainedRun) -> None:
    saved = load_checkpoint(str(run.checkpoint))
    assert {'params', 'params_ema', 'params_attached', 'params_ema_attached'} <= set(saved)
    from basicsr.archs import build_network
    build_network(dict(run.options['network_g'])).load_state_dict(saved['params_ema'])  # net_g: the bare arch
    assert resumed_at(run.logs[1], 4)
    # the module's optimizer group resumed with the backbone's: every parameter's Adam step is the iteration
    state = torch.load(run.checkpoint.parent.parent / 'training_states' / '6.state', weights_only=False)
    optimizer = state['optimizers'][0]
    steps = [optimizer['state'][i]['step'] for group in optimizer['param_groups'] for i in group['params']
             if i in optimizer['state']]
    assert steps and all(s == 6 for s in steps)


def check_lightbsr(run: TrainedRun) -> None:
    saved = load_checkpoint(str(run.extra['teacher_models'] / 'net_g_2.pth'))['params']
    final = load_checkpoint(str(run.extra['teacher_models'] / 'net_g_4.pth'))['params']
    keys_per_step = 2  # the first crop of each of the 2 images is enqueued every step
    assert int(saved['queue_ptr']) == 2 * keys_per_step and int(final['queue_ptr']) == 4 * keys_per_step
    # the resumed teacher continued the saved queue: the columns written before the stop are still there
    assert torch.equal(final['queue'][:, :2 * keys_per_step], saved['queue'][:, :2 * keys_per_step])
    assert resumed_at(run.extra['teacher_logs'][1], 2)
    first, resumed = run.logs
    assert 'student initialised from the teacher' in first and '# psnr:' in first
    assert resumed_at(resumed, 2) and 'student initialised' not in resumed  # the resumed student's own weights
    assert len(re.findall(r'l_distill: [-+.e0-9]+ ', first + resumed)) == 4


def check_savl(run: TrainedRun) -> None:
    first, resumed = run.logs
    assert resumed_at(resumed, 2) and len(re.findall(r'l_kl: [-+.e0-9]+ ', resumed)) == 2
    stage_a = run.extra['stage_a_models']
    assert {'net_g_4.pth', 'net_degrader_4.pth'} <= set(os.listdir(stage_a))
    assert 'params' in load_checkpoint(str(stage_a / 'net_degrader_4.pth'))


RESUME_CHECKS = {'srresnet_align': check_srresnet_align, 'tfd_inline': check_tfd, 'tfd_training_only': check_tfd,
                 'lightbsr': check_lightbsr, 'savl': check_savl}


def test_training_resumes_where_it_stopped(trained, request):
    RESUME_CHECKS[request.node.callspec.params['trained']](trained)


# ------------------------------------------------------------------------------------------------ use
def test_the_test_pipeline_scores_the_checkpoint(trained, tmp_path):
    """``basicsr test`` with the training file's model and network blocks and its validation set."""
    opt = {k: v for k, v in trained.options.items() if k not in ('train', 'logger', 'network_teacher')}
    opt.update(name='lifecycle_test', datasets={'test_1': dict(trained.options['datasets']['val'], name='photos')},
               path={'pretrain_network_g': str(trained.checkpoint), 'param_key_g': 'params_ema',
                     'strict_load_g': True})
    result = run_gsr(['test', '-opt', write_yaml(tmp_path / 'test.yml', opt)], cwd=tmp_path, program='basicsr')
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(next((tmp_path / 'results' / 'lifecycle_test').glob('test_*.log'))).read()
    psnrs = [float(v) for v in re.findall(r'# psnr: ([0-9.]+)', log)]
    assert len(psnrs) == 1 and 5 < psnrs[0] < 50, log[-2000:]


def test_infer_super_resolves_a_folder_with_the_checkpoint(trained, tmp_path, small_photo_folder, capsys):
    out = tmp_path / 'sr'
    assert main(['infer', '-opt', trained.options_file(tmp_path), '--checkpoint', str(trained.checkpoint), '--input',
                 small_photo_folder, '--output', str(out), '--device', 'cpu']) == 0
    scale = trained.options['scale']
    for path in list_images(small_photo_folder):
        lr = read_image_uint8_rgb(path)
        sr = read_image_uint8_rgb(str(out / (Path(path).stem + '.png')))
        assert sr.shape == (lr.shape[0] * scale, lr.shape[1] * scale, 3)
        assert np.std(sr) > 1  # an image, not a constant


def test_export_matches_pytorch(trained, tmp_path, capsys):
    """``gsr export`` of the trained checkpoint: it checks onnxruntime against PyTorch itself before it writes."""
    pytest.importorskip('onnxruntime')
    onnx_file = tmp_path / 'net.onnx'
    assert main(['export', '-opt', trained.options_file(tmp_path), '--checkpoint', str(trained.checkpoint), '--output',
                 str(onnx_file)]) == 0
    assert onnx_file.stat().st_size > 0 and 'max |onnxruntime - PyTorch|' in capsys.readouterr().out


@pytest.mark.parametrize('trained', ['lightbsr'], indirect=True)
def test_the_trained_teacher_idr_is_analysed(trained, tmp_path, small_photo_folder):
    """The teacher's IDR under the blind-iso kernels, each with its prior (noise 0 in this protocol)."""
    teacher = write_yaml(tmp_path / 'teacher.yml', trained.extra['teacher'])
    result = run_gsr(['analyze', 'ddr', '-opt', teacher, '--checkpoint',
                      str(trained.extra['teacher_models'] / 'net_g_latest.pth'), '--param-key', 'params', '--hr',
                      small_photo_folder, '--protocol', 'blind-iso', '--crop', '16', '--output',
                      str(tmp_path / 'ddr')], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Calinski-Harabasz' in open(tmp_path / 'ddr' / 'ddr.md').read()
