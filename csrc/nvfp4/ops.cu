// NVFP4 codecs on CUDA: quantize (scale_method "amax", "4over6", "mse", "hessian"),
// dequantize, quant_dequant ("amax", "4over6"), global_scale. Numerics: docs/spec.md sec. 2,
// 4, 5, bit for bit with nvfp4_ops/reference. Kernels: nvfp4/quantize.cuh and
// nvfp4/search.cuh. Argument errors use the reference's messages (torch_utils.h).

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "nvfp4/ops.h"
#include "nvfp4/quantize.cuh"
#include "nvfp4/search.cuh"
#include "torch_utils.h"

namespace nvfp4 {
namespace {

using namespace quant;  // nvfp4/quantize.cuh

constexpr int kMaxThreads = 256;

enum class ScaleMethod : int { kAmax = 0, kMse = 1, kHessian = 2, kFourSix = 3 };

// check_quantize_args of the reference, in its order (quant_dequant: scale_method "amax"
// or "4over6", no hessian).
ScaleMethod check_quantize_args(const char* op, const Tensor& x, const Tensor& gs,
                                const std::string& scale_method,
                                const std::optional<Tensor>& hessian) {
  check_float_dtype(op, "x", x);
  check_dim_2_or_3(op, "x", x);
  check_multiple(op, "K (the last dim)", x.size(-1), 16);
  check_global_scale(op, gs, x.dim() == 3 ? x.size(0) : -1);
  if (std::string(op) == "nvfp4.quant_dequant") {
    check_choice(op, "scale_method", scale_method, {"amax", "4over6"});
  } else {
    check_choice(op, "scale_method", scale_method, {"amax", "mse", "hessian", "4over6"});
  }
  const ScaleMethod method = scale_method == "amax"    ? ScaleMethod::kAmax
                             : scale_method == "mse"   ? ScaleMethod::kMse
                             : scale_method == "4over6" ? ScaleMethod::kFourSix
                                                        : ScaleMethod::kHessian;
  const int64_t groups = x.size(-1) / 16;
  const std::string want =
      "[K/16, 16, 16] = [" + std::to_string(groups) + ", 16, 16]";
  if (method == ScaleMethod::kHessian) {
    NVFP4_CHECK(hessian.has_value(), op,
                ": scale_method='hessian' needs a hessian, float32 of shape ", want, ", got None");
    const Tensor& h = *hessian;
    const bool f32 = h.scalar_type() == ScalarType::Float;
    const bool shape_ok = h.dim() == 3 && h.size(0) == groups && h.size(1) == 16 && h.size(2) == 16;
    NVFP4_CHECK(f32 && shape_ok, op, ": hessian must be float32 of shape ", want, ", got ",
                shape_str(h), f32 ? "" : " of dtype ", f32 ? "" : dtype_name(h.scalar_type()));
  } else {
    NVFP4_CHECK(!hessian.has_value(), op,
                ": a hessian is only used with scale_method='hessian', got scale_method=",
                py_repr(scale_method));
  }
  if (hessian.has_value()) {
    check_one_device(op, {{"x", &x}, {"global_scale", &gs}, {"hessian", &*hessian}});
  } else {
    check_one_device(op, {{"x", &x}, {"global_scale", &gs}});
  }
  return method;
}

// Sets *flag (zeroed before) when any of the n floats is NaN or inf.
__global__ void nonfinite_flag_kernel(const float* __restrict__ x, int64_t n,
                                      unsigned* __restrict__ flag) {
  bool bad = false;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    bad = bad || abs_bits(x[i]) >= kInfBits;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1u;
}

// The value check of the reference after the metadata checks: a hessian holding NaN or
// inf is an error (the search would otherwise run exhaustively on NaN objectives and
// return meaningless bytes). One small reduction and one 4-byte copy to the host (which
// synchronizes the stream). Skipped while the stream is capturing a CUDA graph: the copy
// and the synchronization are not allowed inside a capture, and a check recorded into
// the graph could not raise at replay anyway.
void check_hessian_finite(const char* op, const Tensor& h, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  NVFP4_CHECK(cudaStreamIsCapturing(stream, &capture) == cudaSuccess, op,
              ": cudaStreamIsCapturing failed: ", cudaGetErrorString(cudaGetLastError()));
  if (capture != cudaStreamCaptureStatusNone || h.numel() == 0) return;
  Tensor flag = empty_like_shape(h, {1}, ScalarType::Int);
  unsigned* f = static_cast<unsigned*>(flag.mutable_data_ptr());
  NVFP4_CHECK(cudaMemsetAsync(f, 0, sizeof(unsigned), stream) == cudaSuccess, op,
              ": cudaMemsetAsync failed: ", cudaGetErrorString(cudaGetLastError()));
  nonfinite_flag_kernel<<<grid_for(h.numel(), 256, 64), 256, 0, stream>>>(
      static_cast<const float*>(h.const_data_ptr()), h.numel(), f);
  check_launch(op);
  unsigned host = 0;
  NVFP4_CHECK(cudaMemcpyAsync(&host, f, sizeof(unsigned), cudaMemcpyDeviceToHost, stream) ==
                      cudaSuccess &&
                  cudaStreamSynchronize(stream) == cudaSuccess,
              op, ": reading the hessian check failed: ", cudaGetErrorString(cudaGetLastError()));
  NVFP4_CHECK(host == 0u, op, ": hessian must be finite, got NaN or inf");
}

Nvfp4Geometry make_geometry(int64_t batches, int64_t rows, int64_t k) {
  Nvfp4Geometry g;
  g.batches = batches;
  g.rows = rows;
  g.kb = k / 16;
  g.mp = round_up(rows, 128);
  g.kp = round_up(g.kb, 4);
  g.n_blocks = batches * rows * g.kb;
  constexpr int64_t kLim = int64_t(1) << 31;
  g.idx32 = g.n_blocks < kLim && batches * g.mp * g.kp < kLim && rows < kLim && g.kb < kLim;
  if (g.idx32 && g.kb > 0 && rows > 0) {
    g.div_kb = FastDiv::make(static_cast<uint32_t>(g.kb));
    g.div_rows = FastDiv::make(static_cast<uint32_t>(rows));
  }
  return g;
}

// Threads per CTA and CTAs for n_chunks 16-byte chunks, kChunksPerThread per thread per tile:
// 256 threads unless that leaves fewer than two tiles per SM (small tensors), then down to
// 64; at most 4096 threads' worth of CTAs per SM (a few waves), each looping over tiles, so
// the per-CTA prologue is paid a few times per SM rather than once per tile.
struct LaunchShape {
  unsigned blocks;
  int threads;
};
LaunchShape launch_shape(int64_t n_chunks, int device) {
  const int64_t sms = sm_count(device);
  const int64_t per = kChunksPerThread;
  int threads = kMaxThreads;
  while (threads > 64 && ceil_div(n_chunks, threads * per) < 2 * sms) threads /= 2;
  const int64_t tiles = ceil_div(n_chunks, threads * per);
  const int64_t cap = sms * (4096 / threads);
  return {static_cast<unsigned>(std::max<int64_t>(1, std::min(tiles, cap))), threads};
}

template <typename T, bool kSwizzle, bool kQdq, bool kFourSix>
void launch_quantize_t(const QuantParams& p, int kg, int device, cudaStream_t stream) {
  const LaunchShape ls = launch_shape(p.g.n_blocks * kg, device);
  // (the padding rows of the swizzled scales are zeroed by a grid-stride loop: any grid)
  nvfp4_quantize_kernel<T, kSwizzle, kQdq, kFourSix><<<ls.blocks, ls.threads, 0, stream>>>(p);
}

// The amax / "4over6" quantize (kQdq = false) or quant_dequant (kQdq = true) kernels.
template <bool kSwizzle, bool kQdq>
void launch_quantize(const QuantParams& p, bool four_six, ScalarType dtype, int device,
                     cudaStream_t stream) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kg = 16 / Elem<T>::kPerVec;
    if (four_six) {
      launch_quantize_t<T, kSwizzle, kQdq, true>(p, kg, device, stream);
    } else {
      launch_quantize_t<T, kSwizzle, kQdq, false>(p, kg, device, stream);
    }
  });
}

