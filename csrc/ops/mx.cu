// mx_quantize / mx_dequantize on CUDA: MXFP8 (elem "e4m3") and MXFP4 (elem "e2m1") with
// E8M0 scales per 32 elements (SPEC.md sec. 3), rowwise (axis -1) and columnwise (axis -2,
// output transposed, read once through shared-memory tiles). Kernels: kernels/mx_quant.cuh.
// scale_method "mse" is handed to the fused search of search.cu (launch_mx_search).
// Argument checks reproduce, in the same order and with the same text, the Python
// validators check_mx_quantize_args / check_mx_dequantize_args of nvfp4_ops/reference.py.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/mx_quant.cuh"
#include "ops/common.h"
#include "ops/launch.h"

namespace nvfp4 {
namespace {

using mx::kThreads;

constexpr const char* kQuantOp = "nvfp4.mx_quantize";
constexpr const char* kDequantOp = "nvfp4.mx_dequantize";
constexpr int kVecPerThread = 4;  // the U of the rowwise and dequantize kernels

// torch's name of a dtype, as the Python messages print it.
const char* dtype_str(ScalarType t) {
  switch (t) {
    case ScalarType::Short: return "torch.int16";
    case ScalarType::ComplexFloat: return "torch.complex64";
    case ScalarType::ComplexDouble: return "torch.complex128";
    case ScalarType::Float8_e5m2fnuz: return "torch.float8_e5m2fnuz";
    case ScalarType::Float8_e4m3fnuz: return "torch.float8_e4m3fnuz";
    case ScalarType::UInt16: return "torch.uint16";
    case ScalarType::UInt32: return "torch.uint32";
    case ScalarType::UInt64: return "torch.uint64";
    case ScalarType::Float4_e2m1fn_x2: return "torch.float4_e2m1fn_x2";
    default: return dtype_name(t);
  }
}

// Python's repr() of a str (the validators print choices and values with !r).
std::string py_repr(const std::string& s) {
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
      out += static_cast<char>(c);  // printable ASCII; UTF-8 bytes pass through unchanged
    }
  }
  out += quote;
  return out;
}

