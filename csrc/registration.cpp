// Schemas of every nvfp4 op, and the entry point of the Python module nvfp4_ops._C.
//
// The schemas are defined here, on every machine (CPU-only builds too), so that
// torch.ops.nvfp4.* exists everywhere. Implementations are registered elsewhere:
// CUDA kernels in csrc/{nvfp4,mx,swizzle,gemm}/ops.cu (STABLE_TORCH_LIBRARY_IMPL), the
// pure-PyTorch reference for CPU (and for CUDA where no kernel is compiled) from Python.
// Numerics: docs/spec.md. Layouts and conventions: nvfp4_ops/ops.py.

#include <Python.h>

#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(nvfp4, m) {
  // NVFP4 quantize x [M, K] or [B, M, K] -> (packed E2M1 uint8 [..., K/2], E4M3 scales linear or 128x4-swizzled).
  m.def("quantize(Tensor x, Tensor global_scale, bool swizzle=False, str scale_method=\"amax\", Tensor? hessian=None) -> (Tensor, Tensor)");
  // NVFP4 dequantize packed E2M1 + E4M3 scales (+ fp32 encode global scale) into out_dtype.
  m.def("dequantize(Tensor packed, Tensor scales, Tensor global_scale, ScalarType out_dtype, bool swizzled=False) -> Tensor");
  // NVFP4 fake quant in one pass: equals dequantize(quantize(x)) in x's dtype; straight-through gradient.
  m.def("quant_dequant(Tensor x, Tensor global_scale, str scale_method=\"amax\") -> Tensor");
  // Encode global scale 2688 / amax(|x|) over the whole tensor, as fp32 [1] (1 when amax is 0, FLT_MAX when it overflows).
  m.def("global_scale(Tensor x) -> Tensor");
  // MXFP8 (elem e4m3) / MXFP4 (elem e2m1) quantize with E8M0 scales per 32 along axis -1 or -2.
  m.def("mx_quantize(Tensor x, str elem=\"e4m3\", str rounding=\"rceil\", bool swizzle=False, int axis=-1, str scale_method=\"amax\") -> (Tensor, Tensor)");
  // MXFP8 of x along both axes from one read: mx_quantize(x, "e4m3", rounding, swizzle, axis) for axis -1, then -2 -> (row data, row scales, col data, col scales).
  m.def("mx_quantize_rowcol(Tensor x, str rounding=\"rceil\", bool swizzle=False) -> (Tensor, Tensor, Tensor, Tensor)");
  // MXFP8 / MXFP4 dequantize into out_dtype.
  m.def("mx_dequantize(Tensor data, Tensor scales, str elem, ScalarType out_dtype, bool swizzled=False) -> Tensor");
  // Linear block scales [M, Kb] / [B, M, Kb] -> 128x4 swizzled [Mp, Kp] / [B, Mp, Kp], zero padded.
  m.def("swizzle_scales(Tensor scales) -> Tensor");
  // Inverse of swizzle_scales: swizzled [Mp, Kp] / [B, Mp, Kp] -> [rows, cols] / [B, rows, cols].
  m.def("unswizzle_scales(Tensor swizzled, int rows, int cols) -> Tensor");
  // W4A16 GEMM y[..., N] = x[..., K] @ W^T (+ bias), W [N, K] NVFP4 (uint8 [N, K/2], E4M3 scales [N, K/16] linear, fp32 encode global scale); x fp16/bf16.
  m.def("gemm_nvfp4_w4a16(Tensor x, Tensor packed, Tensor scales, Tensor global_scale, Tensor? bias=None) -> Tensor");
  // The NVFP4 weight in the fused GEMM's streaming order: [N, K/2] / [N, K/16] -> [ceil(N/16), ceil(K/512), 16, 256] / [.., 16, 32], zero padded.
  m.def("prepack_nvfp4_w4a16(Tensor packed, Tensor scales) -> (Tensor, Tensor)");
  // The exact inverse of prepack_nvfp4_w4a16 for a weight of n rows and k columns.
  m.def("unprepack_nvfp4_w4a16(Tensor packed, Tensor scales, int n, int k) -> (Tensor, Tensor)");
  // gemm_nvfp4_w4a16 with a weight of n rows from prepack_nvfp4_w4a16 (output [..., n]).
  m.def("gemm_nvfp4_w4a16_prepacked(Tensor x, Tensor packed, Tensor scales, Tensor global_scale, int n, Tensor? bias=None) -> Tensor");
  // W8A16 / W4A16 GEMM with an MX weight: elem "e4m3" (MXFP8, float8_e4m3fn [N, K]) or "e2m1" (MXFP4, uint8 [N, K/2]), E8M0 scales [N, K/32].
  m.def("gemm_mx_w16(Tensor x, Tensor data, Tensor scales, str elem, Tensor? bias=None) -> Tensor");
  // Training NVFP4 quantize (docs/spec.md sec. 8): blocks along axis -1 or -2, 16x16-tile scales, RN or Philox stochastic rounding, 16x16 random Hadamard -> (packed, scales, global_scale).
  m.def("train_quantize(Tensor x, Tensor? global_scale=None, int axis=-1, bool block_2d=False, str rounding=\"nearest\", Tensor? seed=None, Tensor? offset=None, Tensor? hadamard_signs=None, bool swizzle=False) -> (Tensor, Tensor, Tensor)");
  // train_quantize with axis -1 and -2 from one read of x (shared 2-D / rounding / seed / offset / swizzle; own global scales; Hadamard on the columnwise only) -> (row packed, scales, gs, col packed, scales, gs).
  m.def("train_quantize_rowcol(Tensor x, Tensor? global_scale=None, Tensor? colwise_global_scale=None, bool block_2d=False, str rounding=\"nearest\", Tensor? seed=None, Tensor? offset=None, Tensor? colwise_hadamard_signs=None, bool swizzle=False) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Grouped (MoE) NVFP4 quantize of x [T, K] sorted by group (end offsets [G] on the device), one global scale per group -> (packed, scales, global_scales [G]).
  m.def("grouped_quantize(Tensor x, Tensor group_offsets, Tensor? global_scale=None, bool swizzle=False) -> (Tensor, Tensor, Tensor)");
  // Grouped (MoE) MXFP8 / MXFP4 quantize of x [T, K] sorted by group; swizzled scales padded to 128 rows per group.
  m.def("mx_grouped_quantize(Tensor x, Tensor group_offsets, str elem=\"e4m3\", str rounding=\"rceil\", bool swizzle=False) -> (Tensor, Tensor)");
}

// A plain limited-API module: importing it runs the registrations above (and the
// CUDA ones in the other translation units). No Python-facing functions.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "nvfp4_ops native library: importing it registers torch.ops.nvfp4.*",
      -1,  // size
      nullptr,  // methods
  };
  return PyModule_Create(&module_def);
}
