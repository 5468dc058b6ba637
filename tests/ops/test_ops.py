"""The op layer: registration, fakes, opcheck, torch.compile, autograd.

Runs on CPU everywhere; the same checks run on CUDA tensors when a GPU is present
(whatever serves the op there: kernel or reference)."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import nvfp4_ops
from nvfp4_ops import reference as ref


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPS = torch.ops.nvfp4


def _x(shape, dtype=torch.bfloat16, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 3).to(dtype).to(device)


def _gs(x):
    return ref.global_scale(x)


def samples(device="cpu"):
    """(op name, args) pairs covering every op and its main options."""
    x2 = _x((130, 64), device=device)
    x3 = _x((2, 33, 96), torch.float32, device=device, seed=1)
    gs2, gs3 = _gs(x2), _gs(x3)
    gs3b = torch.stack([ref.global_scale(x3[0]), ref.global_scale(x3[1])]).reshape(2)
    h = ref.hessian_blocks(_x((64, 64), torch.float32, device=device, seed=2))
    p2, s2 = ref.quantize(x2, gs2)
    p2s, s2s = ref.quantize(x2, gs2, True)
    xm = _x((64, 64), device=device, seed=3)
    d8, e8 = ref.mx_quantize(xm)
    d4, e4 = ref.mx_quantize(xm, "e2m1", "floor", True)
    return [
        ("quantize", (x2, gs2)),
        ("quantize", (x2, gs2, True)),
        ("quantize", (x3, gs3b, True)),
        ("quantize", (x2, gs2, False, "mse")),
        ("quantize", (x2, gs2, True, "hessian", h)),
        ("quantize", (x2, gs2, False, "4over6")),
        ("quantize", (x3, gs3b, True, "4over6")),
        ("dequantize", (p2, s2, gs2, torch.float32)),
        ("dequantize", (p2s, s2s, gs2, torch.bfloat16, True)),
        ("quant_dequant", (x2, gs2)),
        ("quant_dequant", (x3, gs3)),
        ("quant_dequant", (x2, gs2, "4over6")),
        ("quant_dequant", (x3, gs3b, "4over6")),
        ("global_scale", (x3,)),
        ("mx_quantize", (xm,)),
        ("mx_quantize", (xm, "e2m1", "floor", True)),
        ("mx_quantize", (xm, "e4m3", "rceil", False, -2)),
        ("mx_quantize", (xm, "e2m1", "rceil", False, -1, "mse")),
        ("mx_quantize_rowcol", (xm,)),
        ("mx_quantize_rowcol", (x3[:, :32].contiguous(), "floor", True)),
        ("mx_dequantize", (d8, e8, "e4m3", torch.float16)),
        ("mx_dequantize", (d4, e4, "e2m1", torch.bfloat16, True)),
        ("swizzle_scales", (s2,)),
        ("unswizzle_scales", (s2s, 130, 4)),
    ]


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _assert_same(a, b):
    for u, v in zip(_as_tuple(a), _as_tuple(b)):
        assert u.shape == v.shape and u.dtype == v.dtype and u.stride() == v.stride()
        if u.dtype in (torch.float8_e4m3fn, torch.float8_e8m0fnu, torch.uint8):
            assert torch.equal(u.cpu().view(torch.uint8), v.cpu().view(torch.uint8))
        else:
            torch.testing.assert_close(u.cpu(), v.cpu(), atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_ops_match_reference(device):
    for name, args in samples(device):
        out = getattr(OPS, name)(*args)
        expected = getattr(ref, name)(*[a.cpu() if isinstance(a, torch.Tensor) else a
                                        for a in args])
        for o in _as_tuple(out):
            assert o.device.type == device, name
        _assert_same(out, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_fakes_match_real(device):
    for name, args in samples(device):
        real = getattr(OPS, name)(*args)
        with FakeTensorMode(allow_non_fake_inputs=False) as mode:
            fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            fake = getattr(OPS, name)(*fargs)
        for r, f in zip(_as_tuple(real), _as_tuple(fake)):
            assert (f.shape, f.dtype, f.stride(), f.device) == (r.shape, r.dtype, r.stride(),
                                                               r.device), name


_FP8 = (torch.float8_e4m3fn, torch.float8_e8m0fnu)
_ALL_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor",
              "test_aot_dispatch_dynamic")


def _first_sample_of_each_op(device):
    """opcheck tests the registration (schema, autograd, fake, AOT dispatch), which does not
    depend on the option values: one sample per op. The fakes of every sample are compared
    with the real outputs in test_fakes_match_real."""
    seen = {}
    for name, args in samples(device):
        seen.setdefault(name, args)
    return list(seen.items())


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for name, args in _first_sample_of_each_op(device):
        utils = _ALL_UTILS
        if any(isinstance(a, torch.Tensor) and a.dtype in _FP8 for a in args):
            # torch's SchemaCheckMode compares float8 inputs with a multiply that has no
            # float8 kernel on CPU ("mul_cpu_reduced_float" not implemented): its check
            # cannot run on these inputs, the other three can.
            utils = _ALL_UTILS[1:]
        torch.library.opcheck(getattr(OPS, name).default, args, test_utils=utils)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_every_op(device):
    x = _x((128, 64), device=device)
    w = _x((64, 64), torch.float32, device=device, seed=5)

    def f(x, w):
        gs = OPS.global_scale(x)
        p, s = OPS.quantize(x, gs, True)
        lin = OPS.unswizzle_scales(s, 128, 4)
        back = OPS.swizzle_scales(lin)
        y = OPS.dequantize(p, back, gs, torch.float32, True)
        fq = OPS.quant_dequant(x, gs)
        d, e = OPS.mx_quantize(w, "e4m3", "rceil", False, -2)
        m = OPS.mx_dequantize(d, e, "e4m3", torch.float32)
        rd, rs, cd, cs = OPS.mx_quantize_rowcol(w, "floor", True)
        rc = OPS.mx_dequantize(cd, cs, "e4m3", torch.float32, True)
        return y, fq, m, rc, rd.view(torch.uint8).float(), rs.float()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    for a, b in zip(compiled(x, w), f(x, w)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_compile_dynamic_shapes():
    torch._dynamo.reset()
    f = torch.compile(lambda x, gs: OPS.quantize(x, gs, True), fullgraph=True, dynamic=True)
    for m in (3, 130):
        x = _x((m, 32))
        _assert_same(f(x, _gs(x)), ref.quantize(x, _gs(x), True))


def test_quant_dequant_straight_through_gradient():
    x = _x((4, 32), torch.float32).requires_grad_()
    gs = _gs(x.detach())
    y = nvfp4_ops.quant_dequant(x, gs)
    (y * torch.arange(32.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(32.0).expand(4, 32))


def test_quant_dequant_qat_loop_compiles():
    torch._dynamo.reset()
    lin = torch.nn.Linear(32, 8)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)

    # aot_eager: the graph, the fake and the autograd formula are what is under test here
    # (inductor's code generation around the op is covered by the test above).
    @torch.compile(fullgraph=True, backend="aot_eager")
    def loss_fn(x):
        w = nvfp4_ops.quant_dequant(lin.weight)
        return torch.nn.functional.linear(x, w, lin.bias).square().mean()

    before = lin.weight.detach().clone()
    loss_fn(torch.randn(16, 32)).backward()
    opt.step()
    assert not torch.equal(before, lin.weight)


def test_wrappers_compute_global_scale():
    x = _x((16, 32))
    p, s = nvfp4_ops.quantize(x)
    p2, s2 = ref.quantize(x, ref.global_scale(x))
    assert torch.equal(p, p2) and torch.equal(s.view(torch.uint8), s2.view(torch.uint8))


def test_non_contiguous_input_same_bytes():
    x = _x((64, 48)).t()  # [48, 64], non-contiguous
    _assert_same(OPS.quantize(x, _gs(x)), OPS.quantize(x.contiguous(), _gs(x)))
    _assert_same(OPS.mx_quantize(x), OPS.mx_quantize(x.contiguous()))