// "<op>: <name> must be 'a' or 'b', got 'c'" (reference._check_choice).
void check_choice(const char* op, const char* name, const std::string& value,
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

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

std::vector<int64_t> with_batch(const Tensor& like, std::vector<int64_t> dims) {
  if (like.dim() == 3) dims.insert(dims.begin(), like.size(0));
  return dims;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// A contiguous tensor whose data starts on a 16-byte boundary (a view with a storage
// offset may not): the vector kernels need it. A fresh copy only in that rare case.
Tensor contiguous_aligned(const Tensor& t) {
  Tensor c = torch::stable::contiguous(t);
  if (!aligned16(c.const_data_ptr())) c = torch::stable::clone(c);
  return c;
}

InDtype in_dtype(ScalarType t) {
  return t == ScalarType::Float ? InDtype::kFloat32
         : t == ScalarType::Half ? InDtype::kFloat16
                                 : InDtype::kBFloat16;
}

mx::ScaleLayout make_layout(int64_t batches, int64_t rows, int64_t kb, bool swizzle) {
  mx::ScaleLayout s;
  s.kb = kb;
  s.rows = rows;
  s.mp = round_up(rows, 128);
  s.kp = round_up(kb, 4);
  s.swizzle = swizzle;
  const int64_t lim = int64_t(1) << 31;
  s.fast = rows < lim && kb < lim && (kb == 0 || batches * rows < lim / kb);
  if (s.fast) {
    s.div_kb = mx::FastDiv(static_cast<uint32_t>(kb));
    s.div_rows = mx::FastDiv(static_cast<uint32_t>(rows));
  }
  return s;
}

// Calls f(T{}) with T = float, __half or __nv_bfloat16.
template <typename F>
void dispatch_float(ScalarType t, F&& f) {
  switch (t) {
    case ScalarType::Float: f(float{}); break;
    case ScalarType::Half: f(__half{}); break;
    case ScalarType::BFloat16: f(__nv_bfloat16{}); break;
    default: fail("nvfp4: unexpected dtype ", dtype_str(t));
  }
}

// Calls f(std::bool_constant<e2m1>, std::integral_constant<MxRounding, r>).
template <typename F>
void dispatch_elem_rounding(bool e2m1, bool use_floor, F&& f) {
  using RC = std::integral_constant<MxRounding, MxRounding::kRceil>;
  using RF = std::integral_constant<MxRounding, MxRounding::kFloor>;
  if (e2m1) {
    use_floor ? f(std::true_type{}, RF{}) : f(std::true_type{}, RC{});
  } else {
    use_floor ? f(std::false_type{}, RF{}) : f(std::false_type{}, RC{});
  }
}

unsigned grid_cap(int64_t blocks) {
  const int64_t cap = int64_t(1) << 30;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

std::tuple<Tensor, Tensor> mx_quantize_cuda(Tensor x, std::string elem, std::string rounding,
                                            bool swizzle, int64_t axis,
                                            std::string scale_method) {
  const char* op = kQuantOp;
  NVFP4_CHECK(is_float_input(x.scalar_type()), op,
              ": x must be float32, float16 or bfloat16, got ", dtype_str(x.scalar_type()));
  NVFP4_CHECK(x.dim() == 2 || x.dim() == 3, op,
              ": x must be 2-D or 3-D ([M, K] or [B, M, K]), got ", x.dim(), "-D shape ",
              shape_str(x));
  check_choice(op, "elem", elem, {"e4m3", "e2m1"});
  check_choice(op, "rounding", rounding, {"rceil", "floor"});
  check_choice(op, "scale_method", scale_method, {"amax", "mse"});
  const int64_t nd = x.dim();
  NVFP4_CHECK(axis == -1 || axis == -2 || axis == nd - 1 || axis == nd - 2, op,
              ": axis must be -1 or -2 (the last two dims of a ", nd, "-D x), got ", axis);
  const bool colwise = !(axis == -1 || axis == nd - 1);
  if (!colwise) {
    NVFP4_CHECK(x.size(-1) % mx::kBlock == 0, op,
                ": K (the last dim, quantized with axis=-1) must be a multiple of 32, got ",
                x.size(-1));
  } else {
    NVFP4_CHECK(x.size(-2) % mx::kBlock == 0, op,
                ": M (dim -2, quantized with axis=-2) must be a multiple of 32, got ",
                x.size(-2));
  }

  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const bool e2m1 = elem == "e2m1";
  const bool use_floor = rounding == "floor";
  const int64_t batches = nd == 3 ? x.size(0) : 1;
  const int64_t m = x.size(-2), k = x.size(-1);
  // The quantized matrix: [rows, cols] with blocks of 32 along cols (x^T for axis -2).
  const int64_t rows = colwise ? k : m, cols = colwise ? m : k;
  const int64_t kb = cols / mx::kBlock;
  Tensor data = empty_like_shape(x, with_batch(x, {rows, e2m1 ? cols / 2 : cols}),
                                 e2m1 ? ScalarType::Byte : ScalarType::Float8_e4m3fn);
  Tensor scales = empty_like_shape(
      x, with_batch(x, swizzle ? std::vector<int64_t>{round_up(rows, 128), round_up(kb, 4)}
                               : std::vector<int64_t>{rows, kb}),
      ScalarType::Byte);
  if (x.numel() == 0) return std::make_tuple(data, scales);  // no scale bytes either
  cudaStream_t stream = current_stream(x);
  uint8_t* data_ptr = static_cast<uint8_t*>(data.mutable_data_ptr());
  uint8_t* scales_ptr = static_cast<uint8_t*>(scales.mutable_data_ptr());

  if (scale_method == "mse") {
    // The search kernels are rowwise only: for axis -2 they run on a materialised
    // x^T (one extra read + write of x), which is by definition the columnwise result.
    Tensor src = colwise ? torch::stable::contiguous(torch::stable::transpose(x, -1, -2))
                         : torch::stable::contiguous(x);
    src = contiguous_aligned(src);
    MxQuantArgs a;
    a.x = src.const_data_ptr();
    a.dtype = in_dtype(x.scalar_type());
    a.batches = batches;
    a.rows = rows;
    a.k = cols;
    a.e2m1 = e2m1;
    a.floor = use_floor;
    a.data = data_ptr;
    a.scales = scales_ptr;
    a.swizzle = swizzle;
    launch_mx_search(a, stream);
    check_launch(op);
    return std::make_tuple(data, scales);
  }

  if (!colwise) {
    const Tensor xc = contiguous_aligned(x);
    dispatch_float(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      mx::RowwiseParams p;
      p.n_vec = xc.numel() / Elem<T>::kPerVec;
      p.batches = batches;
      p.layout = make_layout(batches, rows, kb, swizzle);
      const unsigned grid = grid_cap(ceil_div(p.n_vec, int64_t(kThreads) * kVecPerThread));
      dispatch_elem_rounding(e2m1, use_floor, [&](auto e2m1_c, auto r_c) {
        mx::mx_quantize_rowwise_kernel<T, decltype(e2m1_c)::value, decltype(r_c)::value>
            <<<grid, kThreads, 0, stream>>>(static_cast<const T*>(xc.const_data_ptr()),
                                            data_ptr, scales_ptr, p);
      });
    });
  } else {
    // Reads the row-major x once through 128 x 128-byte shared-memory tiles; no transpose
    // is materialised.
    const Tensor xc = torch::stable::contiguous(x);
    dispatch_float(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      constexpr int64_t TK = mx::kColTileBytes / sizeof(T);
      mx::ColwiseParams p;
      p.batches = batches;
      p.m = m;
      p.k = k;
      p.tiles_m = ceil_div(m, mx::kColTileRows);
      p.tiles_k = ceil_div(k, TK);
      p.mp = round_up(rows, 128);
      p.kp = round_up(kb, 4);
      p.swizzle = swizzle;
      p.vec = (k * int64_t(sizeof(T))) % 16 == 0 && aligned16(xc.const_data_ptr());
      const unsigned grid = grid_cap(batches * p.tiles_m * p.tiles_k);
      dispatch_elem_rounding(e2m1, use_floor, [&](auto e2m1_c, auto r_c) {
        mx::mx_quantize_colwise_kernel<T, decltype(e2m1_c)::value, decltype(r_c)::value>
            <<<grid, kThreads, 0, stream>>>(static_cast<const T*>(xc.const_data_ptr()),
                                            data_ptr, scales_ptr, p);
      });
    });
  }
  check_launch(op);
  return std::make_tuple(data, scales);
}

Tensor mx_dequantize_cuda(Tensor data, Tensor scales, std::string elem, ScalarType out_dtype,
                          bool swizzled) {
  const char* op = kDequantOp;
  check_choice(op, "elem", elem, {"e4m3", "e2m1"});
  const bool e2m1 = elem == "e2m1";
  // uint8 E4M3 bytes are rejected, as the reference validator (the CPU kernel and the
  // fake) does, so that every backend accepts the same inputs: pass data.view(float8_e4m3fn).
  int64_t k;
  if (!e2m1) {
    NVFP4_CHECK(data.scalar_type() == ScalarType::Float8_e4m3fn, op,
                ": data must be torch.float8_e4m3fn for elem='e4m3', got ",
                dtype_str(data.scalar_type()));
    NVFP4_CHECK(data.dim() == 2 || data.dim() == 3, op,
                ": data must be 2-D or 3-D ([M, K] or [B, M, K]), got ", data.dim(),
                "-D shape ", shape_str(data));
    k = data.size(-1);
    NVFP4_CHECK(k % mx::kBlock == 0, op,
                ": K (the last dim of data) must be a multiple of 32, got ", k);
  } else {
    NVFP4_CHECK(data.scalar_type() == ScalarType::Byte, op,
                ": data must be uint8 (two E2M1 codes per byte) for elem='e2m1', got ",
                dtype_str(data.scalar_type()));
    NVFP4_CHECK(data.dim() == 2 || data.dim() == 3, op,
                ": data must be 2-D or 3-D ([M, K/2] or [B, M, K/2]), got ", data.dim(),
                "-D shape ", shape_str(data));
    NVFP4_CHECK(data.size(-1) % (mx::kBlock / 2) == 0, op,
                ": the last dim of data (K/2) must be a multiple of 16, got ", data.size(-1));
    k = data.size(-1) * 2;
  }
  NVFP4_CHECK(scales.scalar_type() == ScalarType::Byte ||
                  scales.scalar_type() == ScalarType::Float8_e8m0fnu,
              op, ": scales must be uint8 or torch.float8_e8m0fnu, got ",
              dtype_str(scales.scalar_type()));
  const int64_t m = data.size(-2), kb = k / mx::kBlock;
  const std::vector<int64_t> want =
      with_batch(data, swizzled ? std::vector<int64_t>{round_up(m, 128), round_up(kb, 4)}
                                : std::vector<int64_t>{m, kb});
  bool shape_ok = scales.dim() == static_cast<int64_t>(want.size());
  for (int64_t d = 0; shape_ok && d < scales.dim(); ++d) shape_ok = scales.size(d) == want[d];
  NVFP4_CHECK(shape_ok, op, ": scales must have shape ", dims_str(want),
              swizzled ? " (swizzled, [..., roundup(M, 128), roundup(K/32, 4)])"
                       : " (linear, [..., M, K/32])",
              ", got ", shape_str(scales));
  NVFP4_CHECK(is_float_input(out_dtype), op,
              ": out_dtype must be torch.float32, torch.float16 or torch.bfloat16, got ",
              dtype_str(out_dtype));
  check_same_device(op, data, "data", scales, "scales");

  torch::stable::accelerator::DeviceGuard guard(data.get_device_index());
  Tensor out = empty_like_shape(data, with_batch(data, {m, k}), out_dtype);
  if (out.numel() == 0) return out;
  const Tensor dc = contiguous_aligned(data);
  const Tensor sc = torch::stable::contiguous(scales);
  const int64_t batches = data.dim() == 3 ? data.size(0) : 1;
  cudaStream_t stream = current_stream(data);
  const uint8_t* dptr = static_cast<const uint8_t*>(dc.const_data_ptr());
  const uint8_t* sptr = static_cast<const uint8_t*>(sc.const_data_ptr());
  dispatch_float(out_dtype, [&](auto tag) {
    using O = decltype(tag);
    mx::DequantParams p;
    p.n_units = out.numel() / Elem<O>::kPerVec;
    p.layout = make_layout(batches, m, kb, swizzled);
    const unsigned grid = grid_cap(ceil_div(p.n_units, int64_t(kThreads) * kVecPerThread));
    O* optr = static_cast<O*>(out.mutable_data_ptr());
    if (e2m1) {
      mx::mx_dequantize_kernel<O, true><<<grid, kThreads, 0, stream>>>(dptr, sptr, optr, p);
    } else {
      mx::mx_dequantize_kernel<O, false><<<grid, kThreads, 0, stream>>>(dptr, sptr, optr, p);
    }
  });
  check_launch(op);
  return out;
}

}  // namespace
}  // namespace nvfp4

STABLE_TORCH_LIBRARY_IMPL(nvfp4, CUDA, m) {
  m.impl("mx_quantize", TORCH_BOX(&nvfp4::mx_quantize_cuda));
  m.impl("mx_dequantize", TORCH_BOX(&nvfp4::mx_dequantize_cuda));
}
