"""Precision, channels_last and compile (training, validation, inference); ``gsr export``; ``gsr profile``."""
import json
import os

import numpy as np
import pytest
import torch
from basicsr.models import build_model

from gsr.archs.attached_arch import network_from_options
from gsr.archs.network_checkpoint import checkpoint_entries
from gsr.losses.loss_context import MAIN_TAP
from gsr.utils.checkpoint import load_training_state
from gsr.utils.errors import GsrError
from gsr.utils.inference import super_resolve_tensor
from tests.conftest import gsr_error, run_gsr, tiny_options, write_yaml

CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason='fp16 autocast exists only on CUDA; no GPU here')
TINY_ARCHS = {  # small configurations of the networks gsr's option files train
    'MSRResNet': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4},
    'RRDBNet': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4},
    'MSRN': {'type': 'MSRN', 'num_feat': 8, 'num_block': 1},
    'SwinIR': {'type': 'SwinIR', 'upscale': 4, 'img_size': 8, 'window_size': 4, 'embed_dim': 12, 'depths': [1],
               'num_heads': [2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffle'},
    'LightBSR': {'type': 'LightBSR', 'num_feat': 8, 'num_group': 1, 'num_block': 1, 'channel_idr': 8,
                 'encoder_widths': [8, 16, 32]},  # the student: LR only
}  # yapf: disable


def in_process(photo_folder, **overrides):
    opt = tiny_options(photo_folder, photo_folder, **overrides)
    opt.update(dist=False, rank=0, world_size=1, is_train=True)
    return opt


def first_step_context(opt, batch):
    """The model of ``opt`` and the LossContext of its training forward on ``batch``, every RNG seeded alike."""
    from basicsr.utils import set_random_seed
    set_random_seed(0)
    model = build_model(opt)
    model.feed_data(batch)
    return model, model.forward_train()


@pytest.fixture(scope='module')
def batch(photo_folder):
    from tests.test_model import fixed_batch
    return fixed_batch(photo_folder, in_process(photo_folder))


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize('settings, tolerance', [({'train.channels_last': True}, 1e-5),
                                                 ({'train.compile': True}, 1e-5),
                                                 ({'train.precision': 'bf16'}, 0.05)],
                         ids=['channels_last', 'compile', 'bf16'])
def test_execution_settings_give_the_default_outputs_and_features(settings, tolerance, photo_folder, batch):
    _, reference = first_step_context(in_process(photo_folder), batch)
    model, context = first_step_context(in_process(photo_folder, **settings), batch)
    assert context.output.dtype == torch.float32 and context.features[MAIN_TAP].dtype == torch.float32
    torch.testing.assert_close(context.output, reference.output, atol=tolerance, rtol=0)
    # the tap still captures under compile / autocast, and the regularizers see the same statistics
    torch.testing.assert_close(context.features[MAIN_TAP], reference.features[MAIN_TAP], atol=tolerance * 10, rtol=0)
    terms = model.loss_terms(context)
    assert set(terms) == {'l_pix', 'l_align', 'l_rff'} and all(torch.isfinite(t) for t in terms.values())
    terms['l_align'].backward()  # the alignment term's gradient reaches the backbone through the compiled graph
    assert model.get_bare_model(model.net_g).backbone.conv_first.weight.grad.abs().sum() > 0


def test_channels_last_training_keeps_the_network_in_that_format(photo_folder):
    model = build_model(in_process(photo_folder, **{'train.channels_last': True}))
    weight = model.get_bare_model(model.net_g).backbone.conv_first.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_validation_precision_is_close_to_fp32_and_returns_float32(photo_folder):
    lq = torch.rand(1, 3, 20, 28)
    outputs = {}
    for precision in ('fp32', 'bf16'):
        opt = in_process(photo_folder, **{'val.precision': precision, 'val.channels_last': precision == 'bf16'})
        torch.manual_seed(0)
        model = build_model(opt)
        model.lq = lq
        model.test()
        outputs[precision] = model.output
    assert outputs['bf16'].dtype == torch.float32
    assert 0 < (outputs['bf16'] - outputs['fp32']).abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['fp32', 'bf16', pytest.param('fp16', marks=CUDA_ONLY)])
def test_each_precision_trains_through_basicsr_train(precision, tmp_path, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder, name=f'p_{precision}',
                       **{'train.precision': precision, 'train.channels_last': precision != 'fp32',
                          'num_gpu': 1 if precision == 'fp16' else 0})
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt)], cwd=tmp_path, program='basicsr')
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(next((tmp_path / 'experiments' / f'p_{precision}').glob('train_*.log'))).read()
    losses = [float(part.split()[0]) for part in log.split('l_pix:')[1:]]
    assert len(losses) == 4 and np.all(np.isfinite(losses))


