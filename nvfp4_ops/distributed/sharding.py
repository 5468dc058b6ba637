"""DTensor sharding rules for the ``torch.ops.nvfp4`` ops, and the global scale over a mesh.

Every codec op works block by block along the last dim (16 elements for NVFP4, 32 for MX)
and row by row, so a DTensor input keeps its placement:

* ``Replicate`` passes through (every output replicated);
* ``Shard(d)`` on a row or batch dim passes through: packed data and linear scales are
  sharded the same way as the input (each rank quantizes its own rows);
* ``Shard`` on the last dim (K) is allowed when every rank's local K is a multiple of the
  block size (16 NVFP4, 32 MX): the blocks then never straddle two ranks, packed data and
  linear scales are sharded on their last dim. Otherwise the op raises a ``ValueError``
  naming the expected multiple and the local sizes (nothing is redistributed silently);
* ``Partial`` inputs are reduced first (DTensor redistributes them to ``Replicate``: the
  codecs are not linear).

The other tensor arguments follow: a global scale is replicated (or, for 3-D input sharded
on the batch with one scale per batch, sharded like it), the Hessian blocks of
``scale_method="hessian"`` are replicated, or sharded on their first dim with K. Pass them
as DTensors (``nvfp4_ops.distributed.global_scale(x)`` already is one); DTensor accepts a
plain one-element global scale as replicated, with a warning, and refuses other plain
tensors mixed with DTensors. The sharding errors reach the caller as DTensor's
``RuntimeError("Sharding propagation failed ...")`` carrying the rule's message.

The weight-only GEMM ops (``gemm_nvfp4_w4a16``, ``gemm_mx_w16``: ``y = x @ W^T + bias``) take
a replicated weight, or the two tensor-parallel layouts: the weight's rows (N) sharded with
``x`` replicated gives ``y`` sharded on its last dim (bias sharded like the rows); the
weight's K sharded like ``x``'s last dim (each rank's K a multiple of the block) gives a
``Partial`` (sum) ``y``, the bias split as DTensor splits a replicated value into a sum
(``bias / ranks`` per rank). ``x`` sharded on a leading dim with the weight replicated
passes through. The global scale is replicated.

The global scale (``nvfp4.global_scale``) of a sharded DTensor is the GLOBAL one: the local
``amax`` is all-reduced with ``max`` over every mesh dim the input is sharded on, with
functional collectives (so that it compiles and can be captured in a CUDA graph), then
``2688 / amax`` is computed with the op itself, so it is bit-identical to the global scale of
the unsharded tensor (docs/spec.md section 2). The result is a replicated DTensor ``[1]``.

Swizzled scales of a row-sharded tensor (the layout each rank holds)
--------------------------------------------------------------------
Each rank swizzles its OWN rows: its local ``[M_local, Kb]`` scales are padded to
``roundup(M_local, 128)`` rows and laid out in 128x4 tiles (docs/spec.md section 4), exactly
what a block-scaled GEMM on that rank reads for its local weight or activation. When every
``M_local`` is a multiple of 128, the ranks' tiles, stacked in rank order, ARE the swizzled
scales of the whole tensor, so the ops return a DTensor sharded on dim 0 of the swizzled
tensor (``swizzle=True`` of ``quantize`` / ``mx_quantize``, ``swizzle_scales``,
``dequantize(swizzled=True)``). Otherwise a global swizzled tensor cannot be split that way
and the ops raise; :func:`local_swizzled_scales` gives each rank its own tiles as a plain
tensor. Swizzled scales of a tensor sharded on K are refused (a 128x4 tile spans 4 blocks of
every row of the tile, not a column range); ``unswizzle_scales`` of a row-sharded DTensor is
refused too (its ``rows`` argument is global): unswizzle each rank's local tensor instead.
"""

from __future__ import annotations

import inspect

from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.distributed._functional_collectives as funcol
from torch import Tensor
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta
from torch.distributed.tensor._op_schema import (
    OpSchema,
    OpStrategy,
    RuntimeSchemaInfo,
    StrategyType,
    TupleStrategy,
)
from torch.distributed.tensor._ops.utils import expand_to_full_mesh_op_strategy

__all__ = ["NVFP4_BLOCK", "MX_BLOCK", "SWIZZLE_ROWS", "global_scale", "local_swizzled_scales",
           "register", "local_sizes"]

