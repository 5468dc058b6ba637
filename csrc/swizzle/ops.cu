// swizzle_scales / unswizzle_scales: linear [.., M, Kb] block scales <-> the 128x4 layout
// (docs/spec.md sec. 4). Any 1-byte dtype (uint8, int8, bool, every float8, float4_e2m1fn_x2, ...),
// as on CPU and under FakeTensor: the bytes are moved as they are.

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "torch_utils.h"

namespace nvfp4 {
namespace {

// Both directions move 512-byte tiles (128 rows x 4 columns, docs/spec.md sec. 4) as a pure
// copy: a CTA takes kT consecutive tiles of one row of tiles of one batch (rows 128 tr ..
// 128 tr + 127, columns 4 tc0 .. 4 (tc0 + kT) - 1, which are contiguous kT * 512 bytes of the
// swizzled layout) through a shared-memory patch of 128 rows x 4 kT bytes. The linear side
// moves in kVec-byte pieces of rows (16, or 4 / 1 when the row length or the pointer does not
// allow 16), the swizzled side in 16-byte lines: line l of a tile holds the 4 bytes of each of
// the rows l, l + 32, l + 64, l + 96. Both are coalesced; the patch's row pitch of kT + 1
// words makes the line reads (and writes) conflict-free. Index math: shifts and one
// multiply-add per access (the CTA's tile comes from the grid), no division.
struct SwizzleGeom {
  int64_t batches, m, kb;  // linear [batches, m, kb]
  int64_t tiles_r, tiles_c;  // swizzled [batches, 128 tiles_r, 4 tiles_c]
};

// Threads of a CTA that moves kT tiles.
constexpr int swizzle_threads(int kT) { return kT >= 32 ? 256 : 32 * kT; }

template <int kT, int kVec, bool kUnswizzle>
__global__ void __launch_bounds__(swizzle_threads(kT))
    swizzle_tiles_kernel(const uint8_t* __restrict__ in, uint8_t* __restrict__ out,
                         const SwizzleGeom g) {
  static_assert(kVec == 16 || kVec == 4 || kVec == 1, "pieces of 16, 4 or 1 bytes");
  static_assert(kVec <= 4 * kT, "a piece within a patch row");
  constexpr int kPitch = kT + 1;            // words per patch row
  constexpr int kRowPieces = 4 * kT / kVec;  // pieces per patch row (a power of two)
  __shared__ uint32_t patch[128 * kPitch];
  uint8_t* const patch_b = reinterpret_cast<uint8_t*>(patch);
  const int64_t tc0 = int64_t(blockIdx.x) * kT;
  const int nt = static_cast<int>(g.tiles_c - tc0 < kT ? g.tiles_c - tc0 : kT);
  const int64_t col0 = tc0 * 4;
  for (int64_t b = blockIdx.z; b < g.batches; b += gridDim.z) {
    for (int64_t tr = blockIdx.y; tr < g.tiles_r; tr += gridDim.y) {
      const int64_t row0 = tr * 128;
      // The CTA's tiles: 16-byte lines line0 .. line0 + 32 nt - 1 of the swizzled tensor.
      const int64_t line0 = ((b * g.tiles_r + tr) * g.tiles_c + tc0) * 32;
      const uint8_t* lin_in = in + (b * g.m + row0) * g.kb + col0;  // swizzle: row row0
      uint8_t* lin_out = out + (b * g.m + row0) * g.kb + col0;      // unswizzle
      if constexpr (kUnswizzle) {
        for (int i = threadIdx.x; i < 32 * nt; i += blockDim.x) {
          const int t = i >> 5, l = i & 31;
          const uint4 v = __ldcs(reinterpret_cast<const uint4*>(in) + line0 + i);
          patch[l * kPitch + t] = v.x;
          patch[(l + 32) * kPitch + t] = v.y;
          patch[(l + 64) * kPitch + t] = v.z;
          patch[(l + 96) * kPitch + t] = v.w;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < 128 * kRowPieces; i += blockDim.x) {
          const int r = i / kRowPieces, x = i % kRowPieces;
          if (row0 + r >= g.m || col0 + x * kVec >= g.kb) continue;  // padding
          uint8_t* dst = lin_out + int64_t(r) * g.kb + x * kVec;
          const uint32_t* src = patch + r * kPitch + x * (kVec / 4);
          if constexpr (kVec == 16) {
            __stcs(reinterpret_cast<uint4*>(dst), make_uint4(src[0], src[1], src[2], src[3]));
          } else if constexpr (kVec == 4) {
            *reinterpret_cast<uint32_t*>(dst) = src[0];
          } else {
            *dst = patch_b[r * kPitch * 4 + x];
          }
        }
      } else {
        for (int i = threadIdx.x; i < 128 * kRowPieces; i += blockDim.x) {
          const int r = i / kRowPieces, x = i % kRowPieces;
          const bool ok = row0 + r < g.m && col0 + x * kVec < g.kb;  // else padding: 0
          const uint8_t* src = lin_in + int64_t(r) * g.kb + x * kVec;
          uint32_t* dst = patch + r * kPitch + x * (kVec / 4);
          if constexpr (kVec == 16) {
            const uint4 v =
                ok ? __ldcs(reinterpret_cast<const uint4*>(src)) : make_uint4(0u, 0u, 0u, 0u);
            dst[0] = v.x;
            dst[1] = v.y;
            dst[2] = v.z;
            dst[3] = v.w;
          } else if constexpr (kVec == 4) {
            dst[0] = ok ? __ldcs(reinterpret_cast<const unsigned int*>(src)) : 0u;
          } else {
            patch_b[r * kPitch * 4 + x] = ok ? *src : uint8_t(0);
          }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < 32 * nt; i += blockDim.x) {
          const int t = i >> 5, l = i & 31;
          __stcs(reinterpret_cast<uint4*>(out) + line0 + i,
                 make_uint4(patch[l * kPitch + t], patch[(l + 32) * kPitch + t],
                            patch[(l + 64) * kPitch + t], patch[(l + 96) * kPitch + t]));
        }
      }
      __syncthreads();  // the patch is free for the next row of tiles
    }
  }
}

// Launches the tile kernel: kT = 32 tiles per CTA when a row of tiles has that many, else 4;
// the widest pieces that the linear side's row length (bytes) and address allow.
template <bool kUnswizzle>
void launch_swizzle(const uint8_t* in, uint8_t* out, const SwizzleGeom& g, const void* linear,
                    cudaStream_t stream) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(linear);
  const int vec = (g.kb % 16 == 0 && addr % 16 == 0)  ? 16
                  : (g.kb % 4 == 0 && addr % 4 == 0) ? 4
                                                     : 1;
  auto go = [&](auto kt, auto kvec) {
    constexpr int kT = decltype(kt)::value, kVec = decltype(kvec)::value;
    const dim3 grid(static_cast<unsigned>(ceil_div(g.tiles_c, kT)),
                    static_cast<unsigned>(std::min<int64_t>(g.tiles_r, 65535)),
                    static_cast<unsigned>(std::min<int64_t>(g.batches, 65535)));
    swizzle_tiles_kernel<kT, kVec, kUnswizzle>
        <<<grid, swizzle_threads(kT), 0, stream>>>(in, out, g);
  };
  auto with_vec = [&](auto kt) {
    if (vec == 16) {
      go(kt, std::integral_constant<int, 16>{});
    } else if (vec == 4) {
      go(kt, std::integral_constant<int, 4>{});
    } else {
      go(kt, std::integral_constant<int, 1>{});
    }
  };
  if (g.tiles_c >= 32) {
    with_vec(std::integral_constant<int, 32>{});
  } else {
    with_vec(std::integral_constant<int, 4>{});
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
  if (batches * mp * kp == 0) return out;
  const SwizzleGeom g{batches, m, kb, mp / 128, kp / 4};
  launch_swizzle<false>(static_cast<const uint8_t*>(in.const_data_ptr()),
                        static_cast<uint8_t*>(out.mutable_data_ptr()), g, in.const_data_ptr(),
                        current_stream(in));
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
  Tensor in = contiguous_aligned(swizzled);  // 16-byte lines
  const int64_t batches = in.dim() == 3 ? in.size(0) : 1;
  Tensor out = empty_like_shape(in, with_batch(in, {rows, cols}), in.scalar_type());
  if (batches * rows * cols == 0) return out;
  const SwizzleGeom g{batches, rows, cols, mp / 128, kp / 4};
  launch_swizzle<true>(static_cast<const uint8_t*>(in.const_data_ptr()),
                       static_cast<uint8_t*>(out.mutable_data_ptr()), g, out.const_data_ptr(),
                       current_stream(in));
  check_launch(op);
  return out;
}

}  // namespace
}  // namespace nvfp4

STABLE_TORCH_LIBRARY_IMPL(nvfp4, CUDA, m) {
  m.impl("swizzle_scales", TORCH_BOX(&nvfp4::swizzle_scales_cuda));
  m.impl("unswizzle_scales", TORCH_BOX(&nvfp4::unswizzle_scales_cuda));
}