@pytest.mark.slow
def test_a_bf16_run_resumes_what_it_saved(tmp_path, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder, name='resume_bf16', **{'train.precision': 'bf16'})
    path = write_yaml(tmp_path / 'o.yml', opt)
    assert run_gsr(['train', '-opt', path], cwd=tmp_path).returncode == 0
    folder = tmp_path / 'experiments' / 'resume_bf16'
    saved = load_training_state(str(folder / 'training_states' / '4.state'))
    opt['train']['total_iter'] = 6
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt), '--auto_resume'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(sorted(folder.glob('train_*.log'))[-1]).read()
    assert 'Resuming training from epoch: ' in log and 'iter: 4' in log
    # the resumed run started from the saved Adam moments: its step counter continues from 4
    resumed = load_training_state(str(folder / 'training_states' / '6.state'))
    assert [s['step'] for s in saved['optimizers'][0]['state'].values()][0] == 4
    assert [s['step'] for s in resumed['optimizers'][0]['state'].values()][0] == 6


def test_the_fp16_gradient_scaler_is_saved_and_restored(photo_folder, tmp_path):
    """The fp16 path on CUDA, exercised with a CPU scaler: its scale and growth tracker go into the training state
    and come back on resume."""
    opt = in_process(photo_folder)
    opt['path']['training_states'] = str(tmp_path)
    model = build_model(opt)
    model.grad_scaler = torch.amp.GradScaler('cpu', init_scale=512.0, growth_interval=3)
    model.grad_scaler.scale(torch.ones(1, requires_grad=True))  # creates the scale tensor
    model.grad_scaler.update(256.0)
    model.save_training_state(0, 7)
    state = load_training_state(str(tmp_path / '7.state'))
    assert state['grad_scaler']['scale'] == 256.0
    fresh = build_model(opt)
    fresh.grad_scaler = torch.amp.GradScaler('cpu', init_scale=2.0**16)
    fresh.resume_training(state)
    assert fresh.grad_scaler.get_scale() == 256.0 and fresh.grad_scaler.get_growth_interval() == 3


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize('key, value, expected', [
    ('train.precision', 'fp16', 'train.precision: fp16 autocast needs a CUDA device'),
    ('train.precision', 'half', "train.precision: unknown precision 'half'; use one of fp32, bf16, fp16"),
    ('val.precision', 'fp8', "val.precision: unknown precision 'fp8'"),
    ('train.compile', 'fastest', "train.compile: 'fastest' is not false, true, auto or a torch.compile mode"),
    ('train.channels_last', 'yes', "train.channels_last must be true, false or auto, got 'yes'"),
])
def test_bad_execution_options_are_one_line_before_any_folder(key, value, expected, tmp_path, small_photo_folder,
                                                              monkeypatch, capsys):
    if key == 'train.precision' and value == 'fp16' and torch.cuda.is_available():
        pytest.skip('fp16 is valid where CUDA is available')
    path = write_yaml(tmp_path / 'o.yml', tiny_options(small_photo_folder, small_photo_folder, **{key: value}))
    assert expected in gsr_error(['train', '-opt', path], tmp_path, monkeypatch, capsys)
    assert os.listdir(tmp_path) == ['o.yml']


@pytest.mark.slow
def test_compile_without_a_compiler_is_an_error_unless_auto(tmp_path, small_photo_folder):
    no_compiler = {'CXX': '/nonexistent/g++'}  # inductor's C++ compiler on the CPU
    opt = tiny_options(small_photo_folder, small_photo_folder, name='nocc', **{'train.compile': True})
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt)], cwd=tmp_path, env=no_compiler)
    assert result.returncode == 2 and 'train.compile: torch.compile cannot compile on cpu here' in result.stderr
    assert 'use auto to fall back' in result.stderr and os.listdir(tmp_path) == ['o.yml']
    opt['train']['compile'] = 'auto'
    result = run_gsr(['train', '-opt', write_yaml(tmp_path / 'o.yml', opt)], cwd=tmp_path, env=no_compiler)
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(next((tmp_path / 'experiments' / 'nocc').glob('train_*.log'))).read()
    assert 'running uncompiled' in log and log.count('l_total:') == 4


@pytest.mark.parametrize('native, device_type, expected', [
    (True, 'cpu', ('bf16', True)), (False, 'cpu', ('fp32', False)), (True, 'cuda', ('bf16', True)),
    (False, 'cuda', ('fp32', True)),
])
def test_auto_chooses_bf16_only_where_the_hardware_computes_it(native, device_type, expected, monkeypatch):
    from gsr.utils import execution
    monkeypatch.setattr(execution, 'native_bf16', lambda device: native)
    monkeypatch.setattr(execution, 'compiler_unavailable', lambda device: None)
    options = execution.execution_options({'precision': 'auto', 'channels_last': 'auto'}, 'train', device_type)
    assert (options.precision, options.channels_last) == expected
    pinned = execution.execution_options({'precision': 'auto', 'channels_last': False}, 'train', device_type)
    assert (pinned.precision, pinned.channels_last) == (expected[0], False)


