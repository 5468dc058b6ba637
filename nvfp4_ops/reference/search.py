"""The exact scale searches of docs/spec.md section 5, their objectives and ``hessian_blocks``.

Every candidate scale is tried (126 E4M3 bytes for NVFP4, 255 E8M0 bytes for MX) with the
objective summed left to right one fp32 op per term, so the result is the exhaustive
minimum, bit for bit what the CUDA search kernels choose.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import (
    check_block_objective_args,
    check_hessian_blocks_args,
    check_mx_block_objective_args,
)
from ._common import F32, MX_BLOCK, NVFP4_BLOCK, batched, unbatched
from .elements import (
    _e2m1_round_mag,
    _inv_pow2_from_e8m0,
    _mx_round_mag,
    _nvfp4_multipliers,
    _nvfp4_round,
    _pow2_from_e8m0,
    e4m3_to_fp32,
)

# E4M3 bytes tried by the NVFP4 scale search: the 126 positive finite ones.
_NVFP4_CANDIDATES = range(0x01, 0x7F)
# E8M0 bytes tried by the MX scale search: every finite one.
_MX_CANDIDATES = range(0, 255)

# Element budget of one chunk of the scale search (about 10 live fp32 temporaries of this
# size, well under 1 GiB): a few MiB per temporary on CPU, where fewer and longer ops keep
# the thread-pool overhead down; large on accelerators to keep the launch count low.
_SEARCH_CHUNK_ELEMS_CPU = 1 << 19
_SEARCH_CHUNK_ELEMS_DEVICE = 1 << 24


def _seq_sum(terms: Tensor) -> Tensor:
    """Left-to-right fp32 sum over dim 0: ``s = t[0]; s = RN(s + t[1]); ...``."""
    s = terms[0].clone()
    for i in range(1, terms.shape[0]):
        s.add_(terms[i])
    return s


def _quadratic_form(e: Tensor, hc: Tensor) -> Tensor:
    """``sum_i RN(e_i * t_i)`` with ``t_i = sum_j RN(H[i, j] * e_j)``, both left to right.

    ``e``: ``[16, *S]`` (``e[j]`` is element ``j`` of every block); ``hc``: ``[16, 16, G]``
    with ``hc[i, j]`` broadcasting against ``S`` (its last dim is the block column group).
    """
    n = e.shape[0]
    obj: Optional[Tensor] = None
    for i in range(n):
        t = hc[i, 0] * e[0]
        for j in range(1, n):
            t.add_(hc[i, j] * e[j])
        p = e[i] * t
        obj = p if obj is None else obj.add_(p)
    assert obj is not None
    return obj


def _nvfp4_objective_cols(
    xc: Tensor,
    axc: Tensor,
    sf32: Tensor,
    gsc: Tensor,
    method: str,
    hc: Optional[Tensor],
) -> Tensor:
    """Per-block search objective (docs/spec.md section 5) in column-major block layout.

    Parameters
    ----------
    xc, axc : Tensor
        fp32 ``[16, *S]``: element ``i`` of every block is ``xc[i]``; ``axc = |xc|``.
    sf32 : Tensor
        fp32 block scales broadcastable to ``S``.
    gsc : Tensor
        fp32 global scale broadcastable to ``S``.
    method : str
        ``"mse"`` or ``"hessian"``.
    hc : Tensor or None
        ``hessian.permute(1, 2, 0)`` (``[16, 16, G]``) for ``"hessian"``.

    Returns
    -------
    Tensor
        fp32 objective of shape ``S``.

    Notes
    -----
    ``err_i = RN(x_i - RN(e2m1(code_i) * RN(sf / gs)))``. For ``mse`` the squares are
    computed from magnitudes, ``RN(|x_i| - RN(|q_i| * |s|))``: RN is sign-symmetric and
    the sign of the dequantized value is always that of ``x_i`` (or it is zero), so
    every square is bit-identical to the one of the signed error while saving the sign
    handling. ``hessian`` needs the signed error and computes it literally.
    """
    osc, s = _nvfp4_multipliers(sf32, gsc)
    if method == "mse":
        q = _e2m1_round_mag(axc * osc.abs())
        e = axc - q.mul_(s.abs())
        return _seq_sum(e.mul_(e))
    assert hc is not None
    v = _nvfp4_round(xc, osc)
    e = xc - v.mul_(s)
    return _quadratic_form(e, hc)


def _search_rows_per_chunk(row_elems: int, device: torch.device) -> int:
    budget = _SEARCH_CHUNK_ELEMS_CPU if device.type == "cpu" else _SEARCH_CHUNK_ELEMS_DEVICE
    return max(1, budget // max(1, row_elems))


def _nvfp4_search(
    xr: Tensor, gs_r: Tensor, naive: Tensor, method: str, hessian: Optional[Tensor]
) -> Tensor:
    """Exhaustive scale search over the 126 positive finite E4M3 bytes (docs/spec.md section 5).

    Parameters
    ----------
    xr : Tensor
        fp32 blocks ``[R, G, 16]``.
    gs_r : Tensor
        fp32 ``[R, 1]``: the global scale of each row.
    naive : Tensor
        uint8 ``[R, G]``: the amax scale bytes.
    method : str
        ``"mse"`` or ``"hessian"``.
    hessian : Tensor or None
        fp32 ``[G, 16, 16]``.

    Returns
    -------
    Tensor
        uint8 ``[R, G]``: per block, the byte of least objective; ties go to the naive
        byte, then to the smallest byte (best initialised with the naive byte, candidates
        scanned in increasing order, replaced only on a strictly smaller objective).
        Blocks whose naive byte is 0x7F keep it.
    """
    R, G, _ = xr.shape
    dev = xr.device
    cands = e4m3_to_fp32(torch.tensor(list(_NVFP4_CANDIDATES), dtype=torch.uint8, device=dev))
    hc = hessian.permute(1, 2, 0) if method == "hessian" and hessian is not None else None
    out = torch.empty_like(naive)
    step = _search_rows_per_chunk(G * NVFP4_BLOCK, dev)
    for r0 in range(0, R, step):
        r1 = min(R, r0 + step)
        xc = xr[r0:r1].permute(2, 0, 1).contiguous()  # [16, r, G]
        axc = xc.abs()
        gsc = gs_r[r0:r1]
        best = naive[r0:r1].clone()
        best_obj = _nvfp4_objective_cols(xc, axc, e4m3_to_fp32(best), gsc, method, hc)
        for k, byte in enumerate(_NVFP4_CANDIDATES):
            obj = _nvfp4_objective_cols(xc, axc, cands[k], gsc, method, hc)
            better = obj < best_obj
            best_obj = torch.where(better, obj, best_obj)
            best = torch.where(better, byte, best)
        out[r0:r1] = best
    return torch.where(naive == 0x7F, naive, out)


def nvfp4_block_objective(
    x: Tensor,
    scale_bytes: Tensor,
    global_scale: Tensor,
    method: str = "mse",
    hessian: Optional[Tensor] = None,
) -> Tensor:
    """Per-block scale-search objective of NVFP4 blocks for given scale bytes (docs/spec.md sec. 5).

    ``err_i = RN(x_i - RN(e2m1(code_i) * RN(fp32(sf) / gs)))`` with the codes of docs/spec.md
    section 2 for scale ``sf``. ``"mse"``: ``s = RN(err_0^2); s = RN(s + RN(err_1^2)); ...``
    up to ``i = 15``. ``"hessian"``: ``sum_i RN(err_i * t_i)`` left to right, with
    ``t_i = sum_j RN(H[i, j] * err_j)`` left to right and ``H = hessian[k // 16]``.
    This is exactly what the search of :func:`quantize` minimises. Blocks holding NaN or
    inf give whatever the arithmetic gives (NaN or inf).

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16.
    scale_bytes : Tensor
        uint8 or float8_e4m3fn ``[..., M, K/16]``.
    global_scale : Tensor
        float32, one element or ``[B]``.
    method : str
        ``"mse"`` or ``"hessian"``.
    hessian : Tensor, optional
        float32 ``[K/16, 16, 16]`` for ``"hessian"``.

    Returns
    -------
    Tensor
        fp32 ``[..., M, K/16]``.
    """
    check_block_objective_args(x, scale_bytes, global_scale, method, hessian)
    x3 = batched(x)
    B, M, K = x3.shape
    G = K // NVFP4_BLOCK
    xc = x3.to(F32).reshape(B, M, G, NVFP4_BLOCK).permute(3, 0, 1, 2).contiguous()
    sb = batched(scale_bytes).view(torch.uint8)
    hc = hessian.detach().permute(1, 2, 0) if hessian is not None else None
    obj = _nvfp4_objective_cols(
        xc, xc.abs(), e4m3_to_fp32(sb), global_scale.detach().reshape(-1, 1, 1), method, hc
    )
    return unbatched(obj, x)


def hessian_blocks(X: Tensor, chunk_rows: int = 4096) -> Tensor:
    """Per-column-group second moments ``H_j = X_j^T X_j`` for the ``"hessian"`` search.

    ``X_j = X[:, 16j:16j+16].float()``; the products of each chunk of ``chunk_rows`` rows
    are batched fp32 matmuls, always in full fp32 (TF32 is switched off for them whatever
    ``torch.backends.cuda.matmul.allow_tf32`` says, so H does not depend on that setting),
    and the chunks are accumulated in fp32. On a GPU this is cuBLAS at its fp32 rate.

    Parameters
    ----------
    X : Tensor
        ``[T, K]`` calibration activations, ``K % 16 == 0``.
    chunk_rows : int
        Rows per chunk.

    Returns
    -------
    Tensor
        fp32 ``[K/16, 16, 16]``, symmetric positive semi-definite.
    """
    check_hessian_blocks_args(X, chunk_rows)
    X = X.detach()
    T, K = X.shape
    G = K // NVFP4_BLOCK
    H = torch.zeros((G, NVFP4_BLOCK, NVFP4_BLOCK), dtype=F32, device=X.device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for r0 in range(0, T, chunk_rows):
            xc = X[r0 : r0 + chunk_rows].to(F32).reshape(-1, G, NVFP4_BLOCK).permute(1, 0, 2)
            H += torch.bmm(xc.transpose(1, 2), xc)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return H


def _mx_objective_cols(axc: Tensor, b: Tensor, elem: str) -> Tensor:
    """MX ``mse`` objective in column-major block layout.

    ``axc``: fp32 ``[32, *S]`` magnitudes; ``b``: int32 E8M0 bytes broadcastable to ``S``.
    ``err_i = RN(x_i - elem_i * 2^(b-127))`` (the product is exact); the squares are
    taken from magnitudes, which gives the same bits (see :func:`_nvfp4_objective_cols`),
    and summed left to right.
    """
    q = _mx_round_mag(axc * _inv_pow2_from_e8m0(b), elem)
    e = axc - q.mul_(_pow2_from_e8m0(b))
    return _seq_sum(e.mul_(e))


def _mx_search(xr: Tensor, naive: Tensor, elem: str) -> Tensor:
    """Exhaustive ``mse`` search over the E8M0 bytes 0..254 (docs/spec.md section 5).

    ``xr``: fp32 ``[R, G, 32]``; ``naive``: uint8 ``[R, G]``. Tie rule as in
    :func:`_nvfp4_search`; blocks whose naive byte is 255 keep it.
    """
    R, G, _ = xr.shape
    dev = xr.device
    out = torch.empty_like(naive)
    step = _search_rows_per_chunk(G * MX_BLOCK, dev)
    cands = torch.tensor(list(_MX_CANDIDATES), dtype=torch.int32, device=dev)
    for r0 in range(0, R, step):
        r1 = min(R, r0 + step)
        axc = xr[r0:r1].permute(2, 0, 1).abs().contiguous()  # [32, r, G]
        best = naive[r0:r1].clone()
        best_obj = _mx_objective_cols(axc, best.to(torch.int32), elem)
        for k, byte in enumerate(_MX_CANDIDATES):
            obj = _mx_objective_cols(axc, cands[k], elem)
            better = obj < best_obj
            best_obj = torch.where(better, obj, best_obj)
            best = torch.where(better, byte, best)
        out[r0:r1] = best
    return torch.where(naive == 255, naive, out)


def mx_block_objective(x: Tensor, scale_bytes: Tensor, elem: str) -> Tensor:
    """Per-block MX ``mse`` objective for given E8M0 scale bytes (docs/spec.md section 5).

    ``err_i = RN(x_i - elem_i * 2^(b - 127))`` with the elements of docs/spec.md section 3 for
    scale byte ``b``; ``s = RN(err_0^2); s = RN(s + RN(err_1^2)); ...`` up to ``i = 31``.
    Byte 255 gives NaN.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16, ``K % 32 == 0``.
    scale_bytes : Tensor
        uint8 or float8_e8m0fnu ``[..., M, K/32]``.
    elem : str
        ``"e4m3"`` or ``"e2m1"``.

    Returns
    -------
    Tensor
        fp32 ``[..., M, K/32]``.
    """
    check_mx_block_objective_args(x, scale_bytes, elem)
    x3 = batched(x)
    B, M, K = x3.shape
    axc = x3.to(F32).reshape(B, M, K // MX_BLOCK, MX_BLOCK).permute(3, 0, 1, 2).abs().contiguous()
    sb = batched(scale_bytes).view(torch.uint8).to(torch.int32)
    obj = _mx_objective_cols(axc, sb, elem)
    return unbatched(obj, x)
