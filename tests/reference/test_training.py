"""The training-recipe reference (docs/spec.md section 8): Philox4x32-10, stochastic rounding,
columnwise and 2-D block NVFP4, the random Hadamard transform, grouped (MoE) quantize."""

import random

import pytest
import torch

from nvfp4_ops import reference as ref
from nvfp4_ops.reference import training as tr

I64 = torch.int64


def _x(shape, dtype=torch.float32, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _u8(t):
    return t.view(torch.uint8)


def _philox(counter, key):
    words = tr.philox4x32([torch.tensor([c], dtype=I64) for c in counter],
                          [torch.tensor([k], dtype=I64) for k in key])
    return [int(w) for w in words]


# --------------------------------------------------------------------------------------
# Philox4x32-10
# --------------------------------------------------------------------------------------

# Random123's kat_vectors for philox4x32 with 10 rounds: counter (4 words), key (2), output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, want", KAT)
def test_philox_known_answers(counter, key, want):
    assert _philox(counter, key) == list(want)


def _philox_python(counter, key):
    """Philox4x32-10 with Python integers: an independent spelling of the same rounds."""
    c, k = list(counter), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) % 2**32, (k[1] + 0xBB67AE85) % 2**32]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 % 2**32, (p0 >> 32) ^ c[3] ^ k[1], p0 % 2**32]
    return c


def test_philox_matches_python_integers():
    rnd = random.Random(0)
    for _ in range(50):
        counter = [rnd.getrandbits(32) for _ in range(4)]
        key = [rnd.getrandbits(32) for _ in range(2)]
        assert _philox(counter, key) == _philox_python(counter, key)


