"""SAVL (our reading, docs/SAVL.md): the estimator's receptive field and clamping, the closed-form KL."""
import os

import pytest
import torch

from gsr.archs.savl_arch import SAVLDegrader, SAVLEstimator
from gsr.losses.savl_loss import gaussian_kl


def test_the_estimators_receptive_field_is_13x13():
    torch.manual_seed(0)
    estimator = SAVLEstimator(num_feat=8, latent_dim=4)
    assert estimator.receptive_field == 13
    lr = torch.rand(1, 3, 32, 32, requires_grad=True)
    mean, log_var = estimator(lr)
    assert mean.shape == log_var.shape == (1, 4, 32, 32)
    (mean[0, :, 16, 16].sum() + log_var[0, :, 16, 16].sum()).backward()
    reached = lr.grad[0].abs().sum(0) > 0
    rows, cols = torch.nonzero(reached, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 22, 10, 22)  # 16 +- 6: exactly 13 x 13
    assert reached[10:23, 10:23].float().mean() > 0.9


def test_an_overflowing_log_variance_is_clamped():
    estimator = SAVLEstimator(num_feat=8, latent_dim=4)
    with torch.no_grad():
        estimator.log_var.bias.fill_(1e4)
    _, log_var = estimator(torch.rand(1, 3, 8, 8))
    assert log_var.max() == 10.0
    r = SAVLEstimator.sample(torch.zeros_like(log_var), log_var)
    assert torch.isfinite(r).all() and torch.isfinite(gaussian_kl(torch.zeros_like(log_var), log_var)).all()


def test_kl_closed_form_matches_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mean = torch.randn(1, 3, 1, 1)
    log_var = torch.randn(1, 3, 1, 1) * 0.5
    samples = SAVLEstimator.sample(mean.expand(200000, -1, -1, -1), log_var.expand(200000, -1, -1, -1))
    var = log_var.exp()
    log_q = (-0.5 * ((samples - mean)**2 / var + log_var + torch.log(torch.tensor(2 * torch.pi)))).sum(1)
    log_p = (-0.5 * (samples**2 + torch.log(torch.tensor(2 * torch.pi)))).sum(1)
    monte_carlo = (log_q - log_p).mean()
    closed = gaussian_kl(mean, log_var, 'sum')[0, 0, 0]
    assert abs(float(monte_carlo - closed)) < 0.02 * float(closed) + 1e-3, (float(monte_carlo), float(closed))
    assert torch.allclose(gaussian_kl(mean, log_var, 'mean'), gaussian_kl(mean, log_var, 'sum') / 3)
    assert gaussian_kl(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1)).abs().max() == 0  # q = prior


def test_the_re_degrader_reconstructs_at_lr_size_and_uses_the_representation():
    torch.manual_seed(0)
    degrader = SAVLDegrader(num_feat=8, latent_dim=4, num_block=2)
    content = torch.rand(2, 3, 16, 16)
    out = degrader(content, torch.zeros(2, 4, 16, 16))
    assert out.shape == content.shape
    assert not torch.allclose(out, degrader(content, torch.randn(2, 4, 16, 16)))


def test_the_kl_loss_weights_and_warms_up():
    from gsr.data.degraded_batch import DegradedBatch
    from gsr.losses.loss_context import LossContext
    from gsr.losses.savl_loss import SAVLKLLoss
    torch.manual_seed(0)
    mean, log_var = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    rows = torch.arange(2)
    context = LossContext(DegradedBatch(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 8, 8), rows, rows),
                          torch.zeros(2, 3, 32, 32), records={'savl': {'mean': mean, 'log_var': log_var}})
    full = gaussian_kl(mean, log_var).mean()
    loss = SAVLKLLoss(loss_weight=1e-3, lambda_mis=1.0, warmup_iter=100)
    context.iteration = 50
    assert torch.isclose(loss(context), 1e-3 * 2 * 0.5 * full)
    context.iteration = 500
    assert torch.isclose(loss(context), 1e-3 * 2 * full)


# ------------------------------------------------------------------------------------------------ SR network
SMALL = {'num_feat': 16, 'depths': (2, ), 'num_heads': 2, 'window_size': 4, 'latent_dim': 8, 'estimator_feat': 8}


def test_paper_configuration_size_and_any_lr_size_runs_through_inference():
    from gsr.archs.savl_net_arch import SAVLNet
    from gsr.utils.inference import super_resolve_tensor
    count = sum(p.numel() for p in SAVLNet().parameters())
    assert abs(count - 14.0e6) / 14.0e6 < 0.05, count
    torch.manual_seed(0)
    net = SAVLNet(**SMALL).eval()
    assert super_resolve_tensor(net, torch.rand(1, 3, 13, 10), 4).shape == (1, 3, 52, 40)  # padded to the window


