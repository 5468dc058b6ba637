// Host-side helpers of the op launchers (csrc/{nvfp4,mx,swizzle,gemm}/ops.cu), written
// once: the argument checks with the messages of nvfp4_ops/reference (the single source of
// the argument contract: same text, RuntimeError), Python's spelling of values (py_repr,
// dtype names, shapes, devices), dtype dispatch, the current stream, output allocation,
// grid sizes and the launch check. Stable-ABI only (no ATen headers), so one build loads
// into every torch >= 2.11.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace nvfp4 {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// ---- messages ------------------------------------------------------------------------------
// Built with std::to_string and string appends, never std::ostream: with torch 2.11 wheels,
// formatting an integer through an ostringstream inside an extension crashed the process
// (seen on the GPU machine), while plain string building works.
inline void append_text(std::string& s, const char* v) { s += v; }
inline void append_text(std::string& s, const std::string& v) { s += v; }
inline void append_text(std::string& s, std::string_view v) { s.append(v.data(), v.size()); }
inline void append_text(std::string& s, char v) { s += v; }
inline void append_text(std::string& s, bool v) { s += v ? "True" : "False"; }
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
inline void append_text(std::string& s, T v) {
  s += std::to_string(v);
}

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::string s;
  (append_text(s, args), ...);
  return s;
}

// RuntimeError on the Python side (torch maps std::runtime_error to it).
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw std::runtime_error(str_cat(args...));
}

// Like TORCH_CHECK, with the message alone (no file/line prefix): the same text the Python
// checks raise for CPU and fake tensors.
#define NVFP4_CHECK(cond, ...)    \
  do {                            \
    if (!(cond)) {                \
      ::nvfp4::fail(__VA_ARGS__); \
    }                             \
  } while (0)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Python's repr() of a str (the checks print choices and values with !r): single quotes
// unless the text holds a ' and no ", backslash, quote and control characters escaped.
// Bytes >= 0x80 (UTF-8) pass through, as Python prints printable non-ASCII characters.
inline std::string py_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += quote;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

// torch's name of a dtype, as str(dtype) prints it in the Python messages.
inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Byte: return "torch.uint8";
    case ScalarType::Char: return "torch.int8";
    case ScalarType::Short: return "torch.int16";
    case ScalarType::Int: return "torch.int32";
    case ScalarType::Long: return "torch.int64";
    case ScalarType::Half: return "torch.float16";
    case ScalarType::Float: return "torch.float32";
    case ScalarType::Double: return "torch.float64";
    case ScalarType::ComplexHalf: return "torch.complex32";
    case ScalarType::ComplexFloat: return "torch.complex64";
    case ScalarType::ComplexDouble: return "torch.complex128";
    case ScalarType::Bool: return "torch.bool";
    case ScalarType::QInt8: return "torch.qint8";
    case ScalarType::QUInt8: return "torch.quint8";
    case ScalarType::QInt32: return "torch.qint32";
    case ScalarType::BFloat16: return "torch.bfloat16";
    case ScalarType::QUInt4x2: return "torch.quint4x2";
    case ScalarType::QUInt2x4: return "torch.quint2x4";
    case ScalarType::Bits1x8: return "torch.bits1x8";
    case ScalarType::Bits2x4: return "torch.bits2x4";
    case ScalarType::Bits4x2: return "torch.bits4x2";
    case ScalarType::Bits8: return "torch.bits8";
    case ScalarType::Bits16: return "torch.bits16";
    case ScalarType::Float8_e5m2: return "torch.float8_e5m2";
    case ScalarType::Float8_e4m3fn: return "torch.float8_e4m3fn";
    case ScalarType::Float8_e5m2fnuz: return "torch.float8_e5m2fnuz";
    case ScalarType::Float8_e4m3fnuz: return "torch.float8_e4m3fnuz";
    case ScalarType::UInt16: return "torch.uint16";
    case ScalarType::UInt32: return "torch.uint32";
    case ScalarType::UInt64: return "torch.uint64";
    case ScalarType::UInt1: return "torch.uint1";
    case ScalarType::UInt2: return "torch.uint2";
    case ScalarType::UInt3: return "torch.uint3";
    case ScalarType::UInt4: return "torch.uint4";
    case ScalarType::UInt5: return "torch.uint5";
    case ScalarType::UInt6: return "torch.uint6";
    case ScalarType::UInt7: return "torch.uint7";
    case ScalarType::Int1: return "torch.int1";
    case ScalarType::Int2: return "torch.int2";
    case ScalarType::Int3: return "torch.int3";
    case ScalarType::Int4: return "torch.int4";
    case ScalarType::Int5: return "torch.int5";
    case ScalarType::Int6: return "torch.int6";
    case ScalarType::Int7: return "torch.int7";
    case ScalarType::Float8_e8m0fnu: return "torch.float8_e8m0fnu";
    case ScalarType::Float4_e2m1fn_x2: return "torch.float4_e2m1fn_x2";
    default: return "an unsupported dtype";
  }
}

