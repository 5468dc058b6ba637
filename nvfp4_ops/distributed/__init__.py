"""``torch.distributed`` support: DTensor sharding rules for ``torch.ops.nvfp4.*`` and
tensor-parallel quantized linear layers.

Importing this package (never done by ``import nvfp4_ops``, which does not import
``torch.distributed``) registers, once:

* a DTensor sharding rule for every codec op (:mod:`~nvfp4_ops.distributed.sharding`: rows
  and batches pass through, K sharding when each local K is a multiple of the block size,
  replicate passes through; the layout of swizzled scales per rank is documented there);
* a DTensor handler for ``nvfp4.global_scale`` that returns the GLOBAL scale of a sharded
  tensor (amax all-reduced with max over the mesh by functional collectives), so
  ``nvfp4_ops.quantize(dtensor)`` without a global scale quantizes like the unsharded tensor.

Tensor parallelism (:mod:`~nvfp4_ops.distributed.tensor_parallel`):
:class:`QuantizedColwiseParallel`, :class:`QuantizedRowwiseParallel`,
:func:`parallelize_quantized` (a ``parallelize_module`` plan written with the plain
``ColwiseParallel`` / ``RowwiseParallel`` works unchanged), :func:`quantize_sharded`.

Launch with ``torchrun --nproc-per-node N script.py`` (NCCL on GPUs, gloo on CPU) and build
the mesh with ``torch.distributed.device_mesh.init_device_mesh``::

    import nvfp4_ops, nvfp4_ops.distributed as nd
    from torch.distributed.tensor import distribute_tensor, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    mesh = init_device_mesh("cuda", (world_size,))
    packed, scales = nvfp4_ops.quantize(distribute_tensor(w, mesh, [Shard(0)]))  # global gs

    model = nvfp4_ops.nn.quantize_linears(model, "nvfp4", backend="dequant")  # every rank
    nd.parallelize_quantized(model, mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})
"""

import torch.distributed as _dist

if not _dist.is_available():  # pragma: no cover - torch built without distributed
    raise ImportError("nvfp4_ops.distributed needs torch.distributed, which this torch build "
                      "does not have (torch.distributed.is_available() is False)")

import nvfp4_ops as _nvfp4_ops  # noqa: F401,E402  (registers torch.ops.nvfp4 first)

from .sharding import (  # noqa: E402
    MX_BLOCK,
    NVFP4_BLOCK,
    SWIZZLE_ROWS,
    global_scale,
    local_swizzled_scales,
    register_all,
)
from .tensor_parallel import (  # noqa: E402
    SHARDING,
    QuantizedColwiseParallel,
    QuantizedRowwiseParallel,
    distribute,
    parallelize_quantized,
    quantize_sharded,
)

register_all()

__all__ = [
    "MX_BLOCK",
    "NVFP4_BLOCK",
    "SHARDING",
    "SWIZZLE_ROWS",
    "QuantizedColwiseParallel",
    "QuantizedRowwiseParallel",
    "distribute",
    "global_scale",
    "local_swizzled_scales",
    "parallelize_quantized",
    "quantize_sharded",
]