def test_both_modulations_are_the_identity_at_initialisation_and_act_once_trained():
    from gsr.archs.savl_net_arch import HybridAttentionBlock, severity_map, shift_mask
    torch.manual_seed(0)
    mask = shift_mask(8, 8, 4, 2, torch.device('cpu'))
    for mode in ('bias', 'multiply'):
        block = HybridAttentionBlock(16, 8, 4, 2, 2, mode).eval()
        x, mean = torch.rand(2, 16, 8, 8), torch.randn(2, 8, 8, 8)
        flat, varied = torch.zeros(2, 1, 8, 8), severity_map(torch.randn(2, 8, 8, 8))
        with torch.no_grad():
            assert torch.equal(block.modulation(x, mean), x)  # channel path: scale 2 sigmoid(0) = 1
            torch.testing.assert_close(block(x, mean, varied, mask), block(x, mean, flat, mask))  # gamma = 0
            block.attention.gamma.fill_(2.0)
            assert (block(x, mean, varied, mask) - block(x, mean, flat, mask)).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------ model
def tiny_savl(stage: str, **changes):
    import os

    from gsr.models.option_check import load_option_file
    from tests.conftest import REPO
    opt = load_option_file(os.path.join(REPO, 'options', 'tiny', f'train_savl_{stage}.yml'))
    opt['datasets']['train'].update(batch_size_per_gpu=2, gt_size=32, crop_pad_size=80)
    opt['train']['total_iter'] = 4
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2)
    opt['val']['val_freq'] = 4
    opt.update(changes)
    return opt


