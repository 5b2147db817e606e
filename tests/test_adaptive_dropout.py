"""Adaptive Dropout (Xu et al., CVPR 2025): the blend, its positions in MSRResNet, the schedule that switches them off
shallow to deep, and a checkpoint that is the bare network's."""
import pytest
import torch
from basicsr.archs import build_network

from gsr.archs.adaptive_dropout_arch import AdaptiveDropout
from gsr.archs.attached_arch import network_from_options
from gsr.archs.network_checkpoint import checkpoint_entries
from gsr.utils.errors import GsrError
from tests.conftest import copies_batch, tiny_options


def test_the_blend_keeps_each_channel_or_drops_its_copy_and_is_the_identity_when_off():
    """z = p·x + (1 - p)·Dropout2d_r(x): a kept channel is (p + (1 - p) / (1 - r))·x, a dropped one p·x; the
    identity at evaluation and from ``off_at`` on."""
    torch.manual_seed(0)
    module = AdaptiveDropout(identity_weight=0.3, dropout_rate=0.5, off_at=10).train()
    x = torch.rand(4, 32, 6, 6) + 0.1
    factors = module(x) / x
    ratio = factors.amax(dim=(2, 3))
    assert torch.allclose(ratio, factors.amin(dim=(2, 3)))  # one factor per channel
    kept = torch.isclose(ratio, torch.tensor(0.3 + 0.7 * 2))
    dropped = torch.isclose(ratio, torch.tensor(0.3))
    assert bool((kept | dropped).all()) and 0 < int(dropped.sum()) < ratio.numel()
    module.set_iteration(10)
    assert not module.active and torch.equal(module(x), x)
    module.set_iteration(9)
    assert module.active and torch.equal(module.eval()(x), x)


def test_the_released_positions_are_switched_off_shallow_to_deep_as_training_goes_on(photo_folder):
    """The 17 positions of SRResNet (here 2 blocks: 3), the k-th off from ``switch_every`` x (k + 1); the model sets
    the iteration before each step, so a resumed run (a model first stepped at 5) follows the same schedule."""
    from basicsr.models import build_model
    opt = tiny_options(photo_folder, photo_folder, paired=False, adaptive_dropout={'switch_every': 2})
    opt['network_g']['num_block'] = 2
    opt['datasets']['train']['kernel_sets'] = 1
    opt['train'].pop('regularizers')
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    model = build_model(opt)
    modules = model.net_g.attached
    assert [(model.net_g.points[n].layer, model.net_g.points[n].capture) for n in modules] == [
        ('body.0.conv1', 'output'), ('body.1.conv1', 'output'), ('conv_last', 'input')]
    model.batch = copies_batch(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32), copies=1)
    active = []
    for it in (1, 2, 3, 4, 6):
        model.optimize_parameters(it)
        active.append([m.active for m in modules.values()])
    assert active == [[True] * 3, [False, True, True], [False, True, True], [False, False, True], [False] * 3]
    resumed = build_model(opt)
    resumed.batch = model.batch
    resumed.optimize_parameters(5)
    assert [m.active for m in resumed.net_g.attached.values()] == [False, False, True]


def test_the_network_for_inference_and_the_checkpoint_are_the_bare_msrresnet():
    opt = {'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
           'adaptive_dropout': {}}
    assert len(network_from_options(opt).attached) == 3
    assert len(network_from_options(opt, for_inference=True).attached) == 0
    entries = checkpoint_entries(network_from_options(opt), 'params')
    assert list(entries) == ['params']  # nothing attached to save: a checkpoint of the bare network
    assert set(entries['params']) == set(build_network(dict(opt['network_g'])).state_dict())


def test_adaptive_dropout_mistakes_are_one_error_naming_the_key():
    net = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4}
    with pytest.raises(GsrError, match='adaptive_dropout: its positions are known for MSRResNet'):
        network_from_options({'network_g': net, 'adaptive_dropout': {}})
    msrresnet = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}
    with pytest.raises(GsrError, match='adaptive_dropout.switch_every'):
        network_from_options({'network_g': msrresnet, 'adaptive_dropout': {'switch_every': 'often'}})
    with pytest.raises(GsrError, match='adaptive_dropout.switch_every must be at least 1, got 0'):
        network_from_options({'network_g': msrresnet, 'adaptive_dropout': {'switch_every': 0}})
    with pytest.raises(GsrError, match='dropout_rate must be in'):
        network_from_options({'network_g': msrresnet, 'adaptive_dropout': {'dropout_rate': 1.0}})
