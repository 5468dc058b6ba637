"""mx_quantize_rowcol through the op layer: the op and its wrapper against the two
mx_quantize ops, on every device present (CPU: the reference; CUDA: the kernel or the
reference). Fakes, opcheck and torch.compile: tests/ops/test_ops.py (its samples); the
argument contract: tests/ops/test_parity.py; bit exactness of the CUDA kernel on many
shapes: tests/cuda/test_mx_rowcol.py."""

import pytest
import torch

import nvfp4_ops
from nvfp4_ops import _library
from nvfp4_ops import reference as ref

from .test_ops import _assert_same

OPS = torch.ops.nvfp4
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _x(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-10, 10, shape[:-1] + (1,),
                                                                   generator=g).float())
    return x.to(dtype).to(device)


def _single_calls(x, rounding, swizzle):
    return (*OPS.mx_quantize(x, "e4m3", rounding, swizzle, -1, "amax"),
            *OPS.mx_quantize(x, "e4m3", rounding, swizzle, -2, "amax"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
def test_op_equals_the_two_single_ops(rounding, swizzle, device):
    for i, (shape, dtype) in enumerate([((64, 96), torch.bfloat16), ((2, 32, 160), torch.float32),
                                        ((160, 32), torch.float16)]):
        x = _x(shape, dtype, device, seed=i)
        got = OPS.mx_quantize_rowcol(x, rounding, swizzle)
        assert len(got) == 4
        for g, w in zip(got, _single_calls(x, rounding, swizzle), strict=True):
            assert g.device == x.device
            _assert_same(g, w)


@pytest.mark.parametrize("device", DEVICES)
def test_wrapper_passes_its_arguments(device):
    x = _x((96, 64), torch.bfloat16, device)
    _assert_same(nvfp4_ops.mx_quantize_rowcol(x), _single_calls(x, "rceil", False))
    _assert_same(nvfp4_ops.mx_quantize_rowcol(x, rounding="floor", swizzle=True),
                 _single_calls(x, "floor", True))
    # the two roundings differ on this input (else the test above could not tell them apart)
    assert not torch.equal(nvfp4_ops.mx_quantize_rowcol(x)[1],
                           nvfp4_ops.mx_quantize_rowcol(x, rounding="floor")[1])


def test_registered_everywhere():
    assert _library.OPS["mx_quantize_rowcol"] is ref.mx_quantize_rowcol
    assert _library.op_implementation("mx_quantize_rowcol", "cpu")[0] == "reference"
    assert "mx_quantize_rowcol" in nvfp4_ops.__all__ and "mx_quantize_rowcol" in ref.__all__