def test_philox_words_layout_and_offset_wrap():
    seed = torch.tensor([-2], dtype=I64)  # key words 0xfffffffe, 0xffffffff
    for off in (0, 5, 2**32 - 1, -1):  # -1: counter 2^64 - 1 (c0 = c1 = 0xffffffff)
        words = tr.philox_words(seed, torch.tensor([off], dtype=I64), 10)
        for e in (0, 3, 4, 9):
            n = (off + e // 4) % 2**64
            want = _philox_python([n % 2**32, n >> 32, 0, 0], [0xFFFFFFFE, 0xFFFFFFFF])[e % 4]
            assert int(words[e]) == want, (off, e)


def test_uniform_is_exact_and_in_range():
    w = torch.tensor([0, 255, 256, 2**32 - 1], dtype=I64)
    u = tr.uniform_from_words(w)
    assert u.tolist() == [0.0, 0.0, 2.0**-24, 1.0 - 2.0**-24]


# --------------------------------------------------------------------------------------
# stochastic rounding
# --------------------------------------------------------------------------------------

GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def test_sr_rule_exact():
    y = torch.tensor([1.25, 1.25, 1.25, -2.5, 6.0, 7.0, 0.0, -0.0, 3.0, 0.1])
    u = torch.tensor([0.49, 0.5, 0.51, 0.1, 0.9, 0.0, 0.9, 0.9, 0.99, 0.19])
    q = tr.e2m1_round_stochastic(y, u)
    # p = 0.5 at 1.25: up iff u < 0.5; p(2.5) = 0.25; grid values stay; 0.1 -> p = 0.2
    assert q.tolist() == [1.5, 1.0, 1.0, -3.0, 6.0, 6.0, 0.0, -0.0, 3.0, 0.5]
    assert torch.signbit(q[7])


def test_sr_rule_against_the_grid():
    """The table-free rounding equals neighbour search on the E2M1 grid, over a dense range."""
    y = torch.linspace(-7, 7, 28001)
    u = torch.rand(y.shape, generator=torch.Generator().manual_seed(0))
    grid = torch.tensor(GRID)
    a = y.abs().clamp(max=6)
    i = (a.unsqueeze(1) >= grid).sum(1) - 1
    lo, hi = grid[i], torch.tensor(GRID + [6.0])[i + 1]
    p = torch.where(hi > lo, (a - lo) / (hi - lo), 0.0)
    want = torch.copysign(torch.where(u < p, hi, lo), y)
    assert torch.equal(tr.e2m1_round_stochastic(y, u), want)


def _sr_draws(x, gs, n, seed=7):
    """E2M1 values of ``n`` independent stochastic quantizations of ``x [M, K]``: the batch
    dim gives each copy its own element indices, hence its own numbers."""
    xb = x.expand(n, *x.shape).contiguous()
    p, s, _ = ref.train_quantize(xb, gs, rounding="stochastic", seed=torch.tensor([seed]),
                                 offset=torch.tensor([0]))
    assert torch.equal(_u8(s), _u8(ref.quantize(xb, gs)[1]))  # SR changes no scale
    return ref.e2m1_decode(ref.unpack_e2m1(p))


def test_sr_stays_between_the_two_neighbours_and_is_unbiased():
    x = _x((8, 64))
    gs = ref.global_scale(x)
    n = 2000
    q = _sr_draws(x, gs, n)
    # the value the codes approximate: y = RN(x * osc) with the block's scale
    sf = ref.e4m3_to_fp32(ref.quantize(x, gs)[1]).repeat_interleave(16, dim=1)
    osc = torch.ones(1) / (sf * (torch.ones(1) / gs))
    y = (x * osc).clamp(-6, 6)
    grid = torch.tensor(GRID)
    i = torch.bucketize(y.abs(), grid, right=True) - 1
    lo, hi = grid[i], torch.tensor(GRID + [6.0])[i + 1]
    assert ((q.abs() == lo) | (q.abs() == hi)).all()
    assert ((q == 0) | (torch.sign(q) == torch.sign(y))).all()
    # unbiased: |mean - y| within 6 sigma of the mean (sigma <= step / 2) plus 2^-24 steps
    gap = hi - lo
    err = (q.mean(0) - y).abs()
    assert (err <= 6 * (gap / 2) / n**0.5 + gap * 2.0**-23).all()
    # the rounding actually varies (not round-to-nearest in disguise)
    assert (q.std(0)[gap > 0] > 0).float().mean() > 0.9
    # a biased rounding (always down) fails the same bound
    assert not (((lo * torch.sign(y)) - y).abs() <= 6 * (gap / 2) / n**0.5).all()


def test_sr_same_seed_offset_same_bits_else_different():
    x = _x((16, 64), torch.bfloat16)
    gs = ref.global_scale(x)

    def q(seed, off):
        return ref.train_quantize(x, gs, rounding="stochastic", seed=torch.tensor([seed]),
                                  offset=torch.tensor([off]))[0]

    a = q(1, 0)
    assert torch.equal(a, q(1, 0))
    inc = tr.sr_offset_increment(x.numel())
    assert inc == 256
    assert not torch.equal(a, q(1, inc))
    assert not torch.equal(a, q(2, 0))
    # offset + 1 counter shifts the stream by 4 elements
    a_flat = ref.unpack_e2m1(a).reshape(-1)
    b_flat = ref.unpack_e2m1(q(1, 1)).reshape(-1)
    words0 = tr.philox_words(torch.tensor([1]), torch.tensor([0]), x.numel() + 4)
    words1 = tr.philox_words(torch.tensor([1]), torch.tensor([1]), x.numel())
    assert torch.equal(words0[4:], words1)
    assert not torch.equal(a_flat, b_flat)


def test_sr_columnwise_uses_the_numbers_of_the_elements_of_x():
    """Element (m, k) draws word m K + k in either layout: 2-D blocks + the same seed and
    offset give W and W^T the same values under stochastic rounding too."""
    w = _x((48, 64), seed=3)
    gs = ref.global_scale(w)
    kw = dict(block_2d=True, rounding="stochastic", seed=torch.tensor([9]),
              offset=torch.tensor([100]))
    pr, sr_, _ = ref.train_quantize(w, gs, **kw)
    pc, sc, _ = ref.train_quantize(w, gs, axis=-2, **kw)
    dr = ref.dequantize(pr, sr_, gs, torch.float32)
    dc = ref.dequantize(pc, sc, gs, torch.float32)
    assert torch.equal(dr, dc.t())


# --------------------------------------------------------------------------------------
# columnwise, 2-D blocks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 48), (2, 48, 32)])
@pytest.mark.parametrize("swizzle", [False, True])
def test_columnwise_equals_rowwise_of_the_transpose(shape, swizzle):
    x = _x(shape, torch.bfloat16, seed=1)
    gs = ref.global_scale(x)
    p, s, g = ref.train_quantize(x, gs, axis=-2, swizzle=swizzle)
    p0, s0 = ref.quantize(x.transpose(-1, -2).contiguous(), gs, swizzle)
    assert torch.equal(p, p0) and torch.equal(_u8(s), _u8(s0)) and torch.equal(g, gs)
    p1, s1, _ = ref.train_quantize(x, gs, axis=x.dim() - 2, swizzle=swizzle)
    assert torch.equal(p1, p)


def test_rowwise_nearest_equals_quantize_and_global_scale_is_computed():
    x = _x((2, 20, 64), torch.float16)
    p, s, g = ref.train_quantize(x, swizzle=True)
    assert torch.equal(g, ref.global_scale(x))
    p0, s0 = ref.quantize(x, g, True)
    assert torch.equal(p, p0) and torch.equal(_u8(s), _u8(s0))


def test_2d_scales_are_the_tile_amax_scales():
    x = _x((40, 48), seed=4)  # 40 rows: the last row tile is partial (8 rows)
    x[20, 5] = float("nan")  # tile (1, 0) becomes NaN
    gs = torch.tensor([ref.global_scale(torch.nan_to_num(x)).item()])
    p, s, _ = ref.train_quantize(x, gs, block_2d=True)
    s = _u8(s)
    for ti in range(3):
        for tj in range(3):
            tile = x[16 * ti:16 * ti + 16, 16 * tj:16 * tj + 16]
            # the 1-D scale of a block holding the tile's amax is the tile's scale
            row = torch.zeros(1, 16)
            row[0, 0] = tile.abs().max() if torch.isfinite(tile).all() else float("nan")
            want = _u8(ref.quantize(row, gs)[1])[0, 0]
            assert (s[16 * ti:16 * ti + 16, tj] == want).all(), (ti, tj)
    codes = ref.unpack_e2m1(p)
    assert (codes[16:32, :16] == 0).all()  # the NaN tile: codes 0 (dequantizes to NaN)


def test_2d_w_and_wt_give_the_same_values():
    w = _x((64, 96), torch.bfloat16, seed=5)
    gs = ref.global_scale(w)
    pr, sr_, _ = ref.train_quantize(w, gs, block_2d=True)
    pc, sc, _ = ref.train_quantize(w, gs, axis=-2, block_2d=True, swizzle=True)
    dr = ref.dequantize(pr, sr_, gs, torch.float32)
    dc = ref.dequantize(pc, sc, gs, torch.float32, swizzled=True)
    assert torch.equal(dr, dc.t())
    # with 1-D blocks they differ (so the test above can fail)
    p1, s1, _ = ref.train_quantize(w, gs, axis=-2)
    assert not torch.equal(dr, ref.dequantize(p1, s1, gs, torch.float32).t())


@pytest.mark.parametrize("block_2d", [False, True])
def test_rowcol_is_both_train_quantizes(block_2d):
    x = _x((2, 32, 48), torch.bfloat16, seed=6)
    seed, off = torch.tensor([4]), torch.tensor([12])
    signs = tr.random_hadamard_signs(seed)
    gs_row = torch.tensor([50.0, 60.0])
    out = ref.train_quantize_rowcol(x, gs_row, None, block_2d, "stochastic", seed, off, signs,
                                    True)
    row = ref.train_quantize(x, gs_row, -1, block_2d, "stochastic", seed, off, None, True)
    col = ref.train_quantize(x, None, -2, block_2d, "stochastic", seed, off, signs, True)
    assert len(out) == 6
    for got, want in zip(out, (*row, *col)):
        assert torch.equal(_u8(got) if got.dtype != torch.float32 else got,
                           _u8(want) if want.dtype != torch.float32 else want)


# --------------------------------------------------------------------------------------
# Hadamard
# --------------------------------------------------------------------------------------


def test_hadamard_matrix_is_sylvester():
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    h16 = torch.kron(torch.kron(torch.kron(h2, h2), h2), h2)
    H = tr.hadamard_matrix()
    assert torch.equal(H, h16)
    assert torch.equal(H @ H, 16 * torch.eye(16))


def test_hadamard_transform_is_the_matrix_and_orthogonal():
    x = _x((6, 32))
    s = tr.random_hadamard_signs(torch.tensor([11]))
    t = tr.hadamard_transform(x, s)
    R = tr.hadamard_matrix().double() * s.double() / 4
    want = (x.double().reshape(-1, 16) @ R.T).reshape(6, 32)
    torch.testing.assert_close(t.double(), want, rtol=1e-6, atol=1e-6)
    assert torch.allclose(R.T @ R, torch.eye(16, dtype=torch.float64))
    back = tr.hadamard_transform(t, s, inverse=True)
    torch.testing.assert_close(back, x, rtol=1e-6, atol=1e-6)
    # with all signs +1 the transform is its own inverse (H16/4 squared is I)
    ones = torch.ones(16)
    twice = tr.hadamard_transform(tr.hadamard_transform(x, ones), ones)
    torch.testing.assert_close(twice, x, rtol=1e-6, atol=1e-6)


def test_hadamard_butterfly_order_is_the_contract():
    """Output 0 is the pairwise (butterfly) sum ((v0 + v1) + (v2 + v3)) + ...: here
    1 + 2^-23 (exact), where a left-to-right sum would round 1 + 2^-24 + 2^-24 to 1."""
    v = torch.zeros(16)
    v[0], v[2], v[3] = 1.0, 2.0**-24, 2.0**-24
    t = tr.hadamard_transform(v, torch.ones(16))
    assert t[0].item() == 0.25 * (1.0 + 2.0**-23)
    seq = torch.zeros(1)
    for j in range(16):
        seq = seq + v[j]
    assert seq.item() == 1.0  # the order matters for this input


def test_random_hadamard_signs_follow_the_spec():
    seed = torch.tensor([123456789])
    s = tr.random_hadamard_signs(seed)
    w0 = _philox_python([0, 0, 0, 1], [123456789, 0])[0]
    assert s.tolist() == [-1.0 if (w0 >> i) & 1 else 1.0 for i in range(16)]
    assert not torch.equal(s, tr.random_hadamard_signs(torch.tensor([1])))


def test_hadamard_quantized_product_approximates_the_product():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 256, generator=g)
    b = torch.randn(48, 256, generator=g)
    s = tr.random_hadamard_signs(torch.tensor([3]))
    exact = a.double() @ b.double().T

    def deq(x, signs):
        p, sc, gs = ref.train_quantize(x, hadamard_signs=signs)
        return ref.dequantize(p, sc, gs, torch.float32).double()

    def rel(y):
        return ((y - exact).norm() / exact.norm()).item()

    err_h = rel(deq(a, s) @ deq(b, s).T)
    err_plain = rel(deq(a, None) @ deq(b, None).T)
    assert err_h < 0.15 and err_h < 1.3 * err_plain, (err_h, err_plain)
    # operands transformed with different signs do not multiply back (the test can fail)
    assert rel(deq(a, s) @ deq(b, -s.flip(0)).T) > 1.0
    # the transform itself keeps the product (to fp32 rounding)
    ta, tb = tr.hadamard_transform(a, s).double(), tr.hadamard_transform(b, s).double()
    torch.testing.assert_close(ta @ tb.T, exact, rtol=1e-5, atol=1e-3)


