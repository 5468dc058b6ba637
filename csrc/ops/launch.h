// Launch interfaces shared between the op launchers: the NVFP4 / MX quantize ops
// (nvfp4.cu, mx.cu) hand scale_method "mse" / "hessian" to the fused search kernels
// of search.cu through these. Plain structs of device pointers; no torch types.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nvfp4 {

enum class InDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
enum class ScaleMethod : int { kAmax = 0, kMse = 1, kHessian = 2 };

// x is contiguous [batches, rows, k] (2-D input: batches = 1), blocks of 16 along k.
struct Nvfp4QuantArgs {
  const void* x;
  InDtype dtype;
  int64_t batches, rows, k;
  const float* global_scale;  // device; [batches] if gs_per_batch else [1] (ENCODE scale)
  bool gs_per_batch;
  uint8_t* packed;            // [batches, rows, k / 2]
  uint8_t* scales;            // linear [batches, rows, k / 16], or swizzled per batch
  bool swizzle;               // [batches, roundup(rows, 128), roundup(k / 16, 4)], zero padding
};

// Fused search + quantize (SPEC.md sec. 5) for kMse / kHessian.
// hessian: device [k / 16, 16, 16] fp32 for kHessian, else nullptr.
void launch_nvfp4_search(const Nvfp4QuantArgs& a, ScaleMethod method, const float* hessian,
                         cudaStream_t stream);

// x is contiguous [batches, rows, k], blocks of 32 along k (the rowwise cast).
struct MxQuantArgs {
  const void* x;
  InDtype dtype;
  int64_t batches, rows, k;
  bool e2m1;       // MXFP4 (packed uint8 [.., k / 2]); else MXFP8 (E4M3 bytes [.., k])
  bool floor;      // rounding "floor" (the naive scale the search ties to); else "rceil"
  uint8_t* data;
  uint8_t* scales; // linear [batches, rows, k / 32] or swizzled as above (kp = roundup(k / 32, 4))
  bool swizzle;
};

// Fused E8M0 scale search (scale_method "mse") + quantize, both element types.
void launch_mx_search(const MxQuantArgs& a, cudaStream_t stream);

}  // namespace nvfp4