// dtype.itemsize == 1 (torch.bool included): the dtypes swizzle_scales moves as bytes.
inline bool is_one_byte_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Bool: case ScalarType::Byte: case ScalarType::Char: case ScalarType::QInt8:
    case ScalarType::QUInt8: case ScalarType::QUInt4x2: case ScalarType::QUInt2x4:
    case ScalarType::Bits1x8: case ScalarType::Bits2x4: case ScalarType::Bits4x2:
    case ScalarType::Bits8: case ScalarType::Float8_e5m2: case ScalarType::Float8_e4m3fn:
    case ScalarType::Float8_e5m2fnuz: case ScalarType::Float8_e4m3fnuz:
    case ScalarType::UInt1: case ScalarType::UInt2: case ScalarType::UInt3:
    case ScalarType::UInt4: case ScalarType::UInt5: case ScalarType::UInt6:
    case ScalarType::UInt7: case ScalarType::Int1: case ScalarType::Int2:
    case ScalarType::Int3: case ScalarType::Int4: case ScalarType::Int5:
    case ScalarType::Int6: case ScalarType::Int7: case ScalarType::Float8_e8m0fnu:
    case ScalarType::Float4_e2m1fn_x2:
      return true;
    default:
      return false;
  }
}

// "[2, 3]", as the Python checks print shapes.
inline std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

inline std::string shape_str(const Tensor& t) {
  std::vector<int64_t> d;
  for (int64_t i = 0; i < t.dim(); ++i) d.push_back(t.size(i));
  return dims_str(d);
}

inline std::string device_str(const Tensor& t) {
  if (t.is_cuda()) return "cuda:" + std::to_string(t.get_device_index());
  if (t.is_cpu()) return "cpu";
  return "another device";
}

inline bool is_float_input(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Half || t == ScalarType::BFloat16;
}

// ---- the checks of nvfp4_ops/reference (same order of use, same text) ----------------------
inline void check_float_dtype(const char* op, const char* name, const Tensor& t) {
  NVFP4_CHECK(is_float_input(t.scalar_type()), op, ": ", name,
              " must be float32, float16 or bfloat16, got ", dtype_name(t.scalar_type()));
}

inline void check_dim_2_or_3(const char* op, const char* name, const Tensor& t,
                             const char* layout = "[M, K] or [B, M, K]") {
  NVFP4_CHECK(t.dim() == 2 || t.dim() == 3, op, ": ", name, " must be 2-D or 3-D (", layout,
              "), got ", t.dim(), "-D shape ", shape_str(t));
}

inline void check_multiple(const char* op, const char* what, int64_t n, int64_t m) {
  NVFP4_CHECK(n % m == 0, op, ": ", what, " must be a multiple of ", m, ", got ", n);
}

// "<op>: <name> must be 'a', 'b' or 'c', got 'd'".
inline void check_choice(const char* op, const char* name, const std::string& value,
                         std::initializer_list<const char*> choices) {
  for (const char* c : choices)
    if (value == c) return;
  std::string want;
  size_t i = 0;
  for (const char* c : choices) {
    if (i > 0) want += (i + 1 == choices.size()) ? " or " : ", ";
    want += py_repr(c);
    ++i;
  }
  fail(op, ": ", name, " must be ", want, ", got ", py_repr(value));
}

inline void check_out_dtype(const char* op, ScalarType out_dtype) {
  NVFP4_CHECK(is_float_input(out_dtype), op,
              ": out_dtype must be torch.float32, torch.float16 or torch.bfloat16, got ",
              dtype_name(out_dtype));
}