def test_hadamard_columnwise_transforms_along_m():
    x = _x((32, 16), seed=8)
    s = tr.random_hadamard_signs(torch.tensor([5]))
    gs = torch.tensor([100.0])
    p, sc, _ = ref.train_quantize(x, gs, axis=-2, hadamard_signs=s)
    xt = tr.hadamard_transform(x.t().contiguous(), s)
    p0, s0 = ref.quantize(xt, gs)
    assert torch.equal(p, p0) and torch.equal(_u8(sc), _u8(s0))


# --------------------------------------------------------------------------------------
# grouped quantize
# --------------------------------------------------------------------------------------


def _unswizzled_group_rows(scales, n_rows, starts, ends, kb):
    """Each group's linear scale rows read back from the grouped swizzled layout."""
    lin = ref.unswizzle_scales(scales, n_rows, kb)
    out, p = [], 0
    for s, e in zip(starts, ends):
        out.append(lin[p:p + (e - s)])
        p += (e - s + 127) // 128 * 128
    return lin, out


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_grouped_quantize_equals_per_group_quantize(dtype):
    x = _x((300, 64), torch.bfloat16, seed=9)
    ends = [0, 130, 130, 131, 290]  # an empty first group, an empty group, a 1-row group
    offs = torch.tensor(ends, dtype=dtype)
    starts = [0] + ends[:-1]
    p, s, gs = ref.grouped_quantize(x, offs)
    ps, ss, gss = ref.grouped_quantize(x, offs, swizzle=True)
    assert torch.equal(p, ps) and torch.equal(gs, gss)
    rows = tr.grouped_scale_rows(300, 5)
    assert rows == 384 + 640 and ss.shape == (rows, 4)
    lin, groups = _unswizzled_group_rows(ss, rows, starts, ends, 4)
    for g, (a, e) in enumerate(zip(starts, ends)):
        want_gs = ref.global_scale(x[a:e]) if e > a else torch.ones(1)
        assert gs[g] == want_gs[0], g
        p0, s0 = ref.quantize(x[a:e], want_gs)
        assert torch.equal(p[a:e], p0) and torch.equal(_u8(s[a:e]), _u8(s0)), g
        assert torch.equal(_u8(groups[g]), _u8(s0)), g
    assert (p[290:] == 0).all() and (_u8(s[290:]) == 0).all()  # rows past the last group
    used = sum((e - a + 127) // 128 * 128 for a, e in zip(starts, ends))
    assert (_u8(lin[used:]) == 0).all()
    # a given per-group scale is used as is
    given = torch.arange(1.0, 6.0)
    pg, _, gg = ref.grouped_quantize(x, offs, given)
    assert torch.equal(gg, given)
    assert torch.equal(pg[:130], ref.quantize(x[:130], given[1:2])[0])


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
def test_mx_grouped_quantize_equals_mx_quantize_per_row(elem):
    x = _x((200, 64), seed=10)
    offs = torch.tensor([70, 70, 190])
    d, s = ref.mx_grouped_quantize(x, offs, elem)
    d0, s0 = ref.mx_quantize(x[:190], elem)
    assert torch.equal(_u8(d[:190]), _u8(d0)) and torch.equal(s[:190], s0)
    assert (_u8(d[190:]) == 0).all() and (s[190:] == 0).all()
    ds, ss = ref.mx_grouped_quantize(x, offs, elem, swizzle=True)
    assert torch.equal(_u8(ds), _u8(d))
    _, groups = _unswizzled_group_rows(ss, tr.grouped_scale_rows(200, 3), [0, 70, 70],
                                       [70, 70, 190], 2)
    assert torch.equal(groups[0], s0[:70]) and torch.equal(groups[2], s0[70:190])


def test_grouped_nan_group_gets_a_nan_scale():
    x = _x((32, 32))
    x[20, 3] = float("nan")
    _, _, gs = ref.grouped_quantize(x, torch.tensor([16, 32]))
    assert torch.isfinite(gs[0]) and torch.isnan(gs[1])
