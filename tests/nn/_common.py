"""Helpers shared by the tests of nvfp4_ops.nn (small CPU shapes, seeded)."""

import torch
from torch import nn

from nvfp4_ops import reference as ref

def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _linear(K, N, bias=True, dtype=torch.float32, seed=0):
    g = _gen(seed)
    lin = nn.Linear(K, N, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=g) * 0.05)
        if bias:
            lin.bias.copy_(torch.randn(N, generator=g) * 0.1)
    return lin.to(dtype)


def _x(shape, dtype=torch.float32, seed=1):
    return torch.randn(shape, generator=_gen(seed)).to(dtype)


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def _bytes(t):
    return t.contiguous().view(torch.uint8)


def _nvfp4_weight64(layer):
    return ref.dequantize(layer.weight_packed, layer.weight_scale, layer.weight_global_scale,
                          torch.float32).double()


def _mxfp8_weight64(layer):
    return ref.mx_dequantize(layer.weight, layer.weight_scale, "e4m3", torch.float32).double()


K, N = 80, 48  # neither a multiple of 32: the scaled_mm path pads both
