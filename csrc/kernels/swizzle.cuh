// The 128x4 block-scale layout of cuBLAS / CUTLASS block-scaled GEMMs (SPEC.md sec. 4).
// Torch-free; usable from host and device code.
#pragma once

#include <cstdint>

namespace nvfp4 {

// Byte offset of S[r][c] in the swizzled copy of an [M, Kb] scale matrix whose
// columns are padded to kp = roundup(Kb, 4) (rows to a multiple of 128).
// A 512-byte tile holds 128 rows x 4 columns: row r sits at (r % 32) * 16 + (r % 128 / 32) * 4,
// so the 4 scales a GEMM warp needs for 4 row-groups are adjacent.
__host__ __device__ __forceinline__ int64_t swizzle_offset(int64_t r, int64_t c, int64_t kp) {
  return ((r >> 7) * (kp >> 2) + (c >> 2)) * 512 + (r & 31) * 16 + ((r & 127) >> 5) * 4 + (c & 3);
}

}  // namespace nvfp4
