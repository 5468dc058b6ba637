"""Tensor parallelism for the quantized linear layers (:mod:`nvfp4_ops.nn`).

``torch.distributed.tensor.parallel``'s :class:`~torch.distributed.tensor.parallel.ColwiseParallel`
and :class:`~torch.distributed.tensor.parallel.RowwiseParallel` shard an ``nn.Linear``'s
parameters; a quantized layer keeps its weight in buffers (packed data, block scales, the
global scale). :class:`QuantizedColwiseParallel` and :class:`QuantizedRowwiseParallel` are
the same styles (same inputs, outputs and keywords) for :class:`~nvfp4_ops.nn.NVFP4Linear`
and :class:`~nvfp4_ops.nn.MXFP8Linear`; they fall back to the parent style for any other
module. :func:`parallelize_quantized` is ``parallelize_module`` with the plain styles of a plan
swapped for these.

What is sharded how (N = out_features, K = in_features)
------------------------------------------------------
=================  =====================================  ===================================
buffer             colwise (output features)              rowwise (input features)
=================  =====================================  ===================================
weight data        ``Shard(0)`` (rows of ``[N, K/2]``)    ``Shard(1)``: local K % block == 0
block scales       ``Shard(0)`` (rows of ``[N, K/b]``)    ``Shard(1)`` (blocks of local K)
global scales      ``Replicate`` (ONE for all shards)     ``Replicate``
bias               ``Shard(0)``                           ``Replicate`` (added once)
=================  =====================================  ===================================

The shards keep the global scale of the WHOLE weight (quantize first, shard after: sharding
the quantized tensors never re-quantizes), so every rank's weight shard is a slice of the
single-process layer's quantized weight, byte for byte. A layer built from a float weight
that is already a DTensor is quantized with the global scale all-reduced over the mesh
(:func:`quantize_sharded`), with the same bytes.

The forward runs the layer's own code on DTensors (the ``torch.ops.nvfp4`` sharding rules of
:mod:`nvfp4_ops.distributed.sharding`): colwise outputs equal the single-process layer's
columns bit for bit (each output is the same dot product over the whole K); rowwise outputs
are the sum of the ranks' partial products (an all-reduce), so they equal the single-process
layer's up to the reordering of that sum: each rank's partial product is rounded to the
output dtype before the all-reduce, so the tests allow ``|got - want| <= 4 eps (|want| +
max |want|)`` with ``eps`` of the output dtype (2**-7 for bf16, 2**-23 for fp32). A dynamic
W4A4 activation scale under rowwise is the global one (the activation's amax all-reduced).

Backends: ``fused`` (the weight-only GEMM ops, with their DTensor rules: colwise gives each
rank the columns of its weight rows, rowwise a ``Partial`` sum with the bias split over the
ranks), ``dequant`` and ``reference``. The fused kernel's split-K depends on N and K, so under
tensor parallelism its sums run in another order than on one GPU: its colwise outputs equal
the single-process layer's within the GEMM's tolerance (docs/spec.md section 6), not bit for
bit as ``dequant`` / ``reference`` do. The ``scaled_mm`` backend (Blackwell) prepares a
padded, swizzled copy of the weight on the layer and is refused under tensor parallelism.
"""

from __future__ import annotations

from functools import partial
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import (
    DTensor,
    Placement,
    Replicate,
    Shard,
    distribute_module,
    distribute_tensor,
)
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)

from ..nn import MXFP8Linear, QuantizedLinear
from .sharding import _chunks, global_scale

__all__ = ["QuantizedColwiseParallel", "QuantizedRowwiseParallel", "SHARDING", "distribute",
           "parallelize_quantized", "quantize_sharded"]

_ops = torch.ops.nvfp4

#: style -> buffer name -> placement (one mesh dim). Buffers not named are replicated.
SHARDING: Dict[str, Dict[str, Placement]] = {
    "colwise": {"weight_packed": Shard(0), "weight_scale": Shard(0), "weight": Shard(0),
                "bias": Shard(0)},
    "rowwise": {"weight_packed": Shard(1), "weight_scale": Shard(1), "weight": Shard(1),
                "bias": Replicate()},
}

_TP_BACKENDS = ("fused", "dequant", "reference")


def distribute(t: Tensor, mesh: DeviceMesh, placement: Placement,
               src_data_rank: Optional[int] = 0) -> DTensor:
    """``distribute_tensor(t, mesh, [placement])`` for any dtype on a 1-D mesh: float8
    tensors travel as their bytes (not every backend moves float8: gloo does not)."""
    if t.element_size() != 1 or t.dtype == torch.uint8:
        return distribute_tensor(t, mesh, [placement], src_data_rank=src_data_rank)
    d = distribute_tensor(t.view(torch.uint8), mesh, [placement], src_data_rank=src_data_rank)
    return DTensor.from_local(d.to_local().view(t.dtype), mesh, [placement], run_check=False,
                              shape=t.shape, stride=t.stride())