// scales of shape `want`: linear [..., M, K/n] or swizzled [..., roundup(M, 128), roundup(K/n, 4)].
inline void check_scales_shape(const char* op, const Tensor& scales,
                               const std::vector<int64_t>& want, bool swizzled,
                               const char* kb_name) {
  bool ok = scales.dim() == static_cast<int64_t>(want.size());
  for (int64_t d = 0; ok && d < scales.dim(); ++d) ok = scales.size(d) == want[d];
  NVFP4_CHECK(ok, op, ": scales must have shape ", dims_str(want),
              swizzled ? " (swizzled, [..., roundup(M, 128), roundup(" : " (linear, [..., M, ",
              kb_name, swizzled ? ", 4)])" : "])", ", got ", shape_str(scales));
}

// float32 with one element, or for 3-D data (batch >= 0) shape [batch].
inline void check_global_scale(const char* op, const Tensor& gs, int64_t batch) {
  const bool ok = gs.scalar_type() == ScalarType::Float &&
                  (gs.numel() == 1 || (batch >= 0 && gs.dim() == 1 && gs.size(0) == batch));
  if (ok) return;
  const std::string per_batch =
      batch >= 0 ? " or one per batch (" + std::to_string(batch) + ")" : "";
  fail(op, ": global_scale must be float32 with 1 element", per_batch, ", got shape ",
       shape_str(gs), " and dtype ", dtype_name(gs.scalar_type()));
}

// "<op>: tensors must be on one device: x on cuda:0, global_scale on cpu" (all of them; a
// braced list, or a vector built from the optional arguments that are present).
inline void check_one_device(const char* op,
                             const std::vector<std::pair<const char*, const Tensor*>>& ts) {
  const Tensor& first = *ts.begin()->second;
  bool ok = true;
  for (const auto& t : ts) {
    const Tensor& b = *t.second;
    ok = ok && first.is_cuda() == b.is_cuda() && first.is_cpu() == b.is_cpu() &&
         (!first.is_cuda() || first.get_device_index() == b.get_device_index());
  }
  if (ok) return;
  std::string msg = str_cat(op, ": tensors must be on one device: ");
  bool comma = false;
  for (const auto& t : ts) {
    msg += str_cat(comma ? ", " : "", t.first, " on ", device_str(*t.second));
    comma = true;
  }
  fail(msg);
}

// ---- tensors, dispatch, launches -----------------------------------------------------------
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Contiguous, with a 16-byte aligned data pointer (the vector kernels need it): a view with
// an odd storage offset is copied (the bytes are the same), in that rare case only.
inline Tensor contiguous_aligned(const Tensor& t) {
  Tensor c = torch::stable::contiguous(t);
  if (c.numel() > 0 && !aligned16(c.const_data_ptr())) c = torch::stable::clone(c);
  return c;
}

inline Tensor empty_like_shape(const Tensor& like, const std::vector<int64_t>& sizes,
                               ScalarType dtype) {
  return torch::stable::new_empty(
      like, torch::headeronly::IntHeaderOnlyArrayRef(sizes.data(), sizes.size()), dtype);
}

// dims with the batch dim of a 3-D `like` in front.
inline std::vector<int64_t> with_batch(const Tensor& like, std::vector<int64_t> dims) {
  if (like.dim() == 3) dims.insert(dims.begin(), like.size(0));
  return dims;
}

// Calls f(T{}) with T = float, __half or __nv_bfloat16 for a validated float dtype.
template <typename F>
void dispatch_float(ScalarType t, F&& f) {
  switch (t) {
    case ScalarType::Float: f(float{}); break;
    case ScalarType::Half: f(__half{}); break;
    case ScalarType::BFloat16: f(__nv_bfloat16{}); break;
    default: fail("nvfp4: unexpected dtype ", dtype_name(t));
  }
}

// The current CUDA stream of the tensor's device (the one torch would launch on).
inline cudaStream_t current_stream(const Tensor& t) {
  void* stream = nullptr;
  NVFP4_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream) ==
                  AOTI_TORCH_SUCCESS,
              "could not get the current CUDA stream of cuda:", t.get_device_index());
  return static_cast<cudaStream_t>(stream);
}

// Streaming multiprocessors of a device (cached; a plain default if the query fails, which
// is fine for a grid size).
inline int sm_count(int device) {
  static std::atomic<int> cache[64];
  if (device < 0 || device >= 64) device = 0;
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        n <= 0) {
      cudaGetLastError();  // clear it
      n = 132;
    }
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

