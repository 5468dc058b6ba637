// Host-side helpers shared by the launchers in csrc/ops: error checks whose
// messages name the expected and the actual value, the current CUDA stream,
// output allocation. Stable-ABI only (no ATen headers), so one build loads into
// every torch >= 2.11.
#pragma once

#include <cuda_runtime.h>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstdint>
#include <string_view>
#include <type_traits>
#include <stdexcept>
#include <string>
#include <vector>

namespace nvfp4 {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// Messages are built with std::to_string and string appends, never std::ostream: with
// torch 2.11 wheels, formatting an integer through an ostringstream inside an extension
// crashed the process (seen on the GPU machine), while plain string building works.
inline void append_text(std::string& s, const char* v) { s += v; }
inline void append_text(std::string& s, const std::string& v) { s += v; }
inline void append_text(std::string& s, std::string_view v) { s.append(v.data(), v.size()); }
inline void append_text(std::string& s, char v) { s += v; }
inline void append_text(std::string& s, bool v) { s += v ? "True" : "False"; }
inline void append_text(std::string& s, double v) { s += std::to_string(v); }
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

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw std::runtime_error(str_cat(args...));
}

// Like TORCH_CHECK, with the message alone (no file/line prefix): the same text
// the Python validators in nvfp4_ops/reference.py raise for CPU and fake tensors.
#define NVFP4_CHECK(cond, ...)        \
  do {                                \
    if (!(cond)) {                    \
      ::nvfp4::fail(__VA_ARGS__);     \
    }                                 \
  } while (0)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "torch.float32";
    case ScalarType::Half: return "torch.float16";
    case ScalarType::BFloat16: return "torch.bfloat16";
    case ScalarType::Double: return "torch.float64";
    case ScalarType::Byte: return "torch.uint8";
    case ScalarType::Char: return "torch.int8";
    case ScalarType::Int: return "torch.int32";
    case ScalarType::Long: return "torch.int64";
    case ScalarType::Bool: return "torch.bool";
    case ScalarType::Float8_e4m3fn: return "torch.float8_e4m3fn";
    case ScalarType::Float8_e5m2: return "torch.float8_e5m2";
    case ScalarType::Float8_e8m0fnu: return "torch.float8_e8m0fnu";
    default: return "an unsupported dtype";
  }
}

inline std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

inline std::string device_str(const Tensor& t) {
  if (t.is_cuda()) return "cuda:" + std::to_string(t.get_device_index());
  if (t.is_cpu()) return "cpu";
  return "another device";
}

inline bool is_float_input(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Half || t == ScalarType::BFloat16;
}

inline bool is_byte_dtype(ScalarType t) {
  return t == ScalarType::Byte || t == ScalarType::Float8_e4m3fn ||
         t == ScalarType::Float8_e8m0fnu;
}

inline void check_same_device(const char* op, const Tensor& a, const char* a_name,
                              const Tensor& b, const char* b_name) {
  NVFP4_CHECK(a.is_cuda() == b.is_cuda() && a.get_device_index() == b.get_device_index(),
              op, ": tensors must be on one device: ", a_name, " on ", device_str(a), ", ",
              b_name, " on ", device_str(b));
}

// x must be [M, K] or [B, M, K] in fp32/fp16/bf16 with K a multiple of `block`.
inline void check_float_input(const char* op, const Tensor& x, int64_t block) {
  NVFP4_CHECK(x.dim() == 2 || x.dim() == 3, op, ": x must be 2-D [M, K] or 3-D [B, M, K], got ",
              x.dim(), "-D shape ", shape_str(x));
  NVFP4_CHECK(is_float_input(x.scalar_type()), op,
              ": x must be float32, float16 or bfloat16, got ", dtype_name(x.scalar_type()));
  NVFP4_CHECK(x.size(-1) % block == 0, op, ": K (the last dim) must be a multiple of ", block,
              ", got ", x.size(-1));
}

// The current CUDA stream of the tensor's device (the one torch would launch on).
inline cudaStream_t current_stream(const Tensor& t) {
  void* stream = nullptr;
  NVFP4_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream) ==
                  AOTI_TORCH_SUCCESS,
              "could not get the current CUDA stream of cuda:", t.get_device_index());
  return static_cast<cudaStream_t>(stream);
}

#ifndef NVFP4_OPS_ARCHS
#define NVFP4_OPS_ARCHS "unknown"
#endif

// After a launch: turn "no kernel image" into a message naming the arch.
inline void check_launch(const char* op) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return;
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
    int dev = 0, major = 0, minor = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    fail(op, ": nvfp4_ops was not compiled for sm_", major, minor, " (compiled for: ",
         NVFP4_OPS_ARCHS, "); rebuild with TORCH_CUDA_ARCH_LIST including ", major, ".", minor);
  }
  fail(op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

inline Tensor empty_like_shape(const Tensor& like, const std::vector<int64_t>& sizes,
                               ScalarType dtype) {
  return torch::stable::new_empty(
      like, torch::headeronly::IntHeaderOnlyArrayRef(sizes.data(), sizes.size()), dtype);
}

// Number of blocks to launch for a grid-stride loop over n items.
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 32) {
  int64_t blocks = ceil_div(n, threads);
  if (blocks < 1) blocks = 1;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned>(blocks);
}

}  // namespace nvfp4
