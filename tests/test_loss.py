import math

import pytest
import torch

from avrsp.loss import SaliencyLoss, correlation, kl_divergence, similarity


def test_identical_maps():
    """Float32 sums over 96 pixels of terms of order 1: rounding ~1e-7, so 1e-6 absolute
    (KL's 0 can only be met absolutely)."""
    g = torch.rand(2, 8, 12)
    loss, terms = SaliencyLoss()(g, g, terms=True)
    assert terms["kl"].abs() < 1e-6
    torch.testing.assert_close(terms["cc"], torch.tensor(1.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(terms["sim"], torch.tensor(1.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, torch.tensor(-0.2), rtol=0, atol=1e-6)  # 0 - 0.1·1 - 0.1·1


def test_hand_computed_two_pixel_case():
    # Float32 on two or three values of order 1: 1e-6 absolute is a few of float32's steps.
    # P = [3, 1] → [0.75, 0.25]; G = [1, 1] → [0.5, 0.5]
    p = torch.tensor([[3.0, 1.0]])
    g = torch.tensor([[1.0, 1.0]])
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_divergence(p, g).item() == pytest.approx(kl, abs=1e-6)
    assert similarity(p, g).item() == pytest.approx(0.75, abs=1e-6)  # min(.75,.5) + min(.25,.5)
    q = torch.tensor([[1.0, 2.0, 3.0]])
    assert correlation(q, 2 * q + 5).item() == pytest.approx(1.0, abs=1e-6)
    assert correlation(q, -q).item() == pytest.approx(-1.0, abs=1e-6)
    assert correlation(q, torch.tensor([[1.0, 3.0, 2.0]])).item() == pytest.approx(0.5, abs=1e-6)
    expect = kl - 0.1 * correlation(p, g).item() - 0.1 * 0.75
    assert SaliencyLoss()(p, g).item() == pytest.approx(expect, abs=1e-6)


def test_alphas_are_configurable():
    p, g = torch.rand(1, 4, 4), torch.rand(1, 4, 4)
    _, t = SaliencyLoss()(p, g, terms=True)
    # The same float32 terms, weighted otherwise: a step or two of float32 on values of order 1.
    assert SaliencyLoss(alpha_cc=-1.0, alpha_sim=0.0)(p, g).item() == pytest.approx((t["kl"] - t["cc"]).item(), abs=1e-6)


@pytest.mark.parametrize("pred_kind", ["zero", "const", "rand"])
@pytest.mark.parametrize("target_kind", ["zero", "const", "rand"])
def test_no_nan_or_inf_on_degenerate_maps(pred_kind, target_kind):
    make = {"zero": torch.zeros, "const": lambda *s: torch.full(s, 0.3), "rand": torch.rand}
    pred = make[pred_kind](2, 6, 7).requires_grad_(True)
    target = make[target_kind](2, 6, 7)
    loss = SaliencyLoss()(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    if target_kind == "zero":
        # Nothing to match: KL and SIM are 0 and CC is 0, whatever the prediction (up to the
        # float32 eps terms that keep the divisions finite).
        assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_is_correct():
    p = torch.rand(1, 3, 4, dtype=torch.float64) + 0.1
    g = torch.rand(1, 3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: SaliencyLoss()(x, g), (p.requires_grad_(),))


def test_loss_decreases_towards_the_target():
    g = torch.zeros(1, 16, 16)
    g[0, 4:8, 10:14] = 1.0
    p = torch.full((1, 16, 16), 0.5, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1.0)
    first = None
    for _ in range(30):
        loss = SaliencyLoss()(torch.sigmoid(p), g)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5   # descent, not rounding: the loss falls by most of its range


def test_bf16_input_is_computed_in_fp32():
    p, g = torch.rand(2, 8, 8), torch.rand(2, 8, 8)
    a = SaliencyLoss()(p, g)
    b = SaliencyLoss()(p.bfloat16(), g.bfloat16())
    # Only the inputs are rounded (8 significant bits, 2^-9 relative each); computed in float32,
    # the loss (of order 1) moves by a few 1e-3.
    assert b.dtype == torch.float32 and b.item() == pytest.approx(a.item(), abs=2e-2)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        SaliencyLoss()(torch.rand(1, 4, 4), torch.rand(1, 4, 5))