def _check_layer(layer: QuantizedLinear, style: str, mesh: DeviceMesh) -> None:
    if mesh.ndim != 1:
        raise ValueError(f"{type(layer).__name__}: tensor parallelism needs a 1-D mesh, got "
                         f"a {mesh.ndim}-D mesh {tuple(mesh.shape)}")
    if layer.active_backend not in _TP_BACKENDS:
        raise ValueError(f"{type(layer).__name__}: under tensor parallelism the backend must "
                         f"be one of {_TP_BACKENDS}, got {layer.active_backend!r} (set it "
                         f"with layer.set_backend('dequant') first)")
    if style == "rowwise":
        block = layer.format_info().block
        local = _chunks(layer.in_features, mesh.size())
        if any(k % block for k in local):
            raise ValueError(f"{type(layer).__name__}: rowwise parallelism over {mesh.size()} "
                             f"ranks needs each rank's in_features to be a multiple of "
                             f"{block}, got in_features={layer.in_features} (local sizes "
                             f"{local})")


def _partition(style: str, src_data_rank: Optional[int]):
    def partition(name: str, module: nn.Module, mesh: DeviceMesh) -> None:
        if not isinstance(module, QuantizedLinear):
            return
        _check_layer(module, style, mesh)
        placements = SHARDING[style]
        for bname, buf in list(module._buffers.items()):
            if buf is None or bname.startswith("_mm_"):
                continue
            module._buffers[bname] = distribute(buf, mesh, placements.get(bname, Replicate()),
                                                 src_data_rank)
        if module.bias is not None:
            module.bias = nn.Parameter(
                distribute(module.bias.detach(), mesh, placements["bias"], src_data_rank),
                requires_grad=False)

    return partition


class _QuantizedStyle:
    """What the two quantized styles add to their torch parent: their partition."""

    STYLE = ""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        if not isinstance(module, QuantizedLinear):
            return super()._apply(module, device_mesh)
        if self.STYLE == "rowwise":
            self.desired_input_layouts = (Shard(-1),)
        return distribute_module(
            module, device_mesh, _partition(self.STYLE, self.src_data_rank),
            partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
            partial(self._prepare_output_fn, self.output_layouts, self.use_local_output))


class QuantizedColwiseParallel(_QuantizedStyle, ColwiseParallel):
    """:class:`~torch.distributed.tensor.parallel.ColwiseParallel` for quantized linears:
    the weight's rows (output features), block scales and bias sharded, the global scale
    replicated. Same keywords; other modules get the parent's behaviour."""

    STYLE = "colwise"


class QuantizedRowwiseParallel(_QuantizedStyle, RowwiseParallel):
    """:class:`~torch.distributed.tensor.parallel.RowwiseParallel` for quantized linears:
    the weight's columns (input features; a multiple of the block size per rank) and block
    scales sharded, the global scale and bias replicated. Same keywords."""

    STYLE = "rowwise"


_QUANTIZED_STYLE = {ColwiseParallel: QuantizedColwiseParallel,
                    RowwiseParallel: QuantizedRowwiseParallel}


def _quantized_style(style: ParallelStyle) -> ParallelStyle:
    cls = _QUANTIZED_STYLE.get(type(style))
    if cls is None:
        return style
    new = cls.__new__(cls)
    new.__dict__.update(style.__dict__)
    return new


def parallelize_quantized(module: nn.Module, device_mesh: DeviceMesh,
                          plan: Union[ParallelStyle, Dict[str, ParallelStyle]]) -> nn.Module:
    """``torch.distributed.tensor.parallel.parallelize_module`` for models with quantized
    linears: every plain ``ColwiseParallel`` / ``RowwiseParallel`` of ``plan`` becomes its
    quantized counterpart (keywords kept), so a plan written for the float model shards the
    quantized one. Quantize first (e.g. :func:`nvfp4_ops.nn.quantize_linears` on every
    rank, or load the quantized checkpoint), so that the shards share the whole weight's
    global scale. Returns ``module``."""
    if isinstance(plan, ParallelStyle):
        plan = _quantized_style(plan)
    else:
        plan = {k: _quantized_style(v) for k, v in plan.items()}
    return parallelize_module(module, device_mesh, plan)


def quantize_sharded(weight: DTensor, fmt: str = "nvfp4",
                     **kwargs) -> Tuple[DTensor, ...]:
    """Quantize a float weight that is already a DTensor, with the global scale of the WHOLE
    weight: NVFP4 returns ``(packed, scales, global_scale)`` (the global scale all-reduced
    over the mesh), MXFP8 ``(data, scales)``; sharded like ``weight`` (rows, or K with local K
    a multiple of the block size). The local bytes equal the matching slice of quantizing
    the full weight. ``kwargs`` go to the op (NVFP4: ``scale_method``; MXFP8: ``rounding``,
    ``scale_method``). Load them with ``NVFP4Linear.from_quantized`` per rank
    (``.to_local()``), or keep them as DTensors."""
    if fmt == "nvfp4":
        gs = global_scale(weight)
        packed, scales = _ops.quantize(weight, gs, False, kwargs.get("scale_method", "amax"),
                                       None)
        return packed, scales, gs
    if fmt == "mxfp8":
        return _ops.mx_quantize(weight, MXFP8Linear.ELEM, kwargs.get("rounding", "rceil"),
                                False, -1, kwargs.get("scale_method", "amax"))
    raise KeyError(f"quantize_sharded: fmt must be 'nvfp4' or 'mxfp8', got {fmt!r}")