// The fused search + quantize kernels (scale_method "mse" / "hessian"; nvfp4/search.cuh).
// "hessian": p.bounds must hold room for p.kb groups (filled here, before the search).
void launch_search(const search::Nvfp4SearchParams& p, ScaleMethod method, bool swizzle,
                   ScalarType dtype, cudaStream_t stream) {
  using search::kThreads;
  if (p.batches * p.per_batch == 0) return;  // no blocks, hence no padding either
  if (method == ScaleMethod::kHessian) {
    search::nvfp4_hessian_bounds_kernel<<<grid_for(p.kb, 1, 65535), 32, 0, stream>>>(
        p.hessian, p.bounds, p.kb);
  }
  auto go = [&](auto kernel) {
    // The search kernels launch no more CTAs than fit at once (a partial second wave would
    // idle most SMs at the end; the per-block work varies, and many blocks per thread even
    // it out); each CTA takes a contiguous run of tiles of all batches.
    const int64_t cap = resident_ctas(kernel, kThreads);
    dim3 grid;
    if (method == ScaleMethod::kHessian) {
      // grid.x: column groups, grid.y: runs of the tiles of rows of all batches, about
      // `cap` CTAs in all when that many fit.
      const int64_t gx = std::min<int64_t>(p.kb, 0x7FFFFFFF);
      const int64_t gy =
          std::max<int64_t>(1, std::min<int64_t>({ceil_div(cap, gx), p.row_tiles, 65535}));
      grid = dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
    } else {
      grid = dim3(grid_for(p.batches * p.per_batch, kThreads, cap));
    }
    kernel<<<grid, kThreads, 0, stream>>>(p);
  };
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (method == ScaleMethod::kHessian) {
      if (swizzle) {
        go(search::nvfp4_hessian_search_kernel<T, true>);
      } else {
        go(search::nvfp4_hessian_search_kernel<T, false>);
      }
    } else if (p.gs_per_batch) {
      if (swizzle) {
        go(search::nvfp4_mse_search_kernel<T, true, true>);
      } else {
        go(search::nvfp4_mse_search_kernel<T, false, true>);
      }
    } else if (swizzle) {
      go(search::nvfp4_mse_search_kernel<T, true, false>);
    } else {
      go(search::nvfp4_mse_search_kernel<T, false, false>);
    }
  });
}

