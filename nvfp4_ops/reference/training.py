"""Training recipes: columnwise and 2-D block NVFP4, stochastic rounding, the 16x16 random
Hadamard transform, grouped (MoE) NVFP4 / MX quantize (docs/spec.md section 8).

Everything is exact and vectorised like the rest of the reference: the Philox generator runs
in int64 tensor arithmetic (every intermediate below 2^49, no wrap-around), the Hadamard
transform is the fixed butterfly of the spec (not a matmul, whose summation order is
unspecified), and the group bookkeeping of the grouped ops runs on the device (no host
synchronisation: CUDA-graph safe).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._checks import (
    check_grouped_quantize_args,
    check_mx_grouped_quantize_args,
    check_train_quantize_args,
    check_train_quantize_rowcol_args,
)
from ._common import F32, MX_BLOCK, NVFP4_BLOCK, batched, roundup, unbatched
from .elements import (
    _e2m1_code_from_value,
    _mx_naive_bytes,
    _nvfp4_multipliers,
    _nvfp4_naive_bytes,
    e4m3_to_fp32,
)
from .layout import pack_e2m1, swizzle_scales
from .mx import _mx_encode_with_scale
from .nvfp4 import _global_scale_from_amax, _nvfp4_encode_with_scale

_MASK32 = 0xFFFFFFFF
# Philox4x32-10 constants (Salmon et al., SC'11; Random123).
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUNDS = 10
#: Counter word 3 of each use of the generator (its "stream"), so the uses never share numbers.
SR_STREAM, HADAMARD_STREAM = 0, 1
#: Philox counters consumed per element: one counter gives 4 words, one per element.
ELEMENTS_PER_COUNTER = 4
HADAMARD_SIZE = 16


# --------------------------------------------------------------------------------------
# Philox4x32-10
# --------------------------------------------------------------------------------------


def _mulhilo32(m: int, b: Tensor) -> Tuple[Tensor, Tensor]:
    """``(hi, lo)`` 32-bit halves of ``m * b`` for a 32-bit constant ``m`` and int64 ``b`` in
    [0, 2^32), without int64 overflow: ``b`` is split in 16-bit halves (products < 2^48)."""
    p_lo = (b & 0xFFFF) * m
    p_hi = (b >> 16) * m
    t = p_lo + ((p_hi & 0xFFFF) << 16)
    return (p_hi >> 16) + (t >> 32), t & _MASK32


def philox4x32(counter: Tuple[Tensor, Tensor, Tensor, Tensor], key: Tuple[Tensor, Tensor]
               ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-10 of broadcastable int64 counter words and key words, each in [0, 2^32).

    One round: ``(hi0, lo0) = mulhilo(M0, c0)``, ``(hi1, lo1) = mulhilo(M1, c2)``,
    ``c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)``; between rounds the key is bumped by
    ``(W0, W1)`` mod 2^32. Ten rounds. Returns the four output words (int64, in [0, 2^32)).
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(PHILOX_ROUNDS):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & _MASK32, (k1 + PHILOX_W1) & _MASK32
        hi0, lo0 = _mulhilo32(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo32(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _key(seed: Tensor) -> Tuple[Tensor, Tensor]:
    """Key words of an int64 seed tensor (its 64 bits: low word k0, high word k1)."""
    s = seed.detach().reshape(1).to(torch.int64)
    return s & _MASK32, (s >> 32) & _MASK32


def philox_words(seed: Tensor, offset: Tensor, n: int, stream: int = SR_STREAM) -> Tensor:
    """The first ``n`` 32-bit words (int64) of the stream ``stream`` at ``offset``.

    Word ``e`` is word ``e % 4`` of Philox4x32-10 with key ``seed`` and counter
    ``(c0, c1, 0, stream)``, ``c0 + 2^32 c1 = (offset + e // 4) mod 2^64`` (docs/spec.md sec. 8.3).
    """
    ncnt = (n + ELEMENTS_PER_COUNTER - 1) // ELEMENTS_PER_COUNTER
    idx = offset.detach().reshape(1).to(torch.int64) + torch.arange(
        ncnt, dtype=torch.int64, device=seed.device)
    zero = torch.zeros_like(idx)
    words = philox4x32((idx & _MASK32, (idx >> 32) & _MASK32, zero, zero + stream), _key(seed))
    return torch.stack(words, dim=-1).reshape(-1)[:n]


def sr_offset_increment(numel: int) -> int:
    """How far a caller advances the offset after a stochastic-rounding call on ``numel``
    elements for fresh numbers: ``ceil(numel / 4)`` counters (docs/spec.md sec. 8.3)."""
    return (numel + ELEMENTS_PER_COUNTER - 1) // ELEMENTS_PER_COUNTER


def uniform_from_words(words: Tensor) -> Tensor:
    """fp32 uniforms in [0, 1): ``(w >> 8) * 2^-24`` (exact) of 32-bit words."""
    return (words >> 8).to(F32) * (2.0 ** -24)


# --------------------------------------------------------------------------------------
# Stochastic rounding to E2M1
# --------------------------------------------------------------------------------------

def e2m1_round_stochastic(y: Tensor, u: Tensor) -> Tensor:
    """Round fp32 ``y`` to a signed E2M1 value with the uniforms ``u`` (docs/spec.md sec. 8.3).

    ``a = min(|y|, 6)`` (NaN: 0); ``lo`` / ``hi`` are the E2M1 magnitudes with
    ``lo <= a < hi`` (``lo = 6`` at 6); ``p = (a - lo) / (hi - lo)`` (exact);
    the result is ``hi`` if ``u < p`` else ``lo``, with the sign of ``y``.
    Computed without tables (no host data, so it runs inside CUDA-graph capture): the
    E2M1 step is 0.5 below 2, 1 below 4, 2 above, and ``lo = floor(a / step) * step``,
    every operation exact (the step is a power of two).
    """
    a = torch.nan_to_num(y.abs(), nan=0.0).clamp(max=6.0)
    inv_step = torch.where(a < 2.0, 2.0, torch.where(a < 4.0, 1.0, 0.5))
    step = torch.where(a < 2.0, 0.5, torch.where(a < 4.0, 1.0, 2.0))
    lo = torch.floor(a * inv_step) * step
    p = (a - lo) * inv_step  # 0 at 6: never rounds up past the largest magnitude
    q = torch.where(u < p, lo + step, lo)
    return torch.copysign(q, y)


# --------------------------------------------------------------------------------------
# The 16x16 random Hadamard transform
# --------------------------------------------------------------------------------------


def hadamard_matrix(n: int = HADAMARD_SIZE) -> Tensor:
    """Sylvester's Hadamard matrix ``H[i, j] = (-1)^popcount(i & j)``, fp32 ``[n, n]``."""
    i = torch.arange(n)
    bits = i[:, None] & i[None, :]
    parity = torch.zeros_like(bits)
    while bool(bits.any()):
        parity ^= bits & 1
        bits = bits >> 1
    return (1 - 2 * parity).to(F32)


def random_hadamard_signs(seed: Tensor) -> Tensor:
    """The sign vector of the random Hadamard transform from an int64 seed tensor.

    ``s_i = -1`` if bit ``i`` of word 0 of Philox4x32-10(key = seed, counter = (0, 0, 0, 1))
    is set, else ``+1``: fp32 ``[16]`` on the seed's device (docs/spec.md sec. 8.4).
    """
    w0 = philox_words(seed, torch.zeros(1, dtype=torch.int64, device=seed.device), 1,
                      HADAMARD_STREAM)
    bits = (w0 >> torch.arange(HADAMARD_SIZE, device=seed.device)) & 1
    return (1 - 2 * bits).to(F32)


def hadamard_transform(x: Tensor, signs: Tensor, inverse: bool = False) -> Tensor:
    """The random Hadamard transform of each 16-element block along the last dim, in fp32.

    Forward: ``v' = (1/4) H16 (s * v)``: the signs multiply (exact), then the butterfly
    stages ``h = 1, 2, 4, 8`` (pairs ``(i, i + h)`` with bit ``h`` of ``i`` clear become
    ``(a + b, a - b)``, one fp32 add or subtract each), then ``* 0.25``. ``R = H16 diag(s) / 4``
    is orthogonal, so ``inverse=True`` (``v = s * (1/4) H16 v'``) undoes it up to rounding.
    """
    v = x.detach().to(F32)
    shape = v.shape
    s = signs.detach().to(F32)
    blocks = v.reshape(-1, HADAMARD_SIZE)
    if not inverse:
        blocks = blocks * s
    for h in (1, 2, 4, 8):
        b = blocks.reshape(-1, HADAMARD_SIZE // (2 * h), 2, h)
        lo, hi = b[:, :, 0, :], b[:, :, 1, :]
        blocks = torch.stack((lo + hi, lo - hi), dim=2).reshape(-1, HADAMARD_SIZE)
    blocks = blocks * 0.25
    if inverse:
        blocks = blocks * s
    return blocks.reshape(shape)


# --------------------------------------------------------------------------------------
# train_quantize: NVFP4 rowwise / columnwise, 1-D / 2-D blocks, RN / SR, Hadamard
# --------------------------------------------------------------------------------------


def _global_scale_f32(v: Tensor) -> Tensor:
    """``global_scale`` (docs/spec.md sec. 2) of an fp32 tensor, shape [1]."""
    amax = v.abs().amax().reshape(1) if v.numel() else torch.zeros(1, dtype=F32, device=v.device)
    return _global_scale_from_amax(amax)


def _tile_bytes(xb: Tensor, gs_b: Tensor) -> Tensor:
    """2-D scale bytes: one per 16x16 tile of ``xb [B, R, G, 16]`` (R rows, padded with zeros
    to a multiple of 16), expanded back to every row: ``[B, R, G]``."""
    B, R, G, _ = xb.shape
    Rp = roundup(R, NVFP4_BLOCK)
    padded = torch.zeros((B, Rp, G, NVFP4_BLOCK), dtype=F32, device=xb.device)
    padded[:, :R] = xb
    tiles = padded.reshape(B, Rp // NVFP4_BLOCK, NVFP4_BLOCK, G, NVFP4_BLOCK).transpose(2, 3)
    sf = _nvfp4_naive_bytes(tiles.reshape(B, Rp // NVFP4_BLOCK, G, -1), gs_b)
    return sf.repeat_interleave(NVFP4_BLOCK, dim=1)[:, :R]


def _element_index(B: int, M: int, K: int, colwise: bool, device) -> Tensor:
    """Row-major index ``(b M + m) K + k`` of each element of ``x [B, M, K]``, laid out like
    the quantized operand (``[B, K, M]`` for the columnwise one)."""
    e = torch.arange(B * M * K, dtype=torch.int64, device=device).reshape(B, M, K)
    return e.transpose(1, 2) if colwise else e


def train_quantize(
    x: Tensor,
    global_scale: Optional[Tensor] = None,
    axis: int = -1,
    block_2d: bool = False,
    rounding: str = "nearest",
    seed: Optional[Tensor] = None,
    offset: Optional[Tensor] = None,
    hadamard_signs: Optional[Tensor] = None,
    swizzle: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """NVFP4 quantize with the training options (docs/spec.md section 8).

    In order: ``axis=-2`` takes the blocks along ``M`` (the operand is ``x^T``, data
    ``[..., K, M/2]``); ``hadamard_signs`` applies the random Hadamard transform along the
    blocks; ``global_scale=None`` computes ``2688 / amax`` of that (transformed) operand;
    ``block_2d`` gives one scale per 16x16 tile of ``x`` (the same element values for
    ``axis=-1`` and ``axis=-2``); ``rounding="stochastic"`` rounds the elements with the
    Philox stream of ``seed`` at ``offset``, element ``(b, m, k)`` of ``x`` using word
    ``(b M + m) K + k`` whatever the axis.

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.train_quantize`.
    """
    check_train_quantize_args(x, global_scale, axis, block_2d, rounding, seed, offset,
                              hadamard_signs, swizzle)
    x3 = batched(x).to(F32)
    B, M, K = x3.shape
    colwise = axis in (-2, x.dim() - 2)
    v = x3.transpose(1, 2) if colwise else x3  # [B, R, C]: blocks along C
    if hadamard_signs is not None:
        v = hadamard_transform(v.contiguous(), hadamard_signs)
    gs = _global_scale_f32(v) if global_scale is None else global_scale.detach().reshape(-1)
    gs_b = gs.reshape(-1, 1, 1)
    R, C = v.shape[1], v.shape[2]
    G = C // NVFP4_BLOCK
    xb = v.reshape(B, R, G, NVFP4_BLOCK)
    # a 16x16 tile of the operand is a 16x16 tile of x, whichever the axis
    sf = _tile_bytes(xb, gs_b) if block_2d else _nvfp4_naive_bytes(xb, gs_b)
    if rounding == "nearest":
        codes = _nvfp4_encode_with_scale(xb, sf, gs_b)
    else:
        words = philox_words(seed, offset, B * M * K)
        u = uniform_from_words(words[_element_index(B, M, K, colwise, x.device)])
        sf32 = e4m3_to_fp32(sf)
        osc, _ = _nvfp4_multipliers(sf32, gs_b)
        y = xb * osc.unsqueeze(-1)
        q = e2m1_round_stochastic(torch.where(torch.isnan(y), xb * 0.0, y),
                                  u.reshape(B, R, G, NVFP4_BLOCK))
        codes = torch.where(torch.isnan(sf32).unsqueeze(-1), 0, _e2m1_code_from_value(q))
    packed = unbatched(pack_e2m1(codes.reshape(B, R, C)), x)
    scales = unbatched(sf.view(torch.float8_e4m3fn), x)
    if swizzle:
        scales = swizzle_scales(scales)
    return packed, scales, gs.clone()


def train_quantize_rowcol(
    x: Tensor,
    global_scale: Optional[Tensor] = None,
    colwise_global_scale: Optional[Tensor] = None,
    block_2d: bool = False,
    rounding: str = "nearest",
    seed: Optional[Tensor] = None,
    offset: Optional[Tensor] = None,
    colwise_hadamard_signs: Optional[Tensor] = None,
    swizzle: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Both NVFP4 operands of ``x`` from one read: ``train_quantize`` with ``axis=-1`` and
    with ``axis=-2`` (docs/spec.md section 8.1).

    The two share ``block_2d``, ``rounding``, ``seed``, ``offset`` (so each element draws
    the same number in both) and ``swizzle``; each has its own global scale (given, or
    computed from its operand); only the columnwise one takes Hadamard signs (the wgrad
    operand of the recipes). See the op, :func:`nvfp4_ops.ops.train_quantize_rowcol`.
    """
    check_train_quantize_rowcol_args(x, global_scale, colwise_global_scale, block_2d, rounding,
                                     seed, offset, colwise_hadamard_signs, swizzle)
    row = train_quantize(x, global_scale, -1, block_2d, rounding, seed, offset, None, swizzle)
    col = train_quantize(x, colwise_global_scale, -2, block_2d, rounding, seed, offset,
                         colwise_hadamard_signs, swizzle)
    return (*row, *col)


# --------------------------------------------------------------------------------------
# Grouped (MoE) quantize
# --------------------------------------------------------------------------------------


def _groups(x: Tensor, group_offsets: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Per row of ``x [T, K]``: its group (G for rows past the last offset), whether it is in
    a group, and the row it takes in the per-group 128-padded scale layout (-1: none)."""
    T = x.shape[0]
    ends = group_offsets.detach().to(torch.int64)
    G = ends.shape[0]
    rows = torch.arange(T, dtype=torch.int64, device=x.device)
    gid = torch.bucketize(rows, ends, right=True)
    inside = gid < G
    starts = torch.cat((ends.new_zeros(1), ends[:-1]))
    padded = (ends - starts + 127) // 128 * 128
    pstart = torch.cat((padded.new_zeros(1), torch.cumsum(padded, 0)[:-1]))
    g = gid.clamp(max=G - 1)
    return g, inside, torch.where(inside, pstart[g] + rows - starts[g], -1)


def grouped_scale_rows(T: int, G: int) -> int:
    """Rows of the swizzled scales of a grouped quantize: ``roundup(T, 128) + 128 G``, a
    bound on ``sum_g roundup(n_g, 128)`` known without reading the offsets."""
    return roundup(T, 128) + 128 * G


def _grouped_scales(sf: Tensor, inside: Tensor, dest: Tensor, G: int, swizzle: bool) -> Tensor:
    """Linear scale bytes ``[T, Kb]`` (rows outside every group zeroed), or each group's rows
    at its padded place in ``[roundup(T, 128) + 128 G, Kb]``, swizzled as one matrix."""
    sf = torch.where(inside.unsqueeze(-1), sf, 0).to(torch.uint8)
    T, Kb = sf.shape
    if not swizzle:
        return sf
    rows = grouped_scale_rows(T, G)
    out = torch.zeros((rows + 1, Kb), dtype=torch.uint8, device=sf.device)
    out[torch.where(dest < 0, rows, dest)] = sf  # rows outside a group land in a dropped row
    return swizzle_scales(out[:rows])


def grouped_quantize(
    x: Tensor,
    group_offsets: Tensor,
    global_scale: Optional[Tensor] = None,
    swizzle: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """NVFP4 quantize of MoE tokens sorted by expert, with one global scale per group.

    Group ``g`` is rows ``[group_offsets[g-1], group_offsets[g])`` (from 0 for g = 0);
    rows past the last offset get zero bytes. ``global_scale=None`` computes each group's
    ``2688 / amax`` (1 for an empty group). See docs/spec.md section 8.5 and the op,
    :func:`nvfp4_ops.ops.grouped_quantize`.
    """
    check_grouped_quantize_args(x, group_offsets, global_scale, swizzle)
    T, K = x.shape
    G = group_offsets.shape[0]
    g, inside, dest = _groups(x, group_offsets)
    xf = x.detach().to(F32)
    if global_scale is None:
        amax = torch.zeros(G, dtype=F32, device=x.device).scatter_reduce(
            0, g, torch.where(inside.unsqueeze(-1), xf.abs(), 0.0).amax(dim=-1), "amax")
        gs = _global_scale_from_amax(amax)
    else:
        gs = global_scale.detach().reshape(G).clone()
    xb = xf.reshape(T, 1, K // NVFP4_BLOCK, NVFP4_BLOCK)
    gs_rows = gs[g].reshape(T, 1, 1)
    sf = _nvfp4_naive_bytes(xb, gs_rows)
    codes = _nvfp4_encode_with_scale(xb, sf, gs_rows).reshape(T, K)
    codes = torch.where(inside.unsqueeze(-1), codes, 0)
    scales = _grouped_scales(sf.reshape(T, K // NVFP4_BLOCK), inside, dest, G, swizzle)
    return pack_e2m1(codes), scales.view(torch.float8_e4m3fn), gs


def mx_grouped_quantize(
    x: Tensor,
    group_offsets: Tensor,
    elem: str = "e4m3",
    rounding: str = "rceil",
    swizzle: bool = False,
) -> Tuple[Tensor, Tensor]:
    """MXFP8 / MXFP4 quantize of MoE tokens sorted by expert (docs/spec.md section 8.5).

    The elements and scales are those of ``mx_quantize`` row by row; rows past the last
    offset get zero bytes; with ``swizzle`` each group's scale rows start at a multiple of
    128 (``[roundup(T, 128) + 128 G, roundup(K/32, 4)]``). See the op,
    :func:`nvfp4_ops.ops.mx_grouped_quantize`.
    """
    check_mx_grouped_quantize_args(x, group_offsets, elem, rounding, swizzle)
    T, K = x.shape
    _, inside, dest = _groups(x, group_offsets)
    xb = x.detach().to(F32).reshape(T, K // MX_BLOCK, MX_BLOCK)
    b = _mx_naive_bytes(xb, elem, rounding)
    data = _mx_encode_with_scale(xb, b, elem).reshape(T, K)
    data = torch.where(inside.unsqueeze(-1), data, 0)
    data = data.view(torch.float8_e4m3fn) if elem == "e4m3" else pack_e2m1(data)
    return data, _grouped_scales(b, inside, dest, group_offsets.shape[0], swizzle)


__all__ = [
    "philox4x32",
    "philox_words",
    "sr_offset_increment",
    "uniform_from_words",
    "e2m1_round_stochastic",
    "hadamard_matrix",
    "random_hadamard_signs",
    "hadamard_transform",
    "train_quantize",
    "train_quantize_rowcol",
    "grouped_quantize",
    "grouped_scale_rows",
    "mx_grouped_quantize",
]
