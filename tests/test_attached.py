"""Modules attached to the network: owned by net_g, so optimised, saved, resumed, in the EMA copy and in inference."""
import os

import numpy as np
import pytest
import torch
from basicsr.archs import build_network

from gsr.archs.attached_arch import AttachedNetwork
from gsr.archs.network_checkpoint import checkpoint_entries, load_network, load_network_checkpoint
from gsr.utils.checkpoint import load_checkpoint, network_weights
from gsr.utils.errors import GsrError
from gsr.utils.image_io import list_images, read_image_uint8_rgb
from gsr.utils.inference import super_resolve
from tests.conftest import attached_and_bare, run_gsr, tiny_options, write_yaml

BACKBONE = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}
ADAPTER = {'type': 'ResidualConvAdapter', 'num_feat': 8}


def test_zero_initialised_adapter_leaves_the_output_unchanged():
    net, bare = attached_and_bare(BACKBONE, {'adapter': ADAPTER})
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(net(x), bare(x))
    torch.nn.init.normal_(net.attached['adapter'].conv.weight)
    assert not torch.allclose(net(x), bare(x))


def test_checkpoint_keeps_the_backbone_loadable_into_the_bare_architecture(tmp_path):
    net = AttachedNetwork(BACKBONE, {'adapter': ADAPTER})
    torch.nn.init.normal_(net.attached['adapter'].conv.weight)
    entries = checkpoint_entries(net, 'params')
    assert set(entries) == {'params', 'params_attached', 'attached_at_inference'}
    bare = build_network(dict(BACKBONE))
    bare.load_state_dict(entries['params'], strict=True)  # BasicSR's own loading works unchanged
    torch.save(entries, tmp_path / 'net.pth')
    fresh = AttachedNetwork(BACKBONE, {'adapter': ADAPTER})
    load_network_checkpoint(fresh, str(tmp_path / 'net.pth'))
    assert torch.equal(fresh.attached['adapter'].conv.weight, net.attached['adapter'].conv.weight)
    torch.save({'params': entries['params']}, tmp_path / 'bare.pth')
    with pytest.raises(GsrError, match='no weights for the attached module.*adapter'):
        load_network_checkpoint(fresh, str(tmp_path / 'bare.pth'))
    load_network_checkpoint(fresh, str(tmp_path / 'bare.pth'), strict=False)  # fine-tuning from a bare backbone


def test_a_network_without_its_inline_module_is_refused_a_training_only_one_loads_bare(tmp_path):
    for name, attach, inline in (('inline', ADAPTER, ['adapter']),
                                 ('training_only', dict(ADAPTER, inference=False), [])):
        net = AttachedNetwork(BACKBONE, {'adapter': attach})
        entries = checkpoint_entries(net, 'params')
        assert entries['attached_at_inference'] == inline
        torch.save(entries, tmp_path / f'{name}.pth')
    for bare in (AttachedNetwork(BACKBONE, {}), build_network(dict(BACKBONE))):
        with pytest.raises(GsrError, match=r'inline.pth was trained with the attached module\(s\) adapter, which act '
                                           'at inference, but the option file does not attach them'):
            load_network_checkpoint(bare, str(tmp_path / 'inline.pth'))
        load_network_checkpoint(bare, str(tmp_path / 'training_only.pth'))
    load_network_checkpoint(AttachedNetwork(BACKBONE, {'adapter': ADAPTER}), str(tmp_path / 'inline.pth'))


def test_attachment_errors_name_the_key():
    with pytest.raises(GsrError, match=r"attach.adapter: the module has num_feat 16 but the input of its layer has 8"):
        AttachedNetwork(BACKBONE, {'adapter': dict(ADAPTER, num_feat=16)})
    with pytest.raises(GsrError, match="attach.adapter.layer 'conv_lost' is not a layer of MSRResNet"):
        AttachedNetwork(BACKBONE, {'adapter': dict(ADAPTER, layer='conv_lost')})
    with pytest.raises(GsrError, match="attach.adapter.type 'Adapter' is not a registered network"):
        AttachedNetwork(BACKBONE, {'adapter': {'type': 'Adapter'}})


def _adapter_weight(path: str, key: str) -> torch.Tensor:
    return load_checkpoint(path)[key]['adapter.conv.weight']


@pytest.mark.slow
def test_attached_module_is_trained_saved_resumed_averaged_and_used_by_infer(tmp_path, small_photo_folder):
    opt = tiny_options(small_photo_folder, small_photo_folder, name='attached')
    opt['attach'] = {'adapter': dict(ADAPTER, lr=1e-2)}
    path = write_yaml(tmp_path / 'o.yml', opt)
    assert run_gsr(['train', '-opt', path], cwd=tmp_path).returncode == 0
    models = tmp_path / 'experiments' / 'attached' / 'models'
    weight4 = _adapter_weight(str(models / 'net_g_4.pth'), 'params_attached')
    assert weight4.abs().sum() > 0  # optimised from its zero initialisation
    ema4 = _adapter_weight(str(models / 'net_g_4.pth'), 'params_ema_attached')
    assert ema4.abs().sum() > 0 and not torch.equal(ema4, weight4)  # the EMA copy holds an average of it

    # resume to iteration 6: the adapter's weights come back from net_g_4.pth and its optimizer group resumes
    opt['train']['total_iter'] = 6
    write_yaml(tmp_path / 'o.yml', opt)
    result = run_gsr(['train', '-opt', path, '--auto_resume'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    log = open(sorted((tmp_path / 'experiments' / 'attached').glob('train_*.log'))[-1]).read()
    assert 'Resuming training from epoch' in log and 'iter: 4' in log
    state = torch.load(tmp_path / 'experiments' / 'attached' / 'training_states' / '6.state', weights_only=False)
    groups = state['optimizers'][0]['param_groups']
    assert [g['lr'] for g in groups] == [1e-3, 1e-2]
    adapter_params = groups[1]['params']
    assert all(state['optimizers'][0]['state'][i]['step'] == 6 for i in adapter_params)  # 4 steps + 2 resumed

    from basicsr.models import build_model
    opt.update(is_train=False, dist=False, rank=0, world_size=1)
    opt['path'].update(pretrain_network_g=str(models / 'net_g_4.pth'), param_key_g='params')
    model = build_model(opt)  # what BasicSR's check_resume makes the resumed run load
    assert torch.equal(model.net_g.attached['adapter'].conv.weight, weight4)

    # gsr infer runs the adapter: its output differs from the bare backbone's and equals the wrapper's
    out = tmp_path / 'sr'
    result = run_gsr(['infer', '-opt', path, '--checkpoint', str(models / 'net_g_6.pth'), '--input',
                      small_photo_folder, '--output', str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    image = list_images(small_photo_folder)[0]
    lr = read_image_uint8_rgb(image)
    sr = read_image_uint8_rgb(str(out / (os.path.splitext(os.path.basename(image))[0] + '.png')))
    wrapped = super_resolve(load_network(opt, str(models / 'net_g_6.pth')), lr, 4)
    backbone = build_network(dict(BACKBONE))
    backbone.load_state_dict(network_weights(str(models / 'net_g_6.pth'), 'params_ema'))  # BasicSR's own way
    bare = super_resolve(backbone.eval(), lr, 4)
    assert np.array_equal(sr, wrapped) and not np.array_equal(sr, bare)
