"""SAVL (our reading, docs/SAVL.md): the estimator's receptive field and clamping, the closed-form KL."""
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
    from gsr.archs.savl_net_arch import HybridAttentionBlock, severity_map
    torch.manual_seed(0)
    for mode in ('bias', 'multiply'):
        block = HybridAttentionBlock(16, 8, 4, 2, 2, mode).eval()
        x, mean = torch.rand(2, 16, 8, 8), torch.randn(2, 8, 8, 8)
        flat, varied = torch.zeros(2, 1, 8, 8), severity_map(torch.randn(2, 8, 8, 8))
        with torch.no_grad():
            assert torch.equal(block.modulation(x, mean), x)  # channel path: scale 2 sigmoid(0) = 1
            torch.testing.assert_close(block(x, mean, varied), block(x, mean, flat))  # spatial path: gamma = 0
            block.attention.gamma.fill_(2.0)
            assert (block(x, mean, varied) - block(x, mean, flat)).abs().max() > 1e-4
