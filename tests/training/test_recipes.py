"""nvfp4_ops.training: the NVFP4 and MXFP8 recipe linears (forward, dgrad, wgrad), each
switch of the recipe, the stochastic-rounding offset, and a short training run."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import nvfp4_ops
from nvfp4_ops import reference as ref
from nvfp4_ops.training import (
    MXFP8Recipe,
    NVFP4Recipe,
    RecipeState,
    TrainingLinear,
    recipe_linear,
)

OFF = dict(quantize_forward=False, quantize_dgrad=False, quantize_wgrad=False)


def _data(m=40, k=64, n=48, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) / 8).to(dtype)
    dy = torch.randn(m, n, generator=g).to(dtype)
    return x, w, dy


def _run(recipe, x, w, dy, bias=None, seed=3):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    state = RecipeState(seed)
    y = recipe_linear(x, w, bias, recipe, state)
    y.backward(dy)
    return y.detach(), x.grad, w.grad, state


def _dq(t, **kw):
    p, s, gs = ref.train_quantize(t, **kw)
    return ref.dequantize(p, s, gs, torch.float32)


@pytest.mark.parametrize("recipe", [NVFP4Recipe(gemm="reference", **OFF),
                                    MXFP8Recipe(gemm="reference", **OFF)])
def test_all_steps_off_is_the_plain_linear(recipe):
    x, w, dy = _data()
    b = torch.randn(48)
    y, dx, dw, _ = _run(recipe, x, w, dy, b)
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(dx, dy @ w, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(dw, dy.t() @ x, rtol=1e-6, atol=1e-5)


def test_nvfp4_recipe_gemms_are_the_documented_operands():
    x, w, dy = _data()
    y, dx, dw, state = _run(NVFP4Recipe(gemm="reference"), x, w, dy)
    seed, signs = torch.tensor([3]), ref.random_hadamard_signs(torch.tensor([3]))
    # forward: x rowwise 1-D, W 2-D
    torch.testing.assert_close(y, _dq(x) @ _dq(w, block_2d=True).t(), rtol=0, atol=0)
    # dgrad: dy rowwise SR at offset 0, W columnwise 2-D (= the forward's W values)
    dy_q = _dq(dy, rounding="stochastic", seed=seed, offset=torch.tensor([0]))
    w_t = _dq(w, axis=-2, block_2d=True)
    assert torch.equal(w_t.t(), _dq(w, block_2d=True))
    torch.testing.assert_close(dx, dy_q @ w_t.t(), rtol=0, atol=0)
    # wgrad: dy^T, x^T columnwise along M (padded 40 -> 48), Hadamard, dy SR at the same
    # offset (each element of dy draws one number for both GEMMs)
    dyp, xp = F.pad(dy, (0, 0, 0, 8)), F.pad(x, (0, 0, 0, 8))
    a = _dq(dyp, axis=-2, rounding="stochastic", seed=seed, offset=torch.tensor([0]),
            hadamard_signs=signs)
    b = _dq(xp, axis=-2, hadamard_signs=signs)
    torch.testing.assert_close(dw, a @ b.t(), rtol=0, atol=0)
    # the offset advanced past both stochastic roundings
    # and the offset advanced by one window: ceil(48 * 48 / 4)
    assert state.offset.item() == nvfp4_ops.sr_offset_increment(dyp.numel()) == 576


@pytest.mark.parametrize("field", ["weight_2d", "stochastic_rounding", "hadamard",
                                   "quantize_forward", "quantize_dgrad", "quantize_wgrad"])
def test_each_switch_changes_its_gemm_only(field):
    x, w, dy = _data()
    base = NVFP4Recipe(gemm="reference")
    full = _run(base, x, w, dy)[:3]
    off = _run(dataclasses.replace(base, **{field: False}), x, w, dy)[:3]
    touches = {  # which of (y, dx, dw) the switch changes
        "weight_2d": (True, True, False), "stochastic_rounding": (False, True, True),
        "hadamard": (False, False, True), "quantize_forward": (True, False, False),
        "quantize_dgrad": (False, True, False), "quantize_wgrad": (False, False, True),
    }[field]
    for f, o, changed in zip(full, off, touches):
        assert torch.equal(f, o) is not changed, field


def test_mxfp8_recipe_gemms_are_the_documented_operands():
    x, w, dy = _data(m=40, k=64, n=64)
    y, dx, dw, _ = _run(MXFP8Recipe(gemm="reference"), x, w, dy)

    def mx(t, axis=-1):
        d, s = ref.mx_quantize(t, "e4m3", "rceil", False, axis)
        return ref.mx_dequantize(d, s, "e4m3", torch.float32)

    torch.testing.assert_close(y, mx(x) @ mx(w).t(), rtol=0, atol=0)
    torch.testing.assert_close(dx, mx(dy) @ mx(w, -2).t(), rtol=0, atol=0)
    dyp, xp = F.pad(dy, (0, 0, 0, 24)), F.pad(x, (0, 0, 0, 24))
    torch.testing.assert_close(dw, mx(dyp, -2) @ mx(xp, -2).t(), rtol=0, atol=0)


@pytest.mark.parametrize("recipe, tol", [(NVFP4Recipe(), 0.25), (MXFP8Recipe(), 0.08)])
def test_gradients_approximate_the_exact_ones(recipe, tol):
    x, w, dy = _data(m=64, k=128, n=64, dtype=torch.bfloat16)
    y, dx, dw, _ = _run(recipe, x, w, dy)
    xf, wf, dyf = x.float(), w.float(), dy.float()
    for got, want in ((y, xf @ wf.t()), (dx, dyf @ wf), (dw, dyf.t() @ xf)):
        assert got.dtype == torch.bfloat16
        err = ((got.float() - want).norm() / want.norm()).item()
        assert err < tol, err


def test_training_linear_trains_and_advances_its_offset():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(32, 64, generator=g) / 8
    xs = torch.randn(512, 64, generator=g)
    ys = xs @ teacher.t()
    model = torch.nn.Sequential(TrainingLinear(64, 64, seed=1), torch.nn.GELU(),
                                TrainingLinear(64, 32, seed=2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        i = torch.arange(64) + 64 * (step % 8)
        loss = F.mse_loss(model(xs[i]), ys[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.3 * sum(losses[:5]), losses
    assert model[0].state.offset.item() > 0
    assert "NVFP4Recipe" in repr(model[0])


def test_recipe_fields_are_checked():
    with pytest.raises(ValueError, match="NVFP4Recipe.gemm must be 'dequant' or 'reference', "
                                         "got 'scaled_mm'"):
        NVFP4Recipe(gemm="scaled_mm")
    with pytest.raises(ValueError, match="MXFP8Recipe.rounding must be 'rceil' or 'floor', "
                                         "got 'up'"):
        MXFP8Recipe(rounding="up")
