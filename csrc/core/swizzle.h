// The 128x4 block-scale layout of cuBLAS / CUTLASS block-scaled GEMMs (docs/spec.md sec. 4).
// Torch-free; host and device code.
#pragma once

#include "core/bits.h"

namespace nvfp4 {

// Byte offset of S[r][c] in the swizzled copy of an [M, Kb] scale matrix whose columns are
// padded to kp = roundup(Kb, 4) (rows to a multiple of 128). A 512-byte tile holds 128 rows
// x 4 columns: row r sits at (r % 32) * 16 + (r % 128 / 32) * 4, so the 4 scales a GEMM warp
// needs for 4 row-groups are adjacent. I: int64_t, or uint32_t where everything fits 31 bits.
template <typename I>
NVFP4_HD I swizzle_offset_t(I r, I c, I kp) {
  return ((r >> 7) * (kp >> 2) + (c >> 2)) * 512 + (r & 31) * 16 + ((r & 127) >> 5) * 4 + (c & 3);
}
NVFP4_HD int64_t swizzle_offset(int64_t r, int64_t c, int64_t kp) {
  return swizzle_offset_t<int64_t>(r, c, kp);
}
NVFP4_HD uint32_t swizzle_offset32(uint32_t r, uint32_t c, uint32_t kp) {
  return swizzle_offset_t<uint32_t>(r, c, kp);
}

// Rows rows..mp-1 of every batch of [batches, mp, kp] swizzled scales are all padding: zero
// them a 4-byte word at a time (the 4 columns of one row within a 128x4 tile are adjacent).
// Words start, start + stride, ... of the batches * (mp - rows) * kp / 4 (a grid-stride loop).
// I: int64_t, or uint32_t where batches * mp * kp < 2^31 (cheaper index math).
template <typename I>
NVFP4_HD void zero_swizzled_row_padding(uint8_t* scales, I batches, I rows, I mp, I kp, I start,
                                        I stride) {
  const I words_per_row = kp / 4;
  const I per_batch = (mp - rows) * words_per_row;
  const I n = batches * per_batch;
  for (I w = start; w < n; w += stride) {
    const I b = w / per_batch;
    const I rem = w - b * per_batch;
    const I dr = rem / words_per_row;
    const I c = (rem - dr * words_per_row) * 4;
    *reinterpret_cast<uint32_t*>(scales + int64_t(b) * int64_t(mp) * int64_t(kp) +
                                 swizzle_offset(int64_t(rows + dr), int64_t(c), int64_t(kp))) = 0u;
  }
}

}  // namespace nvfp4