_ops = torch.ops.nvfp4

#: Elements per NVFP4 block and per MX block (along the quantized dim).
NVFP4_BLOCK = 16
MX_BLOCK = 32
#: Rows of one tile of the swizzled 128x4 scale layout.
SWIZZLE_ROWS = 128

_R = Replicate()


# --------------------------------------------------------------------------------------
# Shapes of the local shards
# --------------------------------------------------------------------------------------


def _chunks(n: int, parts: int) -> List[int]:
    """The sizes ``torch.chunk`` (hence DTensor's ``Shard``) gives ``n`` split in ``parts``."""
    c = -(-n // parts)
    return [max(0, min(c, n - i * c)) for i in range(parts)]


def local_sizes(spec: DTensorSpec, dim: int) -> List[int]:
    """The distinct local sizes of global dim ``dim`` over all ranks of ``spec``'s mesh
    (sorted; one entry when the dim is not sharded)."""
    dim = dim % len(spec.shape)
    sizes = {spec.shape[dim]}
    for mesh_dim, p in enumerate(spec.placements):
        if isinstance(p, Shard) and p.dim % len(spec.shape) == dim:
            parts = spec.mesh.size(mesh_dim)
            sizes = {s for n in sizes for s in _chunks(n, parts)}
    return sorted(sizes)


def _shard_dims(spec: DTensorSpec) -> List[int]:
    return sorted({p.dim % len(spec.shape) for p in spec.placements if isinstance(p, Shard)})


def _check_multiple(op: str, what: str, spec: DTensorSpec, dim: int, multiple: int,
                    why: str) -> None:
    bad = [s for s in local_sizes(spec, dim) if s % multiple]
    if bad:
        raise ValueError(
            f"{op}: {what} is sharded over the mesh (placements {tuple(spec.placements)}); "
            f"each rank's local size must be a multiple of {multiple} ({why}), got local "
            f"sizes {local_sizes(spec, dim)} (global {spec.shape[dim % len(spec.shape)]})")


# --------------------------------------------------------------------------------------
# Registration (torch.distributed.tensor.experimental.register_sharding, with every
# non-tensor argument in the sharding cache key and uneven shards allowed)
# --------------------------------------------------------------------------------------

#: One acceptable sharding on one mesh dim: (output placements, input placements); None
#: for an input that is not a tensor (or an absent optional tensor).
Rule = Tuple[List[object], List[object]]


def _spec_of(strategy: object) -> object:
    if isinstance(strategy, OpStrategy):
        return strategy.strategies[0].output_spec
    if isinstance(strategy, TupleStrategy):
        return tuple(_spec_of(s) for s in strategy.children)
    return strategy


# torch >= 2.14 drops strategies over uneven shards unless asked; torch 2.11 keeps them.
_UNEVEN = ({"allow_uneven_sharding": True} if "allow_uneven_sharding"
           in inspect.signature(expand_to_full_mesh_op_strategy).parameters else {})


def register(op, rule: Callable[..., Sequence[Rule]]) -> None:
    """Register ``rule`` as ``op``'s DTensor sharding strategy.

    ``rule`` takes the op's arguments (DTensor arguments as their ``DTensorSpec``) and
    returns the acceptable ``(output placements, input placements)`` on one mesh dim, as
    for :func:`torch.distributed.tensor.experimental.register_sharding`; it raises when
    the input's sharding cannot be served. Unlike ``register_sharding``, every non-tensor
    argument (``swizzle``, ``axis``, ``rows`` ...) is part of DTensor's sharding cache key
    (the output shapes depend on them) and uneven shards are allowed (the rules check the
    local sizes themselves).
    """

    def strategy(op_schema: OpSchema) -> StrategyType:
        args = tuple(_spec_of(a) for a in op_schema.args_schema)
        kwargs = {k: _spec_of(v) for k, v in op_schema.kwargs_schema.items()}
        rules = rule(*args, **kwargs)
        return expand_to_full_mesh_op_strategy(
            op_schema.get_mesh_from_args(), op_schema, [list(o) + list(i) for o, i in rules],
            input_index=len(op_schema.op._schema.returns), **_UNEVEN)

    DTensor._op_dispatcher.sharding_propagator.register_op_strategy(
        op, strategy, RuntimeSchemaInfo(static_argnum=1, needs_pytree=True))


# --------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------


def _codec_rules(op: str, x: DTensorSpec, block: int, *, swizzle: bool, block_dim: int = -1,
                 out_dim: Callable[[int], int] = lambda d: d,
                 extra: Callable[[object], List[object]] = lambda p: [],
                 n_out: int = 2, unit: str = "") -> List[Rule]:
    """Rules of an op that quantizes / dequantizes ``x`` blockwise along ``block_dim``.

    Output tensors (``n_out`` of them: data [, scales]) follow the input's placement, with
    input dim ``d`` mapped to output dim ``out_dim(d)``; ``extra(p)`` gives the placements
    of the op's other tensor inputs for an input placement ``p``. ``block`` counts the
    input's entries per block (``unit`` names them when they are not elements). With
    ``swizzle`` the scales' rows are the input's other matrix dim.
    """
    nd = len(x.shape)
    block_dim %= nd
    rows_dim = nd - 1 if block_dim == nd - 2 else nd - 2
    rules: List[Rule] = [([_R] * n_out, [_R] + extra(_R))]
    for d in _shard_dims(x):
        if d == block_dim:
            if swizzle:
                raise ValueError(
                    f"{op}: swizzled scales of a tensor sharded on its blocked dim {d - nd} "
                    f"are not supported (a 128x4 tile spans 4 blocks of each of 128 rows, not "
                    f"a column range); shard on the rows, or use linear scales")
            _check_multiple(op, f"dim {d - nd} (the blocked dim{unit})", x, d, block,
                            "the block size, so that no block straddles two ranks")
        elif swizzle and d == rows_dim:
            _check_multiple(op, f"dim {d - nd} (the rows of the swizzled scales)", x, d,
                            SWIZZLE_ROWS, "the rows of a swizzle tile, so that the ranks' tiles "
                            "form the global swizzled layout; else use linear scales and "
                            "nvfp4_ops.distributed.local_swizzled_scales")
        p = Shard(d)
        o = Shard(out_dim(d))
        rules.append(([o] * n_out, [p] + extra(p)))
    return rules


def _gs_placement(p, nd: int, gs) -> object:
    """The global scale's placement for an input placement ``p``: one element is
    replicated; one per batch (3-D input) is sharded like a batch-sharded input."""
    batch = isinstance(p, Shard) and nd == 3 and p.dim % nd == 0
    return p if batch and gs.shape.numel() > 1 else _R


def _quantize_rule(x, gs, swizzle=False, scale_method="amax", hessian=None):
    nd = len(x.shape)

    def extra(p):
        # The Hessian blocks [K/16, 16, 16] follow K.
        h = None if hessian is None else (Shard(0) if isinstance(p, Shard)
                                          and p.dim % nd == nd - 1 else _R)
        return [_gs_placement(p, nd, gs), h]

    return _codec_rules("nvfp4.quantize", x, NVFP4_BLOCK, swizzle=swizzle, extra=extra)


def _dequantize_rule(packed, scales, gs, out_dtype, swizzled=False):
    nd = len(packed.shape)

    def extra(p):
        return [p, _gs_placement(p, nd, gs)]

    # Packed K/2 bytes per row: a local K multiple of 16 is a local byte count multiple of 8.
    return _codec_rules("nvfp4.dequantize", packed, NVFP4_BLOCK // 2, swizzle=swizzled,
                        extra=extra, n_out=1, unit=", in packed bytes of 2 elements")


def _quant_dequant_rule(x, gs, scale_method="amax"):
    return _codec_rules("nvfp4.quant_dequant", x, NVFP4_BLOCK, swizzle=False,
                        extra=lambda p: [_gs_placement(p, len(x.shape), gs)], n_out=1)


def _mx_quantize_rule(x, elem="e4m3", rounding="rceil", swizzle=False, axis=-1,
                      scale_method="amax"):
    nd = len(x.shape)
    if axis % nd == nd - 1:
        return _codec_rules("nvfp4.mx_quantize", x, MX_BLOCK, swizzle=swizzle)
    # axis=-2: the outputs are those of x with its last two dims swapped.
    swap = {nd - 1: nd - 2, nd - 2: nd - 1}
    return _codec_rules("nvfp4.mx_quantize", x, MX_BLOCK, swizzle=swizzle, block_dim=-2,
                        out_dim=lambda d: swap.get(d, d))


def _mx_dequantize_rule(data, scales, elem, out_dtype, swizzled=False):
    per_byte = 2 if elem == "e2m1" else 1
    return _codec_rules("nvfp4.mx_dequantize", data, MX_BLOCK // per_byte, swizzle=swizzled,
                        extra=lambda p: [p], n_out=1,
                        unit=", in packed bytes of 2 elements" if per_byte == 2 else "")


def _gemm_rules(op: str, x: DTensorSpec, data: DTensorSpec, bias, block: int,
                per_byte: int, scalar_args: List[object]) -> List[Rule]:
    """Rules of a weight-only GEMM op ``(x, data, scales, <scalar_args>, bias)``:
    ``scalar_args`` are the placements between the scales and the bias (the global scale:
    replicated; a string argument: None). ``block`` elements per scale, ``per_byte``
    elements per byte of ``data``."""
    nd = len(x.shape)
    b_none = bias is None

    def rule(out, xp, wp, bp):
        return ([out], [xp, wp, wp, *scalar_args, None if b_none else bp])

    rules: List[Rule] = [rule(_R, _R, _R, _R)]
    for d in _shard_dims(x):
        if d == nd - 1:
            _check_multiple(op, "dim -1 of x (K)", x, d, block,
                            "the block size, so that no block straddles two ranks")
            rules.append(rule(Partial(), Shard(d), Shard(1), Partial()))
        else:
            rules.append(rule(Shard(d), Shard(d), _R, _R))
    if 0 in _shard_dims(data):
        rules.append(rule(Shard(nd - 1), _R, Shard(0), Shard(0)))
    if 1 in _shard_dims(data) and nd - 1 not in _shard_dims(x):
        _check_multiple(op, f"dim 1 of the weight data (K/{per_byte})" if per_byte > 1 else
                        "dim 1 of the weight data (K)", data, 1, block // per_byte,
                        "the block size, so that no block straddles two ranks")
        rules.append(rule(Partial(), Shard(nd - 1), Shard(1), Partial()))
    return rules


def _gemm_nvfp4_rule(x, packed, scales, gs, bias=None):
    return _gemm_rules("nvfp4.gemm_nvfp4_w4a16", x, packed, bias, NVFP4_BLOCK, 2, [_R])


def _gemm_mx_rule(x, data, scales, elem, bias=None):
    return _gemm_rules("nvfp4.gemm_mx_w16", x, data, bias, MX_BLOCK,
                       2 if elem == "e2m1" else 1, [None])


def _swizzle_rule(scales):
    nd = len(scales.shape)
    rules: List[Rule] = [([_R], [_R])]
    for d in _shard_dims(scales):
        if d == nd - 1:
            raise ValueError("nvfp4.swizzle_scales: scales sharded on their last dim (blocks "
                             "of K) cannot be swizzled per rank (a 128x4 tile spans 4 blocks "
                             "of each of 128 rows); shard on the rows")
        if d == nd - 2:
            _check_multiple("nvfp4.swizzle_scales", "dim -2 (rows)", scales, d, SWIZZLE_ROWS,
                            "the rows of a swizzle tile, so that the ranks' tiles form the "
                            "global swizzled layout; else use "
                            "nvfp4_ops.distributed.local_swizzled_scales")
        rules.append(([Shard(d)], [Shard(d)]))
    return rules


def _unswizzle_rule(swizzled, rows, cols):
    nd = len(swizzled.shape)
    rules: List[Rule] = [([_R], [_R])]
    for d in _shard_dims(swizzled):
        if nd == 3 and d == 0:
            rules.append(([Shard(0)], [Shard(0)]))
        else:
            raise ValueError(
                f"nvfp4.unswizzle_scales: a swizzled tensor sharded on dim {d - nd} cannot "
                f"be unswizzled as a DTensor (rows={rows} is global, each rank holds other "
                f"rows); call nvfp4_ops.unswizzle_scales on each rank's local tensor")
    return rules


#: op name -> its sharding rule (global_scale has its own handler: it communicates).
RULES: Dict[str, Callable[..., Sequence[Rule]]] = {
    "quantize": _quantize_rule,
    "dequantize": _dequantize_rule,
    "quant_dequant": _quant_dequant_rule,
    "mx_quantize": _mx_quantize_rule,
    "mx_dequantize": _mx_dequantize_rule,
    "swizzle_scales": _swizzle_rule,
    "unswizzle_scales": _unswizzle_rule,
    "gemm_nvfp4_w4a16": _gemm_nvfp4_rule,
    "gemm_mx_w16": _gemm_mx_rule,
}


# --------------------------------------------------------------------------------------
# The global scale over the mesh
# --------------------------------------------------------------------------------------


def _global_scale_dtensor(x: DTensor) -> DTensor:
    mesh, placements = x.device_mesh, x.placements
    for p in placements:
        if isinstance(p, Partial):
            raise ValueError(f"nvfp4.global_scale: the input must be Shard or Replicate on "
                             f"every mesh dim, got placements {tuple(placements)} (reduce "
                             f"the partial tensor first: x.redistribute(...))")
    loc = x._local_tensor
    if loc.numel():
        amax = loc.detach().abs().amax().float().reshape(1)
    else:
        amax = torch.zeros(1, dtype=torch.float32, device=loc.device)
    # NaN may not survive every backend's max reduction: all-reduce a NaN flag beside it.
    nan = torch.isnan(amax)
    buf = torch.cat([torch.where(nan, 0.0, amax), nan.float()])
    for mesh_dim, p in enumerate(placements):
        if isinstance(p, Shard):
            buf = funcol.all_reduce(buf, "max", (mesh, mesh_dim))
    amax = torch.where(buf[1:] > 0, float("nan"), buf[:1])
    # global_scale of the one-element tensor [amax] is 2688 / amax with the spec's rules.
    gs = _ops.global_scale(amax)
    spec = DTensorSpec(mesh, (_R,) * mesh.ndim,
                       tensor_meta=TensorMeta(gs.shape, gs.stride(), gs.dtype))
    return DTensor(gs, spec, requires_grad=False)


def global_scale(x: Tensor) -> Tensor:
    """The NVFP4 encode global scale ``2688 / amax`` of the WHOLE tensor ``x``.

    For a DTensor: the local amax is all-reduced with max over the mesh dims ``x`` is
    sharded on (functional collectives), and the result is a replicated DTensor ``[1]``
    bit-identical to ``nvfp4_ops.global_scale(x.full_tensor())``. A plain tensor goes to
    ``torch.ops.nvfp4.global_scale``. ``torch.ops.nvfp4.global_scale`` of a DTensor (hence
    ``nvfp4_ops.quantize(dtensor)`` without a global scale) computes the same, once
    :mod:`nvfp4_ops.distributed` is imported.
    """
    if isinstance(x, DTensor):
        return _global_scale_dtensor(x)
    return _ops.global_scale(x)


def _global_scale_handler(op_call, args, kwargs):
    # DTensor's dispatcher calls this for torch.ops.nvfp4.global_scale.default.
    return _global_scale_dtensor(args[0] if args else kwargs["x"])


def local_swizzled_scales(scales: Tensor) -> Tensor:
    """This rank's swizzled scales of row-sharded linear scales (a plain tensor).

    ``scales`` is a DTensor of linear block scales ``[M, Kb]`` (or ``[B, M, Kb]``) sharded on
    its rows (or replicated). Each rank swizzles its local rows, padded to
    ``roundup(M_local, 128)``, into the 128x4 layout: what a block-scaled GEMM on that rank
    reads for its local rows. When every ``M_local`` is a multiple of 128 the ranks' results
    stacked in rank order are the global swizzled scales.
    """
    if isinstance(scales, DTensor):
        nd = scales.dim()
        for p in scales.placements:
            if isinstance(p, Shard) and p.dim % nd == nd - 1:
                raise ValueError(f"local_swizzled_scales: scales sharded on their last dim "
                                 f"cannot be swizzled per rank, got placements "
                                 f"{tuple(scales.placements)}; shard on the rows")
            if isinstance(p, Partial):
                raise ValueError(f"local_swizzled_scales: scales must be Shard or Replicate, "
                                 f"got placements {tuple(scales.placements)}")
        scales = scales.to_local()
    return _ops.swizzle_scales(scales)


_REGISTERED = False


def register_all() -> None:
    """Register the sharding rules and the global-scale handler (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for name, rule in RULES.items():
        register(getattr(_ops, name).default, rule)
    DTensor._op_dispatcher._custom_op_handlers[_ops.global_scale.default] = \
        _global_scale_handler
    _REGISTERED = True
