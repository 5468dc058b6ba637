"""The training-recipe ops (train_quantize, grouped_quantize, mx_grouped_quantize): registration,
the reference on every device, fakes, opcheck, torch.compile, and the argument contract
(same message on CPU, under FakeTensor and on meta, through the machinery of test_parity)."""

import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import nvfp4_ops
from nvfp4_ops import _library
from nvfp4_ops import reference as ref

from .._utils import requires_cuda
from .test_ops import _as_tuple, _assert_same
from .test_parity import Case, Make, outcome

OPS = torch.ops.nvfp4
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TRAINING_OPS = ("train_quantize", "train_quantize_rowcol", "grouped_quantize",
                "mx_grouped_quantize")
I64 = torch.int64


def _x(shape, dtype=torch.bfloat16, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 3).to(dtype).to(device)


def samples(device="cpu"):
    """(op name, args) covering every training op and its main options."""
    x = _x((48, 64), device=device)
    x3 = _x((2, 32, 48), torch.float32, device=device, seed=1)
    gs = ref.global_scale(x)
    seed = torch.tensor([42], dtype=I64, device=device)
    off = torch.tensor([7], dtype=I64, device=device)
    signs = ref.random_hadamard_signs(seed)
    offs = torch.tensor([10, 10, 40], dtype=torch.int32, device=device)
    return [
        ("train_quantize", (x, gs)),
        ("train_quantize", (x, None, -2, True, "nearest", None, None, None, True)),
        ("train_quantize", (x3, None, -1, False, "stochastic", seed, off, signs, False)),
        ("train_quantize", (x, gs, -2, False, "stochastic", seed, off, signs, True)),
        ("train_quantize_rowcol", (x, None, gs, True, "stochastic", seed, off, signs, True)),
        ("train_quantize_rowcol", (x3, torch.ones(2, device=device))),
        ("grouped_quantize", (x, offs)),
        ("grouped_quantize", (x, offs.long(), torch.ones(3, device=device), True)),
        ("mx_grouped_quantize", (x, offs)),
        ("mx_grouped_quantize", (x, offs, "e2m1", "floor", True)),
    ]


def test_every_training_op_is_in_the_ops_table():
    for op in TRAINING_OPS:
        assert _library.OPS[op] is getattr(ref, op)
        assert _library.op_implementation(op, "cpu")[0] == "reference"
        assert hasattr(OPS, op)


@pytest.mark.parametrize("device", DEVICES)
def test_ops_match_reference(device):
    for name, args in samples(device):
        out = getattr(OPS, name)(*args)
        cpu_args = [a.cpu() if isinstance(a, torch.Tensor) else a for a in args]
        _assert_same(out, getattr(ref, name)(*cpu_args))


@pytest.mark.parametrize("device", DEVICES)
def test_fakes_match_real(device):
    for name, args in samples(device):
        real = getattr(OPS, name)(*args)
        with FakeTensorMode() as mode:
            fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            fake = getattr(OPS, name)(*fargs)
        assert len(real) == len(fake)
        for r, f in zip(_as_tuple(real), _as_tuple(fake)):
            assert (f.shape, f.dtype, f.stride(), f.device) == (r.shape, r.dtype, r.stride(),
                                                               r.device), name


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    utils = ("test_schema", "test_autograd_registration", "test_faketensor",
             "test_aot_dispatch_dynamic")
    for name, args in samples(device):
        torch.library.opcheck(getattr(OPS, name).default, args, test_utils=utils)


def test_wrappers_pass_their_arguments_through():
    x = _x((32, 64))
    seed, off = torch.tensor([1]), torch.tensor([0])
    got = nvfp4_ops.train_quantize(x, axis=-2, block_2d=True, rounding="stochastic", seed=seed,
                                   offset=off, swizzle=True)
    _assert_same(got, ref.train_quantize(x, None, -2, True, "stochastic", seed, off, None, True))
    _assert_same(nvfp4_ops.train_quantize_rowcol(x, block_2d=True, rounding="stochastic",
                                                 seed=seed, offset=off, swizzle=True),
                 ref.train_quantize_rowcol(x, None, None, True, "stochastic", seed, off, None,
                                           True))
    offs = torch.tensor([16, 32])
    _assert_same(nvfp4_ops.grouped_quantize(x, offs, swizzle=True),
                 ref.grouped_quantize(x, offs, None, True))
    _assert_same(nvfp4_ops.mx_grouped_quantize(x, offs, "e2m1", rounding="floor"),
                 ref.mx_grouped_quantize(x, offs, "e2m1", "floor"))
    assert nvfp4_ops.sr_offset_increment(10) == 3
    assert torch.equal(nvfp4_ops.random_hadamard_signs(seed), ref.random_hadamard_signs(seed))