def test_bf16_by_name_on_a_cpu_without_it_warns(monkeypatch, caplog):
    from gsr.utils import execution
    monkeypatch.setattr(execution, 'native_bf16', lambda device: False)
    assert execution.execution_options({'precision': 'bf16'}, 'train', 'cpu').precision == 'bf16'
    warnings = [r.message for r in caplog.records if r.levelname == 'WARNING']
    assert len(warnings) == 1 and 'train.precision: bf16 on a CPU without AVX512-BF16' in warnings[0]
    monkeypatch.setattr(execution, 'native_bf16', lambda device: True)
    execution.execution_options({'precision': 'bf16'}, 'train', 'cpu')
    assert len([r for r in caplog.records if r.levelname == 'WARNING']) == 1


# ------------------------------------------------------------------------------------------------ inference
def test_inference_pads_window_networks_to_their_multiple():
    torch.manual_seed(0)
    net = network_from_options({'network_g': TINY_ARCHS['SwinIR']}, for_inference=True).eval()
    odd, even = torch.rand(1, 3, 13, 10), torch.rand(1, 3, 12, 8)
    assert super_resolve_tensor(net, odd, 4).shape == (1, 3, 52, 40)
    with torch.no_grad():
        torch.testing.assert_close(super_resolve_tensor(net, even, 4), net(even))  # a multiple: no padding


def save_checkpoint(net, path) -> str:
    torch.save(checkpoint_entries(net, 'params'), str(path))
    return str(path)


