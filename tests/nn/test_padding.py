"""nvfp4_ops.nn.padding: zero padding to the GEMM alignment, its exact inverse, and a padded
GEMM."""

import pytest
import torch

from nvfp4_ops import reference as ref
from nvfp4_ops.nn import padding

from ._common import K, N, _bytes, _x


# --------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------


def test_padding_nvfp4_round_trip_and_gemm():
    w = _x((N, K), seed=11)
    gs = ref.global_scale(w)
    packed, scales = ref.quantize(w, gs)
    pp, ps = padding.pad_nvfp4_weight(packed, scales)
    assert pp.shape == (64, 48) and ps.shape == (64, 6) and ps.dtype == torch.float8_e4m3fn
    up, us = padding.unpad_nvfp4_weight(pp, ps, N, K)
    assert torch.equal(up, packed) and torch.equal(_bytes(us), _bytes(scales))
    wd = ref.dequantize(packed, scales, gs, torch.float32)
    wpd = ref.dequantize(pp, ps, gs, torch.float32)
    assert torch.equal(wpd[:N, :K], wd)
    assert not wpd[N:].any() and not wpd[:, K:].any()
    assert not torch.signbit(wpd[N:]).any()  # +0, not -0
    # activation: padding K before quantizing gives the padded quantization of x
    x = _x((5, K), seed=12)
    gsx = ref.global_scale(x)
    xp = padding.pad_activation(x, 96)
    qp, sp = ref.quantize(xp, gsx)
    q, s = ref.quantize(x, gsx)
    assert torch.equal(qp[:, : K // 2], q) and not qp[:, K // 2:].any()
    assert torch.equal(_bytes(sp[:, : K // 16]), _bytes(s))
    # padded GEMM == unpadded GEMM
    xq = ref.dequantize(qp, sp, gsx, torch.float32).double()
    y_pad = padding.unpad_output(xq @ wpd.double().t(), N)
    y = ref.quant_dequant(x, gsx).double() @ wd.double().t()
    torch.testing.assert_close(y_pad, y, rtol=1e-12, atol=1e-12)
    # aligned input: returned as is
    a, b = ref.quantize(_x((32, 64)), gs)
    assert padding.pad_nvfp4_weight(a, b)[0] is a
    assert padding.pad_activation(x, K) is x
    with pytest.raises(ValueError, match="multiple of 16"):
        padding.pad_nvfp4_weight(packed, scales, multiple=24)
    with pytest.raises(ValueError, match="scales must be linear"):
        padding.pad_nvfp4_weight(packed, ref.quantize(w, gs, True)[1])


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
def test_padding_mx_round_trip(elem):
    w = _x((N, 96), seed=13)
    data, scales = ref.mx_quantize(w, elem)
    pd, ps = padding.pad_mx_weight(data, scales, elem)
    assert pd.shape == (64, 96 if elem == "e4m3" else 48) and ps.shape == (64, 3)
    ud, us = padding.unpad_mx_weight(pd, ps, N, 96, elem)
    assert torch.equal(_bytes(ud), _bytes(data)) and torch.equal(us, scales)
    full = ref.mx_dequantize(pd, ps, elem, torch.float32)
    assert torch.equal(full[:N], ref.mx_dequantize(data, scales, elem, torch.float32))
    assert not full[N:].any()
    # 3-D (experts) weights pad the last two dims
    d3, s3 = ref.mx_quantize(_x((2, 40, 64)), elem)
    p3, q3 = padding.pad_mx_weight(d3, s3, elem)
    assert p3.shape[:2] == (2, 64) and q3.shape == (2, 64, 2)