def test_compile_fullgraph():
    x = _x((64, 64))
    w = _x((32, 64), seed=2)
    offs = torch.tensor([20, 64])

    def f(x, w, seed, off):
        signs = ref.random_hadamard_signs(seed)
        a = OPS.train_quantize(x, None, -1, False, "stochastic", seed, off, signs, True)
        b = OPS.train_quantize(w, None, -2, True)
        r = OPS.train_quantize_rowcol(w, None, None, True)
        c = OPS.grouped_quantize(x, offs, None, True)
        d = OPS.mx_grouped_quantize(x, offs, "e4m3", "rceil", True)
        return (*a, *b, *r, *c, *d)

    args = (x, w, torch.tensor([5]), torch.tensor([3]))
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    _assert_same(compiled(*args), f(*args))


def test_compile_advancing_offset_gives_new_numbers_in_place():
    """The recipe's pattern: a device offset advanced in place after each call (what a
    captured CUDA graph replays); the same offset value gives the same bits."""
    x = _x((16, 64))
    seed, off = torch.tensor([9]), torch.tensor([0])

    @torch.compile(fullgraph=True)
    def step(x, seed, off):
        out = OPS.train_quantize(x, None, -1, False, "stochastic", seed, off)
        off.add_(nvfp4_ops.sr_offset_increment(x.numel()))
        return out[0]

    a = step(x, seed, off)
    b = step(x, seed, off)
    assert off.item() == 512 and not torch.equal(a, b)
    off.zero_()
    assert torch.equal(step(x, seed, off), a)


# --------------------------------------------------------------------------------------
# the argument contract
# --------------------------------------------------------------------------------------


def tq(m, x=None, gs=None, axis=-1, block_2d=False, rounding="nearest", seed=None, offset=None,
       signs=None):
    return OPS.train_quantize(m.t(32, 48) if x is None else x, gs, axis, block_2d, rounding,
                              seed, offset, signs, False)


def _i64(m, *shape, device=None):
    return m.t(*shape, dtype=I64, device=device)


def _sr(m, **kw):
    kw.setdefault("seed", _i64(m, 1))
    kw.setdefault("offset", _i64(m, 1))
    return tq(m, rounding="stochastic", **kw)


def rc(m, x=None, cgs=None, rounding="nearest", seed=None, signs=None):
    return OPS.train_quantize_rowcol(m.t(32, 48) if x is None else x, None, cgs, False,
                                     rounding, seed, None, signs, False)


def gq(m, x=None, offs=None, gs=None):
    return OPS.grouped_quantize(m.t(40, 32) if x is None else x,
                                _i64(m, 3) if offs is None else offs, gs, False)


def mgq(m, x=None, offs=None, elem="e4m3", rounding="rceil"):
    return OPS.mx_grouped_quantize(m.t(40, 64) if x is None else x,
                                   _i64(m, 3) if offs is None else offs, elem, rounding, False)