std::tuple<Tensor, Tensor> quantize_cuda(Tensor x, Tensor global_scale, bool swizzle,
                                         std::string scale_method,
                                         std::optional<Tensor> hessian) {
  const char* op = "nvfp4.quantize";
  const ScaleMethod method = check_quantize_args(op, x, global_scale, scale_method, hessian);
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor xc = contiguous_aligned(x);
  const Tensor gs = torch::stable::contiguous(global_scale);
  std::optional<Tensor> h;
  if (hessian.has_value()) {
    h = torch::stable::contiguous(*hessian);
    check_hessian_finite(op, *h, current_stream(xc));
  }
  const int64_t batches = x.dim() == 3 ? x.size(0) : 1;
  const int64_t rows = x.size(-2), k = x.size(-1);
  const Nvfp4Geometry g = make_geometry(batches, rows, k);

  Tensor packed = empty_like_shape(xc, with_batch(x, {rows, k / 2}), ScalarType::Byte);
  const std::vector<int64_t> sdims =
      swizzle ? std::vector<int64_t>{g.mp, g.kp} : std::vector<int64_t>{rows, g.kb};
  Tensor scales = empty_like_shape(xc, with_batch(x, sdims), ScalarType::Float8_e4m3fn);
  if (scales.numel() == 0) return {packed, scales};  // no blocks and no padding

  const cudaStream_t stream = current_stream(xc);
  const bool per_batch = gs.numel() != 1;
  if (method == ScaleMethod::kMse || method == ScaleMethod::kHessian) {
    search::Nvfp4SearchParams sp{};
    sp.x = xc.const_data_ptr();
    sp.packed = static_cast<uint8_t*>(packed.mutable_data_ptr());
    sp.scales = static_cast<uint8_t*>(scales.mutable_data_ptr());
    sp.gs = static_cast<const float*>(gs.const_data_ptr());
    sp.hessian = h.has_value() ? static_cast<const float*>(h->const_data_ptr()) : nullptr;
    sp.batches = batches;
    sp.rows = rows;
    sp.kb = g.kb;
    sp.mp = g.mp;
    sp.kp = g.kp;
    sp.per_batch = rows * g.kb;
    sp.row_tiles = ceil_div(batches * rows, search::kThreads);
    sp.gs_per_batch = per_batch;
    std::optional<Tensor> bounds;  // "hessian": the per-group bounds, computed once
    if (method == ScaleMethod::kHessian) {
      bounds = empty_like_shape(
          xc, {std::max<int64_t>(g.kb, 1) * int64_t(sizeof(search::HessBounds))},
          ScalarType::Byte);
      sp.bounds = static_cast<search::HessBounds*>(bounds->mutable_data_ptr());
    }
    launch_search(sp, method, swizzle, xc.scalar_type(), stream);
    check_launch(op);
    return {packed, scales};
  }

  QuantParams p{};
  p.x = xc.const_data_ptr();
  p.packed = static_cast<uint8_t*>(packed.mutable_data_ptr());
  p.out = nullptr;
  p.scales = static_cast<uint8_t*>(scales.mutable_data_ptr());
  p.gs = static_cast<const float*>(gs.const_data_ptr());
  p.gs_per_batch = per_batch;
  p.g = g;
  const int device = xc.get_device_index();
  const bool four_six = method == ScaleMethod::kFourSix;
  if (swizzle) {
    launch_quantize<true, false>(p, four_six, xc.scalar_type(), device, stream);
  } else {
    launch_quantize<false, false>(p, four_six, xc.scalar_type(), device, stream);
  }
  check_launch(op);
  return {packed, scales};
}

