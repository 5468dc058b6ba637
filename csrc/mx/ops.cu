// mx_quantize / mx_dequantize on CUDA: MXFP8 (elem "e4m3") and MXFP4 (elem "e2m1") with
// E8M0 scales per 32 elements (docs/spec.md sec. 3), rowwise (axis -1) and columnwise
// (axis -2, output transposed, read once through shared-memory tiles); mx_quantize_rowcol:
// both MXFP8 casts from one read. Kernels: mx/quantize.cuh, mx/rowcol.cuh; scale_method
// "mse": the fused search of mx/search.cuh. Argument checks
// reproduce, in the same order and with the same text, the Python checks of
// nvfp4_ops/reference (torch_utils.h).

#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "mx/quantize.cuh"
#include "mx/rowcol.cuh"
#include "mx/search.cuh"
#include "torch_utils.h"

namespace nvfp4 {
namespace {

using mx::kThreads;

constexpr const char* kQuantOp = "nvfp4.mx_quantize";
constexpr const char* kDequantOp = "nvfp4.mx_dequantize";
constexpr const char* kRowcolOp = "nvfp4.mx_quantize_rowcol";
constexpr int kVecPerThread = 4;  // the U of the rowwise and dequantize kernels

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
    s.div_kb = FastDiv::make(static_cast<uint32_t>(kb));
    s.div_rows = FastDiv::make(static_cast<uint32_t>(rows));
  }
  return s;
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


// The outputs of the MX cast of the [rows, cols] matrix of each batch of x, blocks of 32
// along cols: data [.., rows, cols] E4M3 (or [.., rows, cols / 2] packed E2M1 uint8) and
// uint8 scales [.., rows, cols / 32] (swizzled: [.., roundup(rows, 128), roundup(cols/32, 4)]).
std::tuple<Tensor, Tensor> mx_outputs(const Tensor& x, int64_t rows, int64_t cols, bool e2m1,
                                      bool swizzle) {
  const int64_t kb = cols / mx::kBlock;
  Tensor data = empty_like_shape(x, with_batch(x, {rows, e2m1 ? cols / 2 : cols}),
                                 e2m1 ? ScalarType::Byte : ScalarType::Float8_e4m3fn);
  Tensor scales = empty_like_shape(
      x, with_batch(x, swizzle ? std::vector<int64_t>{round_up(rows, 128), round_up(kb, 4)}
                               : std::vector<int64_t>{rows, kb}),
      ScalarType::Byte);
  return std::make_tuple(data, scales);
}

// The fused E8M0 scale search (scale_method "mse") + quantize, both element types.
void launch_search(const search::MxSearchParams& p, ScalarType dtype, bool e2m1, bool use_floor,
                   bool swizzle, cudaStream_t stream) {
  if (p.n_blocks == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_elem_rounding(e2m1, use_floor, [&](auto e2m1_c, auto r_c) {
      auto go = [&](auto kernel) {
        // No more CTAs than fit at once (see the NVFP4 search launcher).
        const unsigned grid = grid_for(p.n_blocks, search::kThreads,
                                       resident_ctas(kernel, search::kThreads));
        kernel<<<grid, search::kThreads, 0, stream>>>(p);
      };
      constexpr bool kE2M1 = decltype(e2m1_c)::value;
      constexpr MxRounding kR = decltype(r_c)::value;
      if (swizzle) {
        go(search::mx_mse_search_kernel<T, kE2M1, kR, true>);
      } else {
        go(search::mx_mse_search_kernel<T, kE2M1, kR, false>);
      }
    });
  });
}