@pytest.mark.slow
def test_stage_b_leaves_the_estimator_unchanged(tmp_path, photo_folder):
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed

    from gsr.archs.network_checkpoint import checkpoint_entries
    from tests.test_model import fixed_batch
    runtime = {'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1}
    set_random_seed(0)
    stage_a = build_model(tiny_savl('a', **runtime))
    batch = fixed_batch(photo_folder, stage_a.opt)
    stage_a.feed_data(batch)
    stage_a.optimize_parameters(1)
    assert {'l_pix', 'l_rec', 'l_kl'} <= set(stage_a.log_dict)
    torch.save(checkpoint_entries(stage_a.get_bare_model(stage_a.net_g), 'params'), str(tmp_path / 'a.pth'))
    opt = tiny_savl('b', **runtime)
    opt['path']['pretrain_network_g'] = str(tmp_path / 'a.pth')
    stage_b = build_model(opt)
    net = stage_b.get_bare_model(stage_b.net_g).backbone
    estimator = {k: v.clone() for k, v in net.estimator.state_dict().items()}
    head = net.conv_first.weight.clone()
    for it in range(1, 4):
        stage_b.feed_data(batch)
        stage_b.optimize_parameters(it)
    assert all(torch.equal(v, net.estimator.state_dict()[k]) for k, v in estimator.items())
    assert not torch.equal(head, net.conv_first.weight) and set(stage_b.log_dict) == {'l_pix', 'l_total'}
    assert not hasattr(stage_b, 'net_degrader')


def test_stage_b_without_a_stage_a_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    import os

    from tests.conftest import gsr_error, write_yaml
    opt = tiny_savl('b')
    opt['path']['pretrain_network_g'] = None
    error = gsr_error(['train', '-opt', write_yaml(tmp_path / 'b.yml', opt)], tmp_path, monkeypatch, capsys)
    assert 'stage sr (B) fine-tunes the SR network of a stage-A run: set path.pretrain_network_g' in error
    assert os.listdir(tmp_path) == ['b.yml']


# ------------------------------------------------------------------------------------------------ spatial protocol
@pytest.mark.slow
def test_spatial_sets_have_true_maps_and_the_variance_analysis_reads_them(tmp_path, small_photo_folder):
    import json

    import numpy as np

    from gsr.archs.attached_arch import network_from_options
    from gsr.archs.network_checkpoint import checkpoint_entries
    from gsr.tools.degrade import write_spatial_sets
    from tests.conftest import run_gsr, write_yaml
    manifest = json.load(open(write_spatial_sets(small_photo_folder, str(tmp_path / 'sets'), progress=False)))
    assert manifest['families'] == ['gradient', 'blobs', 'halves']
    noise = np.load(next((tmp_path / 'sets' / 'maps_spatial' / 'gradient').glob('*_noise_sigma.npy')))
    assert noise.min() == 0 and abs(noise.max() - 30) < 1e-4  # the map spans [0, max_noise]
    opt = tiny_savl('a')
    torch.manual_seed(0)
    torch.save(checkpoint_entries(network_from_options(opt), 'params'), str(tmp_path / 'net.pth'))
    args = ['analyze', 'variance', '-opt', write_yaml(tmp_path / 'a.yml', opt), '--checkpoint',
            str(tmp_path / 'net.pth'), '--param-key', 'params', '--hr', small_photo_folder, '--sets',
            str(tmp_path / 'sets')]
    result = run_gsr(args + ['--output', str(tmp_path / 'out')], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    table = open(tmp_path / 'out' / 'variance.md').read()
    assert table.count('| 3 |') == 3 and len(list((tmp_path / 'out').glob('variance_*.png'))) == 3
    victim = next((tmp_path / 'sets' / 'maps_spatial' / 'halves').glob('*_blur_sigma.npy'))
    np.save(victim, np.zeros((3, 3), np.float32))
    result = run_gsr(args + ['--output', str(tmp_path / 'out2')], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count('\n') == 0
    assert 'is 3x3 but its LR image is' in result.stderr and 'the map folder does not match its images' in result.stderr


def test_the_leakage_probes_write_one_row_per_checkpoint_and_check_their_inputs_first(tmp_path, small_photo_folder):
    import re

    from gsr.archs.attached_arch import network_from_options
    from gsr.archs.network_checkpoint import checkpoint_entries
    from gsr.cli import main
    from tests.conftest import write_yaml
    opt = tiny_savl('a')
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        checkpoints.append(str(tmp_path / f'net{seed}.pth'))
        torch.save(checkpoint_entries(network_from_options(opt), 'params'), checkpoints[-1])
    args = ['analyze', 'leakage', '-opt', write_yaml(tmp_path / 'a.yml', opt), '--checkpoints', *checkpoints,
            '--param-key', 'params', '--hr', small_photo_folder, '--crop', '16', '--crops-per-image', '2']
    assert main(args + ['--output', str(tmp_path / 'out')]) == 0
    rows = [line for line in open(tmp_path / 'out' / 'leakage.md').read().splitlines()[2:] if line]
    assert [row.split(' | ')[0] for row in rows] == [f'| {c}' for c in checkpoints]
    accuracies = [float(v) for row in rows for v in re.findall(r'\| (\d\.\d+)', row)]
    assert len(accuracies) == 4 and all(0 <= a <= 1 for a in accuracies)
    assert main(args[:-1] + ['1', '--output', str(tmp_path / 'out1')]) == 2  # one crop position: nothing to test on
    assert not (tmp_path / 'out1').exists()


# ------------------------------------------------------------------------------------------------ CLUB ablation
def test_club_bound_on_a_known_gaussian_pair_and_on_independent_codes():
    """r = z + N(0, s^2) with z ~ N(0, 1) and q the true conditional N(z, s^2): CLUB's expected value is
    (Var r + Var z) / (2 s^2) - 1/2 = 4.0 per dimension for s = 0.5 (above the true I = 1/2 log 5 = 0.80); for r
    independent of z it is 0 in expectation."""
    import math

    from gsr.losses.savl_loss import club_bound
    torch.manual_seed(0)
    z = torch.randn(8, 4, 32, 32)
    s = 0.5
    r = z + s * torch.randn_like(z)
    log_var = torch.full_like(z, math.log(s * s))
    bound = club_bound(r, z, log_var).item()
    assert abs(bound - 4.0) < 0.1 and bound > 0.5 * math.log(5)
    independent = club_bound(torch.randn_like(z), z, torch.zeros_like(z)).item()
    assert abs(independent) < 0.05


def test_club_loss_trains_the_code_against_the_bound_and_the_conditional_to_fit():
    from gsr.losses.loss_context import LossContext
    from gsr.losses.savl_loss import SAVLCLUBLoss
    torch.manual_seed(0)
    r = torch.randn(2, 4, 8, 8, requires_grad=True)
    mean, log_var = torch.randn(2, 4, 8, 8, requires_grad=True), torch.zeros(2, 4, 8, 8, requires_grad=True)
    for loss_weight, likelihood_weight in ((1.0, 0.0), (0.0, 1.0)):
        for t in (r, mean, log_var):
            t.grad = None
        records = {'representation': r, 'club_mean': mean, 'club_log_var': log_var}
        context = LossContext(None, None, records={'savl': records})
        SAVLCLUBLoss(loss_weight, likelihood_weight)(context).backward()
        moves = [t.grad is not None and bool(t.grad.abs().sum() > 0) for t in (r, mean, log_var)]
        code_moves, conditional_moves = moves[0], moves[1] and moves[2]
        assert (code_moves, conditional_moves) == ((True, False) if loss_weight else (False, True))


def test_club_variant_trains_its_conditional_with_a_deterministic_code(photo_folder):
    from basicsr.models import build_model

    from tests.test_model import fixed_batch
    opt = tiny_savl('a', is_train=True, dist=False, rank=0, world_size=1, posterior='deterministic',
                    network_club={'type': 'CLUBConditional', 'num_feat': 8, 'latent_dim': 8, 'num_layers': 2})
    opt['train']['optim_club'] = dict(opt['train']['optim_g'])
    opt['train']['regularizers'] = {'l_rec': {'type': 'SAVLReconstructionLoss'},
                                    'l_club': {'type': 'SAVLCLUBLoss', 'loss_weight': 1e-2}}
    torch.manual_seed(0)
    model = build_model(opt)
    club = {k: v.clone() for k, v in model.net_club.state_dict().items()}
    batch = fixed_batch(photo_folder, opt)
    for it in range(1, 3):
        model.feed_data(batch)
        model.optimize_parameters(it)
    assert {'l_pix', 'l_rec', 'l_club'} <= set(model.log_dict) and 'l_kl' not in model.log_dict
    assert any(not torch.equal(v, model.net_club.state_dict()[k]) for k, v in club.items())


@pytest.mark.parametrize('change, expected', [
    ({'posterior': 'sampled'}, "posterior must be one of variational, deterministic, got 'sampled'"),
    ({'posterior': 'deterministic'}, 'train.regularizers.l_kl: SAVLKLLoss bounds a variational posterior'),
    ({'regularizers': {'l_club': {'type': 'SAVLCLUBLoss'}}}, 'train.regularizers.l_club: SAVLCLUBLoss needs '
     'network_club'),
    ({'network_club': {'type': 'CLUBConditional'}}, 'train.optim_club is missing'),
])
def test_savl_option_mistakes_are_one_line(tmp_path, change, expected, monkeypatch, capsys):
    from tests.conftest import gsr_error, write_yaml
    opt = tiny_savl('a')
    if 'regularizers' in change:
        opt['train']['regularizers'] = change['regularizers']
    else:
        opt.update(change)
    assert expected in gsr_error(['train', '-opt', write_yaml(tmp_path / 'a.yml', opt)], tmp_path, monkeypatch, capsys)
    assert os.listdir(tmp_path) == ['a.yml']


def test_stage_b_with_a_checkpoint_of_another_configuration_is_one_line(tmp_path, monkeypatch, capsys):
    from gsr.archs.savl_net_arch import SAVLNet
    from tests.conftest import gsr_error, write_yaml
    other = SAVLNet(num_feat=8, depths=[1], num_heads=2, window_size=8, latent_dim=8, estimator_feat=8)
    torch.save({'params': other.state_dict()}, str(tmp_path / 'other.pth'))
    opt = tiny_savl('b')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'other.pth')
    error = gsr_error(['train', '-opt', write_yaml(tmp_path / 'b.yml', opt)], tmp_path, monkeypatch, capsys)
    assert "other.pth is not a stage-A checkpoint of network_g's configuration (" in error
    assert sorted(os.listdir(tmp_path)) == ['b.yml', 'other.pth']


# ------------------------------------------------------------------------------------------------ option files
def savl_option(name: str, tmp_path):
    """An option file of options/ as a runtime dict; stage B's checkpoint is a fresh network of its configuration."""
    from gsr.archs.attached_arch import backbone_of, network_from_options
    from gsr.models.option_check import load_option_file
    from tests.conftest import REPO
    opt = load_option_file(os.path.join(REPO, 'options', name))
    opt.update(num_gpu=0, dist=False, rank=0, world_size=1, is_train=name.startswith('train'))
    if opt.get('stage') == 'sr' or not opt['is_train']:
        path = str(tmp_path / 'stage_a.pth')
        torch.save({opt['path'].get('param_key_g', 'params'): backbone_of(network_from_options(opt)).state_dict()},
                   path)
        opt['path']['pretrain_network_g'] = path
    return opt


@pytest.mark.parametrize('name', ['train_savl_a.yml', 'train_savl_b.yml', 'train_savl_a_no_mis.yml',
                                  'train_savl_a_elbo.yml', 'train_savl_a_club.yml'])
@pytest.mark.slow
def test_every_savl_training_file_builds_its_paper_size_model(name, tmp_path):
    from basicsr.models import build_model
    opt = savl_option(name, tmp_path)
    model = build_model(opt)
    assert set(model.regularizers) == set(opt['train'].get('regularizers') or {})
    assert 14.0e6 < sum(p.numel() for p in model.get_bare_model(model.net_g).parameters()) < 14.4e6
    assert hasattr(model, 'net_club') == ('club' in name)
    assert hasattr(model, 'net_degrader') == (name != 'train_savl_b.yml')


@pytest.mark.parametrize('name', ['test_savl.yml', 'test_savl_spatial.yml', 'test_savl_real.yml'])
def test_every_savl_test_file_evaluates_its_sets(name, tmp_path, small_photo_folder):
    """Each test file's model (a tiny SAVLNet in place of the paper's) and the first two of its dataset blocks, the
    paired ones pointed at a `gsr degrade --protocol spatial` folder, through BasicSR's validation step."""
    from basicsr.data import build_dataset
    from basicsr.models import build_model

    from gsr.tools.degrade import write_spatial_sets
    opt = savl_option(name, tmp_path)
    opt['network_g'].update(num_feat=8, depths=[1], num_heads=2, window_size=8, latent_dim=8, estimator_feat=8)
    opt['path']['pretrain_network_g'] = None
    model = build_model(opt)
    assert len(opt['datasets']) == {'test_savl.yml': 40, 'test_savl_spatial.yml': 9, 'test_savl_real.yml': 3}[name]
    sets = str(tmp_path / 'spatial')
    write_spatial_sets(small_photo_folder, sets, progress=False)
    for ds_opt in list(opt['datasets'].values())[:2]:
        ds_opt = dict(ds_opt, phase='test', scale=4)
        if ds_opt['type'] == 'PairedImageDataset':
            lq = os.path.join(sets, 'LR_spatial', 'blobs')
            ds_opt.update(dataroot_gt=os.path.join(sets, 'HR', 'x4'), dataroot_lq=lq)
        else:
            ds_opt['dataroot_gt'] = small_photo_folder
        item = build_dataset(ds_opt)[0]
        model.feed_data({'lq': item['lq'][None], 'gt': item['gt'][None]})
        model.test()
        assert model.output.shape == item['gt'][None].shape


# ------------------------------------------------------------------------------------------------ export
@pytest.mark.slow
def test_savl_net_exports_with_dynamic_size_and_without_the_re_degrader(tmp_path):
    """The inference network (estimator + SR network, modulations switched on) exports to ONNX once and matches
    PyTorch at two sizes (the second not a multiple of the window: padded inside the graph); the re-degrader of
    stage A is not part of it."""
    import onnx

    from gsr.archs.attached_arch import network_from_options
    from gsr.tools.export import ExportedNetwork, check_images, export_onnx, verify_onnx
    torch.manual_seed(0)
    opt = tiny_savl('a')
    net = ExportedNetwork(network_from_options(opt, for_inference=True), 4).eval()
    for name, p in net.named_parameters():
        if name.endswith('gamma') or 'modulation.mlp.2' in name:
            p.data.normal_(0, 0.3)
    export_onnx(net, torch.rand(1, 3, 24, 20), str(tmp_path / 'savl.onnx'), 18)
    differences = verify_onnx(str(tmp_path / 'savl.onnx'), net, check_images(None, 4), 1e-3)
    assert len(differences) == 2 and max(differences.values()) < 1e-3
    names = [t.name for t in onnx.load(str(tmp_path / 'savl.onnx')).graph.initializer]
    assert any('estimator' in n for n in names) and not any('degrader' in n for n in names)


def test_the_paper_scale_stage_a_runs_the_mi_suppression_and_its_ablation_does_not():
    """SAVL's named contribution is on by default (lambda_mis > 0) and off only in the ablation named for it."""
    from gsr.models.option_check import load_option_file
    from tests.conftest import REPO
    kl = {name: load_option_file(os.path.join(REPO, 'options', name))['train']['regularizers']['l_kl']
          for name in ('train_savl_a.yml', 'train_savl_a_elbo.yml')}
    assert kl['train_savl_a.yml']['lambda_mis'] > 0 and kl['train_savl_a_elbo.yml']['lambda_mis'] == 0
    assert {k: v for k, v in kl['train_savl_a.yml'].items() if k != 'lambda_mis'} == \
        {k: v for k, v in kl['train_savl_a_elbo.yml'].items() if k != 'lambda_mis'}