// Compute capability of a device as major * 10 + minor (90 for sm_90, 120 for sm_120),
// cached; 0 when the device index is out of range or the query fails (not cached then).
inline int compute_capability(int device) {
  static std::atomic<int> cache[64];
  if (device < 0 || device >= 64) return 0;
  int cc = cache[device].load(std::memory_order_relaxed);
  if (cc == 0) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) !=
            cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) !=
            cudaSuccess) {
      cudaGetLastError();  // clear it
      return 0;
    }
    cc = major * 10 + minor;
    cache[device].store(cc, std::memory_order_relaxed);
  }
  return cc;
}

// CTAs of `kernel` (threads per CTA, smem bytes of dynamic shared memory each) that fit on
// the current device at once.
template <typename K>
int64_t resident_ctas(K kernel, int threads, size_t smem = 0) {
  int per_sm = 0, dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    dev = 0;
  }
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) !=
          cudaSuccess ||
      per_sm <= 0) {
    cudaGetLastError();
    per_sm = 4;
  }
  return static_cast<int64_t>(per_sm) * sm_count(dev);
}

// Number of CTAs for a grid-stride loop over n items: ceil(n / per_cta), in [1, cap].
inline unsigned grid_for(int64_t n, int64_t per_cta, int64_t cap = 65535LL * 32) {
  int64_t blocks = ceil_div(n, per_cta);
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

#ifndef NVFP4_OPS_ARCHS
#define NVFP4_OPS_ARCHS "unknown"
#endif

// A failed CUDA call of `op` as a RuntimeError; "no kernel image" becomes a message naming
// the arch. `what` names the call ("CUDA kernel launch", "cudaFuncSetAttribute", ...).
inline void check_cuda(const char* op, cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
    int dev = 0, major = 0, minor = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    fail(op, ": nvfp4_ops was not compiled for sm_", major, minor, " (compiled for: ",
         NVFP4_OPS_ARCHS, "); rebuild with TORCH_CUDA_ARCH_LIST including ", major, ".", minor);
  }
  fail(op, ": ", what, " failed: ", cudaGetErrorString(err));
}

// After a launch: its error, if any, through check_cuda.
inline void check_launch(const char* op) {
  check_cuda(op, cudaGetLastError(), "CUDA kernel launch");
}

// Opts kKernel in to `smem` bytes of dynamic shared memory (beyond the 48 KB default) on
// `device` and returns `count()`, its CTA slots of one wave, both once per device and kernel
// (so that a call inside a CUDA-graph capture makes no such query).
template <auto kKernel, class Count>
int64_t smem_kernel_slots(const char* op, int device, int smem, Count count) {
  constexpr int kMaxDevices = 64;
  static int64_t slots[kMaxDevices] = {};
  NVFP4_CHECK(device >= 0 && device < kMaxDevices, op, ": device index ", device,
              " out of range");
  if (slots[device] == 0) {
    check_cuda(op, cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
               "cudaFuncSetAttribute");
    slots[device] = count();
  }
  return slots[device];
}

// Counters without a memset per call (split-K tickets, grid-wide reductions): per device, one
// ring of int32 slots zeroed once (cudaMalloc + cudaMemset, never inside a CUDA-graph
// capture). A kernel that takes slots must leave them zero when it ends (the last CTA resets
// what it used). Consecutive calls take consecutive slots, so launches in flight at once on
// different streams use different ones unless more than kRingSlots slots are in flight; a
// graph captures the slots of its launches and replays them (each replay leaves them zero).
// Returns nullptr when count > kRingSlots, or when the ring does not exist yet and the stream
// is capturing: the caller then zeroes a buffer of its own.
constexpr int64_t kRingSlots = int64_t(1) << 20;
inline int* zeroed_slots(const char* op, int device, cudaStream_t stream, int64_t count) {
  struct Ring {
    std::mutex m;
    int* base = nullptr;
    int64_t next = 0;
  };
  static Ring rings[64];
  if (count > kRingSlots || device < 0 || device >= 64) return nullptr;
  Ring& r = rings[device];
  std::lock_guard<std::mutex> lock(r.m);
  if (r.base == nullptr) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    check_cuda(op, cudaStreamIsCapturing(stream, &status), "cudaStreamIsCapturing");
    if (status != cudaStreamCaptureStatusNone) return nullptr;
    int* base = nullptr;
    check_cuda(op, cudaMalloc(&base, kRingSlots * sizeof(int)), "cudaMalloc");
    check_cuda(op, cudaMemset(base, 0, kRingSlots * sizeof(int)), "cudaMemset");
    r.base = base;
  }
  if (r.next + count > kRingSlots) r.next = 0;
  int* slots = r.base + r.next;
  r.next += count;
  return slots;
}


}  // namespace nvfp4
