// Launchers of the fused scale-search kernels (SPEC.md sec. 5): quantize with scale_method
// "mse" / "hessian" (NVFP4) and mx_quantize with scale_method "mse" hand their validated
// arguments here (ops/launch.h). The search itself, its bounds and the kernels are in
// kernels/search.cuh; the proofs of the bounds in docs/search.md.

#include <algorithm>
#include <atomic>

#include "kernels/search.cuh"
#include "ops/common.h"
#include "ops/launch.h"

namespace nvfp4 {
namespace {

int sm_count_cached() {
  static std::atomic<int> cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
    cudaGetLastError();
    dev = 0;
  }
  int n = cache[dev].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) {
      cudaGetLastError();  // a plain default is fine for a grid size
      n = 132;
    }
    cache[dev].store(n, std::memory_order_relaxed);
  }
  return n;
}

// CTAs that fit on the device at once for `kernel` (kThreads per CTA): the grid-stride
// search kernels launch no more (a partial second wave would idle most SMs at the end; the
// per-block work varies, and many blocks per thread even it out).
template <typename K>
int64_t resident_ctas(K kernel) {
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, search::kThreads, 0) !=
          cudaSuccess ||
      per_sm <= 0) {
    cudaGetLastError();
    per_sm = 4;
  }
  return static_cast<int64_t>(per_sm) * sm_count_cached();
}

unsigned ctas_for(int64_t items, int64_t per_cta_items, int64_t cap) {
  const int64_t want = ceil_div(std::max<int64_t>(items, 1), per_cta_items);
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap)));
}

template <typename F>
void dispatch_dtype(InDtype t, F&& f) {
  switch (t) {
    case InDtype::kFloat32: f(float{}); break;
    case InDtype::kFloat16: f(__half{}); break;
    default: f(__nv_bfloat16{}); break;
  }
}

}  // namespace

void launch_nvfp4_search(const Nvfp4QuantArgs& a, ScaleMethod method, const float* hessian,
                         cudaStream_t stream) {
  using search::kThreads;
  search::Nvfp4SearchParams p{};
  p.x = a.x;
  p.packed = a.packed;
  p.scales = a.scales;
  p.gs = a.global_scale;
  p.hessian = hessian;
  p.batches = a.batches;
  p.rows = a.rows;
  p.kb = a.k / 16;
  p.mp = round_up(a.rows, 128);
  p.kp = round_up(p.kb, 4);
  p.per_batch = a.rows * p.kb;
  p.row_tiles = ceil_div(a.rows, kThreads);
  p.gs_per_batch = a.gs_per_batch;
  if (p.batches * p.per_batch == 0) return;  // no blocks, hence no padding either

  auto go = [&](auto kernel) {
    const int64_t cap = resident_ctas(kernel);
    dim3 grid;
    if (method == ScaleMethod::kHessian) {
      // grid.x: column groups, grid.z: batches, grid.y: splits of the row tiles, about
      // `cap` CTAs in all when that many fit (each CTA sets up its group's bounds once).
      const int64_t gx = std::min<int64_t>(p.kb, 0x7FFFFFFF);
      const int64_t gz = std::min<int64_t>(p.batches, 65535);
      const int64_t gy = std::max<int64_t>(
          1, std::min<int64_t>({ceil_div(cap, gx * gz), p.row_tiles, 65535}));
      grid = dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(gz));
    } else {
      // "mse": grid.y walks the batches when each has its own global scale.
      const int64_t gy = p.gs_per_batch ? std::min<int64_t>(p.batches, 65535) : 1;
      const int64_t per_group = p.gs_per_batch ? p.per_batch : p.batches * p.per_batch;
      grid = dim3(ctas_for(per_group, kThreads, std::max<int64_t>(1, cap / gy)),
                  static_cast<unsigned>(gy));
    }
    kernel<<<grid, kThreads, 0, stream>>>(p);
  };
  dispatch_dtype(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (method == ScaleMethod::kHessian) {
      if (a.swizzle) {
        go(search::nvfp4_hessian_search_kernel<T, true>);
      } else {
        go(search::nvfp4_hessian_search_kernel<T, false>);
      }
    } else if (a.swizzle) {
      go(search::nvfp4_mse_search_kernel<T, true>);
    } else {
      go(search::nvfp4_mse_search_kernel<T, false>);
    }
  });
}

void launch_mx_search(const MxQuantArgs& a, cudaStream_t stream) {
  using search::kThreads;
  search::MxSearchParams p{};
  p.x = a.x;
  p.data = a.data;
  p.scales = a.scales;
  p.batches = a.batches;
  p.rows = a.rows;
  p.kb = a.k / 32;
  p.mp = round_up(a.rows, 128);
  p.kp = round_up(p.kb, 4);
  p.n_blocks = a.batches * a.rows * p.kb;
  if (p.n_blocks == 0) return;
  auto go = [&](auto tag, auto e2m1, auto rnd, auto swz) {
    using T = decltype(tag);
    const auto kernel = search::mx_mse_search_kernel<T, decltype(e2m1)::value,
                                                     decltype(rnd)::value, decltype(swz)::value>;
    const unsigned grid = ctas_for(p.n_blocks, kThreads, resident_ctas(kernel));
    kernel<<<grid, kThreads, 0, stream>>>(p);
  };
  using RC = std::integral_constant<MxRounding, MxRounding::kRceil>;
  using RF = std::integral_constant<MxRounding, MxRounding::kFloor>;
  dispatch_dtype(a.dtype, [&](auto tag) {
    auto by_rounding = [&](auto e2m1) {
      auto by_swizzle = [&](auto rnd) {
        if (a.swizzle) {
          go(tag, e2m1, rnd, std::true_type{});
        } else {
          go(tag, e2m1, rnd, std::false_type{});
        }
      };
      if (a.floor) {
        by_swizzle(RF{});
      } else {
        by_swizzle(RC{});
      }
    };
    if (a.e2m1) {
      by_rounding(std::true_type{});
    } else {
      by_rounding(std::false_type{});
    }
  });
}

}  // namespace nvfp4