CASES = [
    Case("train_quantize", "float64 x", lambda m: tq(m, m.t(32, 48, dtype=torch.float64)),
         match=r"float64"),
    Case("train_quantize", "1-D x", lambda m: tq(m, m.t(48))),
    Case("train_quantize", "axis", lambda m: tq(m, axis=2), match=r"-1 or -2 .*got 2"),
    Case("train_quantize", "K", lambda m: tq(m, m.t(32, 40)),
         match=r"K \(the last dim, quantized with axis=-1\) must be a multiple of 16, got 40"),
    Case("train_quantize", "M colwise", lambda m: tq(m, m.t(40, 32), axis=-2),
         match=r"M \(dim -2, quantized with axis=-2\) must be a multiple of 16, got 40"),
    Case("train_quantize", "gs shape", lambda m: tq(m, gs=m.t(2)), match=r"global_scale"),
    Case("train_quantize", "gs dtype", lambda m: tq(m, gs=m.t(1, dtype=torch.float16))),
    Case("train_quantize", "rounding", lambda m: tq(m, rounding="sr"),
         match=r"'nearest' or 'stochastic', got 'sr'"),
    Case("train_quantize", "seed missing", lambda m: _sr(m, seed=None),
         match=r"rounding='stochastic' needs seed"),
    Case("train_quantize", "offset missing", lambda m: _sr(m, offset=None), match=r"offset"),
    Case("train_quantize", "seed dtype", lambda m: _sr(m, seed=m.t(1)),
         match=r"seed must be int64 with 1 element, got shape \[1\] and dtype torch.float32"),
    Case("train_quantize", "offset numel", lambda m: _sr(m, offset=_i64(m, 2)),
         match=r"got shape \[2\]"),
    Case("train_quantize", "seed unused", lambda m: tq(m, seed=_i64(m, 1)),
         match=r"seed is only used with rounding='stochastic'"),
    Case("train_quantize", "signs shape", lambda m: tq(m, signs=m.t(8)),
         match=r"hadamard_signs must be float32 of shape \[16\]"),
    Case("train_quantize", "signs dtype", lambda m: tq(m, signs=m.t(16, dtype=torch.bfloat16))),
    Case("train_quantize", "devices seed", lambda m: _sr(m, seed=_i64(m, 1, device=m.o))),
    Case("train_quantize", "devices signs", lambda m: tq(m, signs=m.t(16, device=m.o))),
    Case("train_quantize_rowcol", "K", lambda m: rc(m, m.t(32, 40)), match=r"K .* got 40"),
    Case("train_quantize_rowcol", "M", lambda m: rc(m, m.t(40, 32)),
         match=r"M \(dim -2, quantized with axis=-2\) must be a multiple of 16, got 40"),
    Case("train_quantize_rowcol", "colwise gs", lambda m: rc(m, cgs=m.t(2)),
         match=r"global_scale must be float32 with 1 element, got shape \[2\]"),
    Case("train_quantize_rowcol", "offset missing",
         lambda m: rc(m, rounding="stochastic", seed=_i64(m, 1)), match=r"needs offset"),
    Case("train_quantize_rowcol", "signs", lambda m: rc(m, signs=m.t(4, 4)),
         match=r"colwise_hadamard_signs must be float32 of shape \[16\]"),
    Case("train_quantize_rowcol", "devices signs", lambda m: rc(m, signs=m.t(16, device=m.o))),
    Case("grouped_quantize", "3-D x", lambda m: gq(m, m.t(2, 40, 32)), match=r"2-D \[T, K\]"),
    Case("grouped_quantize", "int x", lambda m: gq(m, m.t(40, 32, dtype=torch.int32))),
    Case("grouped_quantize", "K", lambda m: gq(m, m.t(40, 24)), match=r"multiple of 16, got 24"),
    Case("grouped_quantize", "offsets dtype", lambda m: gq(m, offs=m.t(3)),
         match=r"group_offsets must be int32 or int64 of shape \[G\]"),
    Case("grouped_quantize", "offsets 2-D", lambda m: gq(m, offs=_i64(m, 3, 1))),
    Case("grouped_quantize", "offsets empty", lambda m: gq(m, offs=_i64(m, 0))),
    Case("grouped_quantize", "gs shape", lambda m: gq(m, gs=m.t(1)),
         match=r"float32 of shape \[G\] = \[3\]"),
    Case("grouped_quantize", "devices", lambda m: gq(m, offs=_i64(m, 3, device=m.o))),
    Case("mx_grouped_quantize", "K", lambda m: mgq(m, m.t(40, 48)), match=r"32, got 48"),
    Case("mx_grouped_quantize", "elem", lambda m: mgq(m, elem="fp8"), match=r"'fp8'"),
    Case("mx_grouped_quantize", "rounding", lambda m: mgq(m, rounding="up")),
    Case("mx_grouped_quantize", "offsets", lambda m: mgq(m, offs=m.t(2, dtype=torch.int16))),
]
IDS = [f"{c.op}: {c.name}" for c in CASES]


@pytest.fixture(scope="module")
def cpu_outcomes():
    return {c: outcome(c, "cpu") for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cpu_message(case, cpu_outcomes):
    got = cpu_outcomes[case]
    assert got is not None, "no error raised"
    typ, msg = got
    assert typ is RuntimeError and msg.startswith(f"nvfp4.{case.op}: "), msg
    assert ", got " in msg or ": tensors must be on one device: " in msg, msg
    assert re.search(case.match, msg), (case.match, msg)


@pytest.mark.parametrize("mode", ["fake", "meta", pytest.param("cuda", marks=requires_cuda)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_same_error_everywhere(case, mode, cpu_outcomes):
    assert outcome(case, mode) == cpu_outcomes[case]


def test_valid_calls_of_the_contract_helpers_raise_nothing():
    """The helpers above build valid calls except for the one replaced argument."""
    m = Make("cpu", "meta")
    tq(m)
    _sr(m)
    tq(m, m.t(48, 32), axis=-2, signs=m.t(16, fill=1.0))
    rc(m, cgs=m.one, signs=m.t(16, fill=1.0))
    gq(m)
    mgq(m)