@pytest.mark.slow
def test_infer_with_bf16_and_channels_last(tmp_path, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(network_from_options(opt), tmp_path / 'net.pth')
    option_file = write_yaml(tmp_path / 'o.yml', opt)
    outputs = {}
    for name, flags in (('fp32', []), ('bf16', ['--precision', 'bf16', '--channels-last'])):
        result = run_gsr(['infer', '-opt', option_file, '--checkpoint', checkpoint, '--input', small_photo_folder,
                          '--output', str(tmp_path / name)] + flags, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[name] = [np.asarray(__import__('cv2').imread(str(p))).astype(int)
                         for p in sorted((tmp_path / name).glob('*.png'))]
    assert len(outputs['bf16']) == 3
    differences = [np.abs(a - b).max() for a, b in zip(outputs['fp32'], outputs['bf16'])]
    assert max(differences) <= 12, differences  # bf16 keeps 8 significant bits: a few 8-bit levels at most
    result = run_gsr(['infer', '-opt', option_file, '--checkpoint', checkpoint, '--input', small_photo_folder,
                      '--output', str(tmp_path / 'fp16'), '--precision', 'fp16', '--device', 'cpu'], cwd=tmp_path)
    assert result.returncode == 2 and 'gsr: error: --precision: fp16 autocast needs a CUDA device' in result.stderr


@pytest.mark.slow
def test_evaluate_takes_the_precision_and_keys_its_cache_on_it(tmp_path, small_photo_folder):
    from gsr.analysis.evaluation import load_config, result_id
    opt = tiny_options(small_photo_folder, small_photo_folder)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(network_from_options(opt), tmp_path / 'net.pth')
    config = {'datasets': {'photos': small_photo_folder}, 'device': 'cpu', 'output': str(tmp_path / 'out'),
              'models': {'m': {'option_file': write_yaml(tmp_path / 'o.yml', opt), 'checkpoint': checkpoint}}}
    path = write_yaml(tmp_path / 'evaluate.yml', config)
    fp32, bf16 = load_config(path), load_config(path, {'precision': 'bf16'})
    assert bf16['execution'].precision == 'bf16' and result_id(fp32, 'm') != result_id(bf16, 'm')
    result = run_gsr(['evaluate', path, '--precision', 'fp16'], cwd=tmp_path)
    assert result.returncode == 2 and 'evaluate.yml: precision: fp16 autocast needs a CUDA device' in result.stderr


# ------------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize('arch', list(TINY_ARCHS))
@pytest.mark.slow
def test_export_matches_pytorch_at_two_sizes(arch, tmp_path):
    from gsr.tools.export import ExportedNetwork, check_images, export_onnx, verify_onnx
    torch.manual_seed(0)
    net = ExportedNetwork(network_from_options({'network_g': TINY_ARCHS[arch]}, for_inference=True), 4).eval()
    images = check_images(None, 4)
    export_onnx(net, torch.rand(1, 3, 24, 20), str(tmp_path / 'net.onnx'), 18)
    differences = verify_onnx(str(tmp_path / 'net.onnx'), net, images, 1e-4)
    assert len(differences) == 2 and max(differences.values()) < 1e-4  # the odd size runs: dynamic H and W


@pytest.mark.slow
def test_export_cli_and_a_perturbed_weight_fails_the_check(tmp_path, small_photo_folder):
    import onnx
    from onnx import numpy_helper

    from gsr.tools.export import ExportedNetwork, check_images, verify_onnx
    opt = tiny_options(small_photo_folder, small_photo_folder)
    torch.manual_seed(0)
    net = network_from_options(opt)
    checkpoint = save_checkpoint(net, tmp_path / 'net.pth')
    option_file = write_yaml(tmp_path / 'o.yml', opt)
    output = tmp_path / 'out' / 'net.onnx'
    args = ['export', '-opt', option_file, '--checkpoint', checkpoint, '--output', str(output)]
    result = run_gsr(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'opset 18' in result.stdout and 'max |onnxruntime - PyTorch|' in result.stdout
    again = run_gsr(args, cwd=tmp_path)
    assert again.returncode == 2 and 'exists: choose another --output or pass --overwrite' in again.stderr
    model = onnx.load(str(output))
    weight = next(w for w in model.graph.initializer if w.name.endswith('conv_last.weight'))
    perturbed = numpy_helper.to_array(weight) + np.float32(1.0)  # moves the output by about 7e-3 here
    weight.CopyFrom(numpy_helper.from_array(perturbed, weight.name))
    onnx.save(model, str(tmp_path / 'perturbed.onnx'))
    reference = ExportedNetwork(net, 4).eval()
    with pytest.raises(GsrError, match='differs from PyTorch by .* nothing was written'):
        verify_onnx(str(tmp_path / 'perturbed.onnx'), reference, check_images(None, 4), 1e-3)


def test_an_opset_the_exporter_cannot_reach_is_refused_not_mislabelled(tmp_path):
    from gsr.tools.export import ExportedNetwork, export_onnx
    net = ExportedNetwork(network_from_options({'network_g': TINY_ARCHS['MSRResNet']}, for_inference=True), 4).eval()
    with pytest.raises(GsrError, match=r'^--opset 7: torch.onnx could not convert the network to opset 7 \(it wrote '
                                       r'opset 18\)'):
        export_onnx(net, torch.rand(1, 3, 24, 20), str(tmp_path / 'net.onnx'), 7)


class Eigenvalues(torch.nn.Module):
    """A network with an operator ONNX has no form for (a symmetric eigendecomposition)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gram = x[0, 0] @ x[0, 0].T
        return torch.linalg.eigvalsh(gram).sum() + x.repeat_interleave(4, -1).repeat_interleave(4, -2)


def test_export_of_an_operator_onnx_lacks_names_it():
    from gsr.tools.export import export_onnx
    with pytest.raises(GsrError, match=r'^the network uses aten\._linalg_eigh, which ONNX \(opset 18\) cannot '):
        export_onnx(Eigenvalues().eval(), torch.rand(1, 3, 8, 8), os.devnull, 18)


class SizedByPythonNumbers(torch.nn.Module):
    """A network that builds a frequency grid with ``torch.fft.fftfreq``, which takes the width as a Python number
    (TFD's frequency path did, until it built the grid from ``arange``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.fft.fftfreq(x.shape[-1])


def test_export_of_a_network_fixed_to_its_input_size_is_one_line():
    from gsr.tools.export import export_onnx
    with pytest.raises(GsrError, match=r'^the network fixes its input size while it is traced \(to 12 here: sizes '
                       r'used as Python numbers\), so it cannot be exported with dynamic height and width$'):
        export_onnx(SizedByPythonNumbers().eval(), torch.rand(1, 3, 8, 12), os.devnull, 18)


# ------------------------------------------------------------------------------------------------ profile
@pytest.mark.slow
def test_profile_reports_the_modules_parameters_and_flops(tmp_path, small_photo_folder):
    from gsr.utils.profiling import flop_count
    opt = tiny_options(small_photo_folder, small_photo_folder)
    result = run_gsr(['profile', '-opt', write_yaml(tmp_path / 'o.yml', opt), '--lr-size', '20x28', '--runs', '2',
                      '--json', str(tmp_path / 'p.json')], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.load(open(tmp_path / 'p.json'))
    net = network_from_options(opt, for_inference=True).eval()
    assert figures['parameters'] == sum(p.numel() for p in net.parameters())
    assert figures['flops'] == flop_count(net, torch.rand(1, 3, 20, 28)) > 0
    assert len(figures['times_s']) == 2 and figures['peak_memory_mb'] > 0
    assert f'parameters  {figures["parameters"]:,}' in result.stdout
    bad = run_gsr(['profile', '-opt', str(tmp_path / 'o.yml'), '--lr-size', '20by28'], cwd=tmp_path)
    assert bad.returncode == 2 and "'20by28' is not HxW" in bad.stderr
