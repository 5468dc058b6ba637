// NVFP4 codecs on CUDA: quantize, dequantize, quant_dequant, global_scale.
// Numerics: SPEC.md sec. 2 and 4, bit for bit with nvfp4_ops/reference.py. Kernels:
// kernels/nvfp4_quant.cuh; scale_method "mse" / "hessian" go to the search kernels
// (launch_nvfp4_search, search.cu). Argument errors use the reference's messages.

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/nvfp4_quant.cuh"
#include "ops/common.h"
#include "ops/launch.h"

namespace nvfp4 {
namespace {

using namespace quant;  // kernels/nvfp4_quant.cuh

constexpr int kMaxThreads = 256;

// Python's repr of a str, as the reference's messages print it.
std::string py_repr(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char quote = dq ? '"' : '\'';
  std::string out(1, quote);
  for (char ch : s) {
    if (ch == '\\' || ch == quote) out += '\\';
    out += ch;
  }
  return out + quote;
}

std::string shape_of(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

bool same_device(const Tensor& a, const Tensor& b) {
  return a.is_cuda() == b.is_cuda() && a.is_cpu() == b.is_cpu() &&
         (!a.is_cuda() || a.get_device_index() == b.get_device_index());
}

// "{op}: tensors must be on one device: x on cuda:0, global_scale on cpu" (all of them).
void check_one_device(const char* op,
                      std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  const Tensor* first = ts.begin()->second;
  bool ok = true;
  for (const auto& t : ts) ok = ok && same_device(*first, *t.second);
  if (ok) return;
  std::string msg = str_cat(op, ": tensors must be on one device: ");
  bool comma = false;
  for (const auto& t : ts) {
    msg += str_cat(comma ? ", " : "", t.first, " on ", device_str(*t.second));
    comma = true;
  }
  fail(msg);
}

void check_float_dtype(const char* op, const char* name, const Tensor& t) {
  NVFP4_CHECK(is_float_input(t.scalar_type()), op, ": ", name,
              " must be float32, float16 or bfloat16, got ", dtype_name(t.scalar_type()));
}

void check_dim_2_or_3(const char* op, const char* name, const Tensor& t, const char* layout) {
  NVFP4_CHECK(t.dim() == 2 || t.dim() == 3, op, ": ", name, " must be 2-D or 3-D (", layout,
              "), got ", t.dim(), "-D shape ", shape_str(t));
}

// float32 with one element, or for 3-D data (batch >= 0) shape [batch].
void check_global_scale(const char* op, const Tensor& gs, int64_t batch) {
  const bool ok = gs.scalar_type() == ScalarType::Float &&
                  (gs.numel() == 1 || (batch >= 0 && gs.dim() == 1 && gs.size(0) == batch));
  if (ok) return;
  std::string per_batch = batch >= 0 ? " or one per batch (" + std::to_string(batch) + ")" : "";
  fail(op, ": global_scale must be float32 with 1 element", per_batch, ", got shape ",
       shape_str(gs), " and dtype ", dtype_name(gs.scalar_type()));
}

// check_quantize_args of the reference, in its order (hessian checks only for quantize).
ScaleMethod check_quantize_args(const char* op, const Tensor& x, const Tensor& gs,
                                const std::string& scale_method,
                                const std::optional<Tensor>& hessian) {
  check_float_dtype(op, "x", x);
  check_dim_2_or_3(op, "x", x, "[M, K] or [B, M, K]");
  NVFP4_CHECK(x.size(-1) % 16 == 0, op, ": K (the last dim) must be a multiple of 16, got ",
              x.size(-1));
  check_global_scale(op, gs, x.dim() == 3 ? x.size(0) : -1);
  ScaleMethod method;
  if (scale_method == "amax") {
    method = ScaleMethod::kAmax;
  } else if (scale_method == "mse") {
    method = ScaleMethod::kMse;
  } else if (scale_method == "hessian") {
    method = ScaleMethod::kHessian;
  } else {
    fail(op, ": scale_method must be 'amax', 'mse' or 'hessian', got ", py_repr(scale_method));
  }
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

InDtype in_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return InDtype::kFloat32;
    case ScalarType::Half: return InDtype::kFloat16;
    default: return InDtype::kBFloat16;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Contiguous, with a 16-byte aligned data pointer (a view with an odd storage offset is
// copied; the bytes are the same).
Tensor contiguous_aligned(const Tensor& t) {
  Tensor c = torch::stable::contiguous(t);
  if (c.numel() > 0 && !aligned16(c.const_data_ptr())) c = torch::stable::clone(c);
  return c;
}

int sm_count(int device) {
  static std::atomic<int> cache[64];
  if (device < 0 || device >= 64) device = 0;
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        n <= 0) {
      cudaGetLastError();  // clear it; a plain default is fine for a grid size
      n = 132;
    }
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
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

template <typename T, bool kSwizzle, bool kQdq>
void launch_quantize_t(const QuantParams& p, int kg, int device, cudaStream_t stream) {
  const LaunchShape ls = launch_shape(p.g.n_blocks * kg, device);
  // (the padding rows of the swizzled scales are zeroed by a grid-stride loop: any grid)
  nvfp4_quantize_kernel<T, kSwizzle, kQdq><<<ls.blocks, ls.threads, 0, stream>>>(p);
}

template <bool kSwizzle, bool kQdq>
void launch_quantize(const QuantParams& p, ScalarType dtype, int device, cudaStream_t stream) {
  switch (dtype) {
    case ScalarType::Float:
      launch_quantize_t<float, kSwizzle, kQdq>(p, 4, device, stream);
      break;
    case ScalarType::Half:
      launch_quantize_t<__half, kSwizzle, kQdq>(p, 2, device, stream);
      break;
    default:
      launch_quantize_t<__nv_bfloat16, kSwizzle, kQdq>(p, 2, device, stream);
      break;
  }
}

std::tuple<Tensor, Tensor> quantize_cuda(Tensor x, Tensor global_scale, bool swizzle,
                                         std::string scale_method,
                                         std::optional<Tensor> hessian) {
  const char* op = "nvfp4.quantize";
  const ScaleMethod method = check_quantize_args(op, x, global_scale, scale_method, hessian);
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor xc = contiguous_aligned(x);
  const Tensor gs = torch::stable::contiguous(global_scale);
  const int64_t batches = x.dim() == 3 ? x.size(0) : 1;
  const int64_t rows = x.size(-2), k = x.size(-1);
  const Nvfp4Geometry g = make_geometry(batches, rows, k);

  std::vector<int64_t> psizes = {rows, k / 2};
  std::vector<int64_t> ssizes = swizzle ? std::vector<int64_t>{g.mp, g.kp}
                                        : std::vector<int64_t>{rows, g.kb};
  if (x.dim() == 3) {
    psizes.insert(psizes.begin(), batches);
    ssizes.insert(ssizes.begin(), batches);
  }
  Tensor packed = empty_like_shape(xc, psizes, ScalarType::Byte);
  Tensor scales = empty_like_shape(xc, ssizes, ScalarType::Float8_e4m3fn);
  if (scales.numel() == 0) return {packed, scales};  // no blocks and no padding

  const cudaStream_t stream = current_stream(xc);
  const bool per_batch = gs.numel() != 1;
  if (method != ScaleMethod::kAmax) {
    std::optional<Tensor> h;
    if (hessian.has_value()) h = torch::stable::contiguous(*hessian);
    Nvfp4QuantArgs a;
    a.x = xc.const_data_ptr();
    a.dtype = in_dtype(xc.scalar_type());
    a.batches = batches;
    a.rows = rows;
    a.k = k;
    a.global_scale = static_cast<const float*>(gs.const_data_ptr());
    a.gs_per_batch = per_batch;
    a.packed = static_cast<uint8_t*>(packed.mutable_data_ptr());
    a.scales = static_cast<uint8_t*>(scales.mutable_data_ptr());
    a.swizzle = swizzle;
    launch_nvfp4_search(a, method,
                        h.has_value() ? static_cast<const float*>(h->const_data_ptr()) : nullptr,
                        stream);
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
  p.pad_words = swizzle ? batches * (g.mp - rows) * (g.kp / 4) : 0;
  const int device = xc.get_device_index();
  if (swizzle) {
    launch_quantize<true, false>(p, xc.scalar_type(), device, stream);
  } else {
    launch_quantize<false, false>(p, xc.scalar_type(), device, stream);
  }
  check_launch(op);
  return {packed, scales};
}

Tensor quant_dequant_cuda(Tensor x, Tensor global_scale) {
  const char* op = "nvfp4.quant_dequant";
  check_quantize_args(op, x, global_scale, "amax", std::nullopt);
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor xc = contiguous_aligned(x);
  const Tensor gs = torch::stable::contiguous(global_scale);
  const int64_t batches = x.dim() == 3 ? x.size(0) : 1;
  const int64_t rows = x.size(-2), k = x.size(-1);
  std::vector<int64_t> sizes = {rows, k};
  if (x.dim() == 3) sizes.insert(sizes.begin(), batches);
  Tensor out = empty_like_shape(xc, sizes, xc.scalar_type());
  if (out.numel() == 0) return out;
  QuantParams p{};
  p.x = xc.const_data_ptr();
  p.out = out.mutable_data_ptr();
  p.gs = static_cast<const float*>(gs.const_data_ptr());
  p.gs_per_batch = gs.numel() != 1;
  p.g = make_geometry(batches, rows, k);
  launch_quantize<false, true>(p, xc.scalar_type(), xc.get_device_index(), current_stream(xc));
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
  switch (out_dtype) {
    case ScalarType::Float:
      launch_dequantize_t<float, kSwizzle>(p, device, stream);
      break;
    case ScalarType::Half:
      launch_dequantize_t<__half, kSwizzle>(p, device, stream);
      break;
    default:
      launch_dequantize_t<__nv_bfloat16, kSwizzle>(p, device, stream);
      break;
  }
}

Tensor dequantize_cuda(Tensor packed, Tensor scales, Tensor global_scale, ScalarType out_dtype,
                       bool swizzled) {
  const char* op = "nvfp4.dequantize";
  NVFP4_CHECK(packed.scalar_type() == ScalarType::Byte, op,
              ": packed must be uint8 (two E2M1 codes per byte), got ",
              dtype_name(packed.scalar_type()));
  check_dim_2_or_3(op, "packed", packed, "[M, K/2] or [B, M, K/2]");
  NVFP4_CHECK(packed.size(-1) % 8 == 0, op,
              ": the last dim of packed (K/2) must be a multiple of 8, got ", packed.size(-1));
  NVFP4_CHECK(scales.scalar_type() == ScalarType::Float8_e4m3fn, op,
              ": scales must be torch.float8_e4m3fn, got ", dtype_name(scales.scalar_type()));
  const int64_t batches = packed.dim() == 3 ? packed.size(0) : 1;
  const int64_t rows = packed.size(-2), k = packed.size(-1) * 2;
  const Nvfp4Geometry g = make_geometry(batches, rows, k);
  {
    std::vector<int64_t> want = swizzled ? std::vector<int64_t>{g.mp, g.kp}
                                         : std::vector<int64_t>{rows, g.kb};
    if (packed.dim() == 3) want.insert(want.begin(), batches);
    bool ok = scales.dim() == static_cast<int64_t>(want.size());
    for (size_t d = 0; ok && d < want.size(); ++d) ok = scales.size(d) == want[d];
    NVFP4_CHECK(ok, op, ": scales must have shape ", shape_of(want),
                swizzled ? " (swizzled, [..., roundup(M, 128), roundup(K/16, 4)])"
                         : " (linear, [..., M, K/16])",
                ", got ", shape_str(scales));
  }
  check_global_scale(op, global_scale, packed.dim() == 3 ? batches : -1);
  NVFP4_CHECK(is_float_input(out_dtype), op,
              ": out_dtype must be torch.float32, torch.float16 or torch.bfloat16, got ",
              dtype_name(out_dtype));
  check_one_device(op, {{"packed", &packed}, {"scales", &scales}, {"global_scale", &global_scale}});

  torch::stable::accelerator::DeviceGuard guard(packed.get_device_index());
  const Tensor pc = contiguous_aligned(packed);
  const Tensor sc = torch::stable::contiguous(scales);
  const Tensor gs = torch::stable::contiguous(global_scale);
  std::vector<int64_t> sizes = {rows, k};
  if (packed.dim() == 3) sizes.insert(sizes.begin(), batches);
  Tensor out = empty_like_shape(pc, sizes, out_dtype);
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

// Up to this many 16-byte chunks, one CTA of 1024 threads does global_scale in one launch
// (256 KiB: a few microseconds on one SM, about the cost of the two extra launches of the
// many-CTA path); above, memset + a reduction over at most 8 CTAs per SM + a finalize.
constexpr int64_t kSmallAmaxChunks = 16384;

template <typename T>
void launch_global_scale(const Tensor& xc, float* out, int device, cudaStream_t stream,
                         const char* op) {
  const int64_t n = xc.numel();
  const T* x = static_cast<const T*>(xc.const_data_ptr());
  const int64_t n_vec = n / Elem<T>::kPerVec;
  if (n_vec <= kSmallAmaxChunks) {
    nvfp4_global_scale_small_kernel<T><<<1, 1024, 0, stream>>>(x, n, out);
    check_launch(op);
    return;
  }
  // out holds the running max of abs_bits (0 = no element yet), then the scale.
  NVFP4_CHECK(cudaMemsetAsync(out, 0, sizeof(float), stream) == cudaSuccess, op,
              ": cudaMemsetAsync failed: ", cudaGetErrorString(cudaGetLastError()));
  const int64_t want = ceil_div(n_vec, int64_t(kMaxThreads) * 4);
  const unsigned blocks =
      static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(want, 8LL * sm_count(device))));
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
  switch (xc.scalar_type()) {
    case ScalarType::Float: launch_global_scale<float>(xc, o, device, stream, op); break;
    case ScalarType::Half: launch_global_scale<__half>(xc, o, device, stream, op); break;
    default: launch_global_scale<__nv_bfloat16>(xc, o, device, stream, op); break;
  }
  return out;
}

}  // namespace
}  // namespace nvfp4

STABLE_TORCH_LIBRARY_IMPL(nvfp4, CUDA, m) {
  m.impl("quantize", TORCH_BOX(&nvfp4::quantize_cuda));
  m.impl("dequantize", TORCH_BOX(&nvfp4::dequantize_cuda));
  m.impl("quant_dequant", TORCH_BOX(&nvfp4::quant_dequant_cuda));
  m.impl("global_scale", TORCH_BOX(&nvfp4::global_scale_cuda));
}
