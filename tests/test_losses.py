"""Alignment losses: equal to a plain per-pair reference, zero for identical copies, gradients reach the input."""
import math

import pytest
import torch

from gsr.data.degraded_batch import DegradedBatch
from gsr.losses.feature_alignment_loss import FeatureAlignmentLoss
from gsr.losses.feature_matching_loss import FeatureMatchingLoss
from gsr.losses.loss_context import MAIN_TAP, LossContext
from gsr.losses.rff_alignment_loss import RFFAlignmentLoss, official_rff_map, rff_map
from gsr.losses.statistics import FeaturePair
from gsr.losses.tfd_loss import TwinFeatureLoss
from gsr.utils.errors import GsrError


def reference_reg(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Simple-Align's ``reg`` for one pair of 1 x C rows, written out literally."""
    c = x.shape[1]
    mean_term = ((x - y)**2).sum() / c
    cov_term = ((x.t() @ x - y.t() @ y)**2).sum() / c**2
    return mean_term + cov_term


def reference_official_rff(z: torch.Tensor, w: float, b: torch.Tensor) -> torch.Tensor:
    """The released RFF map for one 2 x C stack, one row at a time."""
    rows = []
    for row in z:
        a = w * row + b
        a = (a - a.min()) / (a - a.min()).max() * math.pi / 2
        rows.append(math.sqrt(2) * (torch.cos(a) + torch.sin(a)))
    return torch.stack(rows)


ALL_LOSSES = [
    FeatureAlignmentLoss(),
    FeatureAlignmentLoss(mode='spatial'),
    RFFAlignmentLoss(),
    RFFAlignmentLoss(mode='rff'),
    FeatureMatchingLoss()
]


def features(seed: int = 0, b: int = 4, c: int = 16, hw: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(
        b, c, hw, hw, generator=g, dtype=torch.float64), torch.randn(
            b, c, hw, hw, generator=g, dtype=torch.float64)


def paired(f1: torch.Tensor, f2: torch.Tensor) -> LossContext:
    """The context of a step whose rows are [copy 1; copy 2] of the same B crops, tapped features f1 and f2."""
    b = f1.shape[0]
    batch = DegradedBatch(gt=torch.zeros(2 * b, 3, 8, 8), lq=torch.zeros(2 * b, 3, 2, 2),
                          content=torch.arange(b).repeat(2), degradation=torch.arange(2 * b))
    return LossContext(batch, output=torch.zeros(2 * b, 3, 8, 8), features={MAIN_TAP: torch.cat([f1, f2])})


def test_linear_alignment_equals_per_pair_reference():
    f1, f2 = features()
    u, v = FeaturePair(torch.cat([f1, f2])).pooled_centered()
    expected = sum(reference_reg(u[i:i + 1], v[i:i + 1]) for i in range(u.shape[0]))
    pair = paired(f1, f2)
    assert torch.allclose(FeatureAlignmentLoss()(pair), expected, atol=1e-6)
    assert torch.allclose(FeatureAlignmentLoss(reduction='mean')(pair), expected / u.shape[0], atol=1e-6)


def test_spatial_alignment_equals_per_pair_reference():
    f1, f2 = features(1)
    total = 0
    for i in range(f1.shape[0]):
        x1, x2 = f1[i].flatten(1), f2[i].flatten(1)
        c = x1.shape[0]
        total = total + ((x1.mean(1) - x2.mean(1))**2).sum() / c + ((torch.cov(x1) - torch.cov(x2))**2).sum() / c**2
    assert torch.allclose(FeatureAlignmentLoss(mode='spatial')(paired(f1, f2)), total, atol=1e-6)


def test_official_rff_map_equals_per_pair_reference():
    f1, f2 = features(2)
    u, v = FeaturePair(torch.cat([f1, f2])).pooled_centered()
    b, c = u.shape
    w = torch.randn(b, 1, 1, dtype=torch.float64)
    phase = torch.rand(b, 1, c, dtype=torch.float64) * 2 * math.pi
    mapped = official_rff_map(torch.stack([u, v], 1), w, phase)
    for i in range(b):
        ref = reference_official_rff(torch.stack([u[i], v[i]]), w[i].item(), phase[i, 0])
        assert torch.allclose(mapped[i], ref, atol=1e-6)


def test_rff_loss_official_mode_uses_the_reference_discrepancy():
    f1, f2 = features(3)
    torch.manual_seed(7)
    value = RFFAlignmentLoss()(paired(f1, f2))
    torch.manual_seed(7)
    u, v = FeaturePair(torch.cat([f1, f2])).pooled_centered()
    w = torch.randn(u.shape[0], 1, 1, dtype=u.dtype)
    phase = torch.rand(u.shape[0], 1, u.shape[1], dtype=u.dtype) * 2 * math.pi
    expected = 0
    for i in range(u.shape[0]):
        m = reference_official_rff(torch.stack([u[i], v[i]]), w[i].item(), phase[i, 0])
        expected = expected + reference_reg(m[0:1], m[1:2])
    assert torch.allclose(value, expected, atol=1e-6)


def test_textbook_rff_is_fixed_with_a_seed_and_matches_the_formula():
    f1, f2 = features(4)
    loss = RFFAlignmentLoss(mode='rff', num_features=32, redraw=False, seed=3)
    assert torch.equal(loss(paired(f1, f2)), loss(paired(f1, f2)))
    weight, phase = loss.fixed
    x = FeaturePair(torch.cat([f1, f2])).pooled_centered()[0][0].float()
    assert torch.allclose(rff_map(x[None], weight, phase)[0], math.sqrt(2 / 32) * torch.cos(weight @ x + phase))


@pytest.mark.parametrize('loss', ALL_LOSSES)
def test_zero_for_identical_copies_positive_otherwise_and_differentiable(loss):
    f1, f2 = features(5)
    f1, f2 = f1.float().requires_grad_(), f2.float()
    assert loss(paired(f1, f1.detach().clone())).abs().item() < 1e-6
    value = loss(paired(f1, f2))
    assert value.item() > 0
    value.backward()
    assert f1.grad is not None and f1.grad.abs().sum() > 0


@pytest.mark.parametrize('loss', ALL_LOSSES)
def test_constant_features_give_finite_values_and_gradients(loss):
    f1 = torch.full((4, 8, 5, 5), 0.3, requires_grad=True)
    f2 = torch.full((4, 8, 5, 5), 0.3)
    value = loss(paired(f1, f2))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(f1.grad).all()


def test_bad_loss_options_name_the_key_and_the_choices():
    """A regularizer's arguments are checked against its annotations however it is built (no hand-written check)."""
    with pytest.raises(GsrError,
                       match=r"^FeatureAlignmentLoss\.mode must be one of official, spatial, got 'frobenius'$"):
        FeatureAlignmentLoss(mode='frobenius')
    with pytest.raises(GsrError, match=r"^RFFAlignmentLoss\.reduction must be one of sum, mean, got 'max'$"):
        RFFAlignmentLoss(1.0, 'official', reduction='max')
    with pytest.raises(GsrError, match=r"^TwinFeatureLoss\.loss_weight must be a number, got '1'"):
        TwinFeatureLoss(loss_weight='1')
    assert RFFAlignmentLoss(loss_weight=2).loss_weight == 2.0 and RFFAlignmentLoss(1, 'rff').mode == 'rff'


@pytest.mark.parametrize('loss', ALL_LOSSES)
def test_regularizers_refuse_rows_that_are_not_paired_copies(loss):
    """Rows from a real LQ/GT dataset share no content: a regularizer between copies must not run on them."""
    f1, f2 = features(6)
    rows = torch.cat([f1, f2]).float()
    batch = DegradedBatch.of_pairs(torch.zeros(8, 3, 2, 2), torch.zeros(8, 3, 8, 8))
    with pytest.raises(GsrError, match='not paired'):
        loss(LossContext(batch, output=torch.zeros(8, 3, 8, 8), features={MAIN_TAP: rows}))


def test_every_gsr_regularizer_declares_its_needs_on_the_base_class():
    """The model reads ``needs_pairs`` / ``needs_twin`` / ``needs_noisy_rows`` / ``minimum_pairs`` /
    ``teacher_reads`` / ``metrics`` as attributes: every regularizer gsr registers must inherit them."""
    from basicsr.utils.registry import LOSS_REGISTRY

    import gsr.losses  # noqa: F401
    from gsr.losses.regularizer import Regularizer
    ours = [cls for _, cls in LOSS_REGISTRY if cls.__module__.startswith('gsr.losses')]
    assert len(ours) == 10 and all(issubclass(cls, Regularizer) for cls in ours), ours
    with pytest.raises(TypeError, match='abstract'):  # a regularizer without forward cannot be built

        class NoForward(Regularizer):
            pass

        NoForward()
    paired = sorted(cls.__name__ for cls in ours if cls.needs_pairs)
    assert paired == ['FeatureAlignmentLoss', 'FeatureMatchingLoss', 'RFFAlignmentLoss']


def test_a_regularizers_metric_is_found_under_the_name_it_is_logged_with():
    """``GsrModel`` logs a regularizer's metrics by ``metric_log_name`` and the study's report reads them back by
    ``logged_metric``: one convention, so a renamed log key cannot leave the report's column empty."""
    from gsr.losses.regularizer import logged_metric, metric_log_name
    for term, metric in (('l_det', 'bacc'), ('l_feat', 'share_noisy'), ('align', 'cos')):
        assert logged_metric(metric_log_name(metric, term), term) == metric
    assert metric_log_name('bacc', 'l_det') == 'bacc_det'
    for key in ('l_det', 'grad_l_det', '_det', 'bacc_feat', 'l_pix_det'):
        assert logged_metric(key, 'l_det') is None