std::tuple<Tensor, Tensor> mx_quantize_cuda(Tensor x, std::string elem, std::string rounding,
                                            bool swizzle, int64_t axis,
                                            std::string scale_method) {
  const char* op = kQuantOp;
  check_float_dtype(op, "x", x);
  check_dim_2_or_3(op, "x", x);
  check_choice(op, "elem", elem, {"e4m3", "e2m1"});
  check_choice(op, "rounding", rounding, {"rceil", "floor"});
  check_choice(op, "scale_method", scale_method, {"amax", "mse"});
  const int64_t nd = x.dim();
  NVFP4_CHECK(axis == -1 || axis == -2 || axis == nd - 1 || axis == nd - 2, op,
              ": axis must be -1 or -2 (the last two dims of a ", nd, "-D x), got ", axis);
  const bool colwise = !(axis == -1 || axis == nd - 1);
  if (!colwise) {
    check_multiple(op, "K (the last dim, quantized with axis=-1)", x.size(-1), mx::kBlock);
  } else {
    check_multiple(op, "M (dim -2, quantized with axis=-2)", x.size(-2), mx::kBlock);
  }

  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const bool e2m1 = elem == "e2m1";
  const bool use_floor = rounding == "floor";
  const int64_t batches = nd == 3 ? x.size(0) : 1;
  const int64_t m = x.size(-2), k = x.size(-1);
  // The quantized matrix: [rows, cols] with blocks of 32 along cols (x^T for axis -2).
  const int64_t rows = colwise ? k : m, cols = colwise ? m : k;
  const int64_t kb = cols / mx::kBlock;
  auto [data, scales] = mx_outputs(x, rows, cols, e2m1, swizzle);
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
    search::MxSearchParams sp{};
    sp.x = src.const_data_ptr();
    sp.data = data_ptr;
    sp.scales = scales_ptr;
    sp.batches = batches;
    sp.rows = rows;
    sp.kb = kb;
    sp.mp = round_up(rows, 128);
    sp.kp = round_up(kb, 4);
    sp.n_blocks = batches * rows * kb;
    launch_search(sp, x.scalar_type(), e2m1, use_floor, swizzle, stream);
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
      // Vectors per thread: 2 for MXFP8 with linear scales and 16-bit x, 4 otherwise
      // (measured on an H200, benchmarks/RESULTS.md "fourth part", probe/mx_unroll.sh:
      // 2 is 3-4 % faster there; slower for swizzled scales and for MXFP4).
      const bool two = !e2m1 && !swizzle && sizeof(T) == 2;
      const unsigned grid =
          grid_for(p.n_vec, int64_t(kThreads) * (two ? 2 : 4), int64_t(1) << 30);
      dispatch_elem_rounding(e2m1, use_floor, [&](auto e2m1_c, auto r_c) {
        constexpr bool kE = decltype(e2m1_c)::value;
        constexpr auto kR = decltype(r_c)::value;
        const T* xp = static_cast<const T*>(xc.const_data_ptr());
        if (two) {
          mx::mx_quantize_rowwise_kernel<T, kE, kR, 2>
              <<<grid, kThreads, 0, stream>>>(xp, data_ptr, scales_ptr, p);
        } else {
          mx::mx_quantize_rowwise_kernel<T, kE, kR, 4>
              <<<grid, kThreads, 0, stream>>>(xp, data_ptr, scales_ptr, p);
        }
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
      const unsigned grid = grid_for(batches * p.tiles_m * p.tiles_k, 1, int64_t(1) << 30);
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

// Both MXFP8 casts of x (axis -1 and -2) from one read (mx/rowcol.cuh).
std::tuple<Tensor, Tensor, Tensor, Tensor> mx_quantize_rowcol_cuda(Tensor x, std::string rounding,
                                                                   bool swizzle) {
  const char* op = kRowcolOp;
  check_float_dtype(op, "x", x);
  check_dim_2_or_3(op, "x", x);
  check_choice(op, "rounding", rounding, {"rceil", "floor"});
  check_multiple(op, "K (the last dim, quantized with axis=-1)", x.size(-1), mx::kBlock);
  check_multiple(op, "M (dim -2, quantized with axis=-2)", x.size(-2), mx::kBlock);

  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const int64_t batches = x.dim() == 3 ? x.size(0) : 1;
  const int64_t m = x.size(-2), k = x.size(-1);
  const auto row = mx_outputs(x, m, k, false, swizzle);
  const auto col = mx_outputs(x, k, m, false, swizzle);
  const auto out = std::tuple_cat(row, col);
  if (x.numel() == 0) return out;  // no scale bytes either
  // m, k multiples of 32: every row is 16-byte aligned once the start is.
  const Tensor xc = contiguous_aligned(x);
  cudaStream_t stream = current_stream(x);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    mx::RowcolParams p;
    p.col.batches = batches;
    p.col.m = m;
    p.col.k = k;
    p.col.tiles_m = ceil_div(m, mx::ColTile<T>::TM);
    p.col.tiles_k = ceil_div(k, mx::ColTile<T>::TK);
    p.col.mp = round_up(k, 128);
    p.col.kp = round_up(m / mx::kBlock, 4);
    p.col.swizzle = swizzle;
    p.col.vec = true;
    p.row_mp = round_up(m, 128);
    p.row_kp = round_up(k / mx::kBlock, 4);
    p.div_tiles_k = FastDiv::make(static_cast<uint32_t>(p.col.tiles_k));
    p.div_tiles_m = FastDiv::make(static_cast<uint32_t>(p.col.tiles_m));
    auto go = [&](auto kernel) {
      // Persistent CTAs (no more than fit at once): each prefetches its next tile.
      const unsigned grid = grid_for(batches * p.col.tiles_m * p.col.tiles_k, 1,
                                     resident_ctas(kernel, kThreads));
      kernel<<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(xc.const_data_ptr()),
          static_cast<uint8_t*>(std::get<0>(row).mutable_data_ptr()),
          static_cast<uint8_t*>(std::get<1>(row).mutable_data_ptr()),
          static_cast<uint8_t*>(std::get<0>(col).mutable_data_ptr()),
          static_cast<uint8_t*>(std::get<1>(col).mutable_data_ptr()), p);
    };
    if (rounding == "floor") {
      go(mx::mx_quantize_rowcol_kernel<T, MxRounding::kFloor>);
    } else {
      go(mx::mx_quantize_rowcol_kernel<T, MxRounding::kRceil>);
    }
  });
  check_launch(op);
  return out;
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
                dtype_name(data.scalar_type()));
    check_dim_2_or_3(op, "data", data);
    k = data.size(-1);
    check_multiple(op, "K (the last dim of data)", k, mx::kBlock);
  } else {
    NVFP4_CHECK(data.scalar_type() == ScalarType::Byte, op,
                ": data must be uint8 (two E2M1 codes per byte) for elem='e2m1', got ",
                dtype_name(data.scalar_type()));
    check_dim_2_or_3(op, "data", data, "[M, K/2] or [B, M, K/2]");
    check_multiple(op, "the last dim of data (K/2)", data.size(-1), mx::kBlock / 2);
    k = data.size(-1) * 2;
  }
  NVFP4_CHECK(scales.scalar_type() == ScalarType::Byte ||
                  scales.scalar_type() == ScalarType::Float8_e8m0fnu,
              op, ": scales must be uint8 or torch.float8_e8m0fnu, got ",
              dtype_name(scales.scalar_type()));
  const int64_t m = data.size(-2), kb = k / mx::kBlock;
  const std::vector<int64_t> want =
      with_batch(data, swizzled ? std::vector<int64_t>{round_up(m, 128), round_up(kb, 4)}
                                : std::vector<int64_t>{m, kb});
  check_scales_shape(op, scales, want, swizzled, "K/32");
  check_out_dtype(op, out_dtype);
  check_one_device(op, {{"data", &data}, {"scales", &scales}});

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
    const unsigned grid = grid_for(p.n_units, int64_t(kThreads) * kVecPerThread, int64_t(1) << 30);
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
  m.impl("mx_quantize_rowcol", TORCH_BOX(&nvfp4::mx_quantize_rowcol_cuda));
}