Tensor quant_dequant_cuda(Tensor x, Tensor global_scale, std::string scale_method) {
  const char* op = "nvfp4.quant_dequant";
  const ScaleMethod method = check_quantize_args(op, x, global_scale, scale_method, std::nullopt);
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor xc = contiguous_aligned(x);
  const Tensor gs = torch::stable::contiguous(global_scale);
  const int64_t batches = x.dim() == 3 ? x.size(0) : 1;
  const int64_t rows = x.size(-2), k = x.size(-1);
  Tensor out = empty_like_shape(xc, with_batch(x, {rows, k}), xc.scalar_type());
  if (out.numel() == 0) return out;
  QuantParams p{};
  p.x = xc.const_data_ptr();
  p.out = out.mutable_data_ptr();
  p.gs = static_cast<const float*>(gs.const_data_ptr());
  p.gs_per_batch = gs.numel() != 1;
  p.g = make_geometry(batches, rows, k);
  launch_quantize<false, true>(p, method == ScaleMethod::kFourSix, xc.scalar_type(),
                               xc.get_device_index(), current_stream(xc));
  check_launch(op);
  return out;
}

template <typename OutT, bool kSwizzle>
void launch_dequantize_t(const DequantParams& p, int device, cudaStream_t stream) {
  constexpr int kg = 16 / Elem<OutT>::kPerVec;
  const LaunchShape ls = launch_shape(p.g.n_blocks * kg, device);
  nvfp4_dequantize_kernel<OutT, kSwizzle><<<ls.blocks, ls.threads, 0, stream>>>(p);
}

template <bool kSwizzle>
void launch_dequantize(const DequantParams& p, ScalarType out_dtype, int device,
                       cudaStream_t stream) {
  dispatch_float(out_dtype, [&](auto tag) {
    launch_dequantize_t<decltype(tag), kSwizzle>(p, device, stream);
  });
}

Tensor dequantize_cuda(Tensor packed, Tensor scales, Tensor global_scale, ScalarType out_dtype,
                       bool swizzled) {
  const char* op = "nvfp4.dequantize";
  NVFP4_CHECK(packed.scalar_type() == ScalarType::Byte, op,
              ": packed must be uint8 (two E2M1 codes per byte), got ",
              dtype_name(packed.scalar_type()));
  check_dim_2_or_3(op, "packed", packed, "[M, K/2] or [B, M, K/2]");
  check_multiple(op, "the last dim of packed (K/2)", packed.size(-1), 8);
  NVFP4_CHECK(scales.scalar_type() == ScalarType::Float8_e4m3fn, op,
              ": scales must be torch.float8_e4m3fn, got ", dtype_name(scales.scalar_type()));
  const int64_t batches = packed.dim() == 3 ? packed.size(0) : 1;
  const int64_t rows = packed.size(-2), k = packed.size(-1) * 2;
  const Nvfp4Geometry g = make_geometry(batches, rows, k);
  check_scales_shape(op, scales,
                     with_batch(packed, swizzled ? std::vector<int64_t>{g.mp, g.kp}
                                                 : std::vector<int64_t>{rows, g.kb}),
                     swizzled, "K/16");
  check_global_scale(op, global_scale, packed.dim() == 3 ? batches : -1);
  check_out_dtype(op, out_dtype);
  check_one_device(op, {{"packed", &packed}, {"scales", &scales}, {"global_scale", &global_scale}});

  torch::stable::accelerator::DeviceGuard guard(packed.get_device_index());
  const Tensor pc = contiguous_aligned(packed);
  const Tensor sc = torch::stable::contiguous(scales);
  const Tensor gs = torch::stable::contiguous(global_scale);
  Tensor out = empty_like_shape(pc, with_batch(packed, {rows, k}), out_dtype);
  if (out.numel() == 0) return out;
  DequantParams p{};
  p.packed = static_cast<const uint8_t*>(pc.const_data_ptr());
  p.scales = static_cast<const uint8_t*>(sc.const_data_ptr());
  p.gs = static_cast<const float*>(gs.const_data_ptr());
  p.gs_per_batch = gs.numel() != 1;
  p.out = out.mutable_data_ptr();
  p.g = g;
  const int device = pc.get_device_index();
  const cudaStream_t stream = current_stream(pc);
  if (swizzled) {
    launch_dequantize<true>(p, out_dtype, device, stream);
  } else {
    launch_dequantize<false>(p, out_dtype, device, stream);
  }
  check_launch(op);
  return out;
}

