// swizzle_scales / unswizzle_scales: linear [.., M, Kb] block scales <-> the 128x4 layout
// (docs/spec.md sec. 4). Any 1-byte dtype (uint8, int8, bool, every float8, float4_e2m1fn_x2, ...),
// as on CPU and under FakeTensor: the bytes are moved as they are.

#include "core/swizzle.h"
#include "torch_utils.h"

namespace nvfp4 {
namespace {

// One thread writes 4 adjacent swizzled bytes (S[r][4j..4j+3]) as one 32-bit store.
__global__ void swizzle_kernel(const uint8_t* __restrict__ in, uint32_t* __restrict__ out,
                               int64_t batches, int64_t m, int64_t kb, int64_t mp, int64_t kp) {
  const int64_t words_per_batch = mp * kp / 4;
  const int64_t n = batches * words_per_batch;
  for (int64_t w = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; w < n;
       w += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = w / words_per_batch;
    const int64_t o = (w - b * words_per_batch) * 4;
    const int64_t tile = o >> 9, within = o & 511;
    const int64_t r = (tile / (kp >> 2)) * 128 + ((within >> 2) & 3) * 32 + (within >> 4);
    const int64_t c0 = (tile % (kp >> 2)) * 4;
    uint32_t word = 0;
    if (r < m) {
      const uint8_t* row = in + (b * m + r) * kb;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (c0 + j < kb) word |= uint32_t(row[c0 + j]) << (8 * j);
    }
    out[w] = word;
  }
}

__global__ void unswizzle_kernel(const uint8_t* __restrict__ in, uint8_t* __restrict__ out,
                                 int64_t batches, int64_t rows, int64_t cols, int64_t mp,
                                 int64_t kp) {
  const int64_t n = batches * rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / (rows * cols);
    const int64_t rc = i - b * rows * cols;
    const int64_t r = rc / cols, c = rc - r * cols;
    out[i] = in[b * mp * kp + swizzle_offset(r, c, kp)];
  }
}

// The scale argument of both ops: any 1-byte dtype (dtype.itemsize == 1), 2-D or 3-D.
void check_byte_scales(const char* op, const char* name, const Tensor& t, const char* layout) {
  NVFP4_CHECK(is_one_byte_dtype(t.scalar_type()), op, ": ", name,
              " must have a 1-byte dtype (element_size() == 1: uint8, int8, float8_e4m3fn, "
              "float8_e8m0fnu, ...), got ",
              dtype_name(t.scalar_type()));
  check_dim_2_or_3(op, name, t, layout);
}

Tensor swizzle_scales_cuda(Tensor scales) {
  const char* op = "nvfp4.swizzle_scales";
  check_byte_scales(op, "scales", scales, "[M, Kb] or [B, M, Kb]");
  torch::stable::accelerator::DeviceGuard guard(scales.get_device_index());
  Tensor in = torch::stable::contiguous(scales);
  const int64_t batches = in.dim() == 3 ? in.size(0) : 1;
  const int64_t m = in.size(-2), kb = in.size(-1);
  const int64_t mp = round_up(m, 128), kp = round_up(kb, 4);
  Tensor out = empty_like_shape(in, with_batch(in, {mp, kp}), in.scalar_type());
  const int64_t words = batches * mp * kp / 4;
  if (words == 0) return out;
  swizzle_kernel<<<grid_for(words, 256), 256, 0, current_stream(in)>>>(
      static_cast<const uint8_t*>(in.const_data_ptr()),
      static_cast<uint32_t*>(out.mutable_data_ptr()), batches, m, kb, mp, kp);
  check_launch(op);
  return out;
}

Tensor unswizzle_scales_cuda(Tensor swizzled, int64_t rows, int64_t cols) {
  const char* op = "nvfp4.unswizzle_scales";
  check_byte_scales(op, "swizzled", swizzled, "[Mp, Kp] or [B, Mp, Kp]");
  NVFP4_CHECK(rows >= 0 && cols >= 0, op, ": rows and cols must be >= 0, got rows=", rows,
              ", cols=", cols);
  const int64_t mp = round_up(rows, 128), kp = round_up(cols, 4);
  NVFP4_CHECK(swizzled.size(-2) == mp && swizzled.size(-1) == kp, op,
              ": swizzled must have shape [..., roundup(rows, 128), roundup(cols, 4)] = [..., ",
              mp, ", ", kp, "] for rows=", rows, ", cols=", cols, ", got ", shape_str(swizzled));
  torch::stable::accelerator::DeviceGuard guard(swizzled.get_device_index());
  Tensor in = torch::stable::contiguous(swizzled);
  const int64_t batches = in.dim() == 3 ? in.size(0) : 1;
  Tensor out = empty_like_shape(in, with_batch(in, {rows, cols}), in.scalar_type());
  const int64_t n = batches * rows * cols;
  if (n == 0) return out;
  unswizzle_kernel<<<grid_for(n, 256), 256, 0, current_stream(in)>>>(
      static_cast<const uint8_t*>(in.const_data_ptr()),
      static_cast<uint8_t*>(out.mutable_data_ptr()), batches, rows, cols, mp, kp);
  check_launch(op);
  return out;
}

}  // namespace
}  // namespace nvfp4

STABLE_TORCH_LIBRARY_IMPL(nvfp4, CUDA, m) {
  m.impl("swizzle_scales", TORCH_BOX(&nvfp4::swizzle_scales_cuda));
  m.impl("unswizzle_scales", TORCH_BOX(&nvfp4::unswizzle_scales_cuda));
}