// One launch (nvfp4_global_scale_kernel, up to 8 CTAs per SM, its two counters from the
// zeroed ring). Only while a CUDA graph is being captured before the ring exists: small
// tensors in one CTA of 1024 threads, larger ones memset + reduction + finalize.
constexpr int64_t kSmallAmaxChunks = 16384;

template <typename T>
void launch_global_scale(const Tensor& xc, float* out, int device, cudaStream_t stream,
                         const char* op) {
  const int64_t n = xc.numel();
  const T* x = static_cast<const T*>(xc.const_data_ptr());
  const int64_t n_vec = n / Elem<T>::kPerVec;
  const int64_t want = ceil_div(n_vec, int64_t(kMaxThreads) * 4);
  const unsigned blocks =
      static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(want, 8LL * sm_count(device))));
  if (int* slot = zeroed_slots(op, device, stream, 2)) {
    nvfp4_global_scale_kernel<T><<<blocks, kMaxThreads, 0, stream>>>(
        x, n, out, reinterpret_cast<uint32_t*>(slot));
    check_launch(op);
    return;
  }
  if (n_vec <= kSmallAmaxChunks) {
    nvfp4_global_scale_small_kernel<T><<<1, 1024, 0, stream>>>(x, n, out);
    check_launch(op);
    return;
  }
  // out holds the running max of abs_bits (0 = no element yet), then the scale.
  NVFP4_CHECK(cudaMemsetAsync(out, 0, sizeof(float), stream) == cudaSuccess, op,
              ": cudaMemsetAsync failed: ", cudaGetErrorString(cudaGetLastError()));
  nvfp4_amax_kernel<T><<<blocks, kMaxThreads, 0, stream>>>(x, n, reinterpret_cast<uint32_t*>(out));
  check_launch(op);
  nvfp4_global_scale_finalize_kernel<<<1, 1, 0, stream>>>(out);
  check_launch(op);
}

Tensor global_scale_cuda(Tensor x) {
  const char* op = "nvfp4.global_scale";
  check_float_dtype(op, "x", x);
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor xc = contiguous_aligned(x);
  Tensor out = empty_like_shape(xc, {1}, ScalarType::Float);
  const cudaStream_t stream = current_stream(xc);
  float* o = static_cast<float*>(out.mutable_data_ptr());
  const int device = xc.get_device_index();
  dispatch_float(xc.scalar_type(), [&](auto tag) {
    launch_global_scale<decltype(tag)>(xc, o, device, stream, op);
  });
  return out;
}

}  // namespace

std::tuple<Tensor, Tensor> quantize_amax(const Tensor& x, const Tensor& global_scale,
                                         bool swizzle) {
  return quantize_cuda(x, global_scale, swizzle, "amax", std::nullopt);
}

Tensor global_scale_of(const Tensor& x) { return global_scale_cuda(x); }

}  // namespace nvfp4

STABLE_TORCH_LIBRARY_IMPL(nvfp4, CUDA, m) {
  m.impl("quantize", TORCH_BOX(&nvfp4::quantize_cuda));
  m.impl("dequantize", TORCH_BOX(&nvfp4::dequantize_cuda));
  m.impl("quant_dequant", TORCH_BOX(&nvfp4::quant_dequant_cuda));
  m.impl("global_scale", TORCH_BOX(&nvfp4::global_scale_cuda));
}
