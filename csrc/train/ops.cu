// The training-recipe ops on CUDA (docs/spec.md sec. 8): train_quantize,
// train_quantize_rowcol, grouped_quantize, mx_grouped_quantize, bit for bit with
// nvfp4_ops/reference/training.py. Kernels: train/quantize.cuh (NVFP4 rowwise / columnwise /
// both, 2-D scales, stochastic rounding, Hadamard), the direct train/rowwise.cuh and
// train/colwise.cuh, train/colwise_smem.cuh (the variants of NVFP4_OPS_TRAIN_KERNEL, listed in
// train/quantize.cuh)
// and train/grouped.cuh (MoE groups).
// Nothing is read back to the host: the seed, the offset, the group offsets and a computed
// global scale stay on the device, so every op can be captured in a CUDA graph. Argument
// errors use the reference's messages (nvfp4_ops/reference/_checks.py, torch_utils.h).

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "nvfp4/ops.h"
#include "torch_utils.h"
#include "train/colwise.cuh"
#include "train/colwise_smem.cuh"
#include "train/grouped.cuh"
#include "train/quantize.cuh"
#include "train/rowwise.cuh"

namespace nvfp4 {
namespace {

using TensorList = std::vector<std::pair<const char*, const Tensor*>>;

// ---- argument checks (the order and the texts of nvfp4_ops/reference/_checks.py) ----------

// "<op>: <name> must be <want>, got shape [..] and dtype <dtype>".
void check_tensor_spec(const char* op, const char* name, const Tensor& t, bool ok,
                       const std::string& want) {
  NVFP4_CHECK(ok, op, ": ", name, " must be ", want, ", got shape ", shape_str(t), " and dtype ",
              dtype_name(t.scalar_type()));
}

// seed / offset: int64 with 1 element with rounding "stochastic", None otherwise.
void check_rng(const char* op, const std::string& rounding, const std::optional<Tensor>& seed,
               const std::optional<Tensor>& offset) {
  const std::pair<const char*, const std::optional<Tensor>*> rng[2] = {{"seed", &seed},
                                                                       {"offset", &offset}};
  for (const auto& [name, t] : rng) {
    if (rounding != "stochastic") {
      NVFP4_CHECK(!t->has_value(), op, ": ", name,
                  " is only used with rounding='stochastic', got a tensor with rounding=",
                  py_repr(rounding));
      continue;
    }
    NVFP4_CHECK(t->has_value(), op, ": rounding='stochastic' needs ", name,
                " (int64 with 1 element), got None");
    const Tensor& v = **t;
    check_tensor_spec(op, name, v, v.scalar_type() == ScalarType::Long && v.numel() == 1,
                      "int64 with 1 element");
  }
}

// Hadamard signs: None or float32 [16].
void check_signs(const char* op, const char* name, const std::optional<Tensor>& signs) {
  if (!signs.has_value()) return;
  const Tensor& s = *signs;
  check_tensor_spec(op, name, s,
                    s.scalar_type() == ScalarType::Float && s.dim() == 1 && s.size(0) == 16,
                    "float32 of shape [16] (entries +1 or -1)");
}

void add_present(TensorList& list, const char* name, const std::optional<Tensor>& t) {
  if (t.has_value()) list.emplace_back(name, &*t);
}

void check_quantized_multiple(const char* op, const Tensor& x, bool colwise) {
  if (!colwise) {
    check_multiple(op, "K (the last dim, quantized with axis=-1)", x.size(-1), 16);
  } else {
    check_multiple(op, "M (dim -2, quantized with axis=-2)", x.size(-2), 16);
  }
}

// check_train_quantize_args; returns whether the operand is columnwise.
bool check_train_quantize(const char* op, const Tensor& x, const std::optional<Tensor>& gs,
                          int64_t axis, const std::string& rounding,
                          const std::optional<Tensor>& seed, const std::optional<Tensor>& offset,
                          const std::optional<Tensor>& signs) {
  check_float_dtype(op, "x", x);
  check_dim_2_or_3(op, "x", x);
  const int64_t nd = x.dim();
  NVFP4_CHECK(axis == -1 || axis == -2 || axis == nd - 1 || axis == nd - 2, op,
              ": axis must be -1 or -2 (the last two dims of a ", nd, "-D x), got ", axis);
  const bool colwise = !(axis == -1 || axis == nd - 1);
  check_quantized_multiple(op, x, colwise);
  if (gs.has_value()) check_global_scale(op, *gs, nd == 3 ? x.size(0) : -1);
  check_choice(op, "rounding", rounding, {"nearest", "stochastic"});
  check_rng(op, rounding, seed, offset);
  check_signs(op, "hadamard_signs", signs);
  TensorList devices = {{"x", &x}};
  add_present(devices, "global_scale", gs);
  add_present(devices, "seed", seed);
  add_present(devices, "offset", offset);
  add_present(devices, "hadamard_signs", signs);
  check_one_device(op, devices);
  return colwise;
}

// _check_grouped: x 2-D [T, K] float, K % block == 0, group_offsets int32/int64 [G], G >= 1.
void check_grouped(const char* op, const Tensor& x, const Tensor& offsets, int64_t block) {
  check_float_dtype(op, "x", x);
  NVFP4_CHECK(x.dim() == 2, op, ": x must be 2-D [T, K] (tokens sorted by group), got ", x.dim(),
              "-D shape ", shape_str(x));
  check_multiple(op, "K (the last dim)", x.size(-1), block);
  const ScalarType t = offsets.scalar_type();
  check_tensor_spec(
      op, "group_offsets", offsets,
      (t == ScalarType::Int || t == ScalarType::Long) && offsets.dim() == 1 && offsets.size(0) >= 1,
      "int32 or int64 of shape [G], G >= 1 (the end row of each group, non-decreasing)");
}

// ---- helpers ------------------------------------------------------------------------------

// A float32 copy [n] of a given global scale on the op's stream (the op's output 3).
Tensor copy_scale(const char* op, const Tensor& like, const Tensor& gs, cudaStream_t stream) {
  const Tensor src = torch::stable::contiguous(gs);
  Tensor out = empty_like_shape(like, {src.numel()}, ScalarType::Float);
  if (src.numel() > 0) {
    check_cuda(op, cudaMemcpyAsync(out.mutable_data_ptr(), src.const_data_ptr(),
                                sizeof(float) * src.numel(), cudaMemcpyDeviceToDevice, stream),
            "cudaMemcpyAsync");
  }
  return out;
}

// A zeroed uint32 [n] scratch tensor (running maxima of abs_bits).
Tensor zeroed_u32(const char* op, const Tensor& like, int64_t n, cudaStream_t stream) {
  Tensor t = empty_like_shape(like, {n}, ScalarType::Int);
  check_cuda(op, cudaMemsetAsync(t.mutable_data_ptr(), 0, sizeof(uint32_t) * n, stream),
          "cudaMemsetAsync");
  return t;
}

void launch_gs_from_amax(const char* op, const uint32_t* amax, float* out, int64_t n,
                         cudaStream_t stream) {
  train::global_scale_from_amax_kernel<<<grid_for(n, 256, 1024), 256, 0, stream>>>(amax, out, n);
  check_launch(op);
}

// ---- train_quantize / train_quantize_rowcol --------------------------------------------------

// What the op asks of one operand (0: rowwise, 1: columnwise).
struct OperandRequest {
  bool active = false;
  std::optional<Tensor> gs;     // given global scale, or None: computed
  std::optional<Tensor> signs;  // Hadamard signs, or None
};

// The outputs of one operand: packed, scales, global scale.
struct OperandOutputs {
  Tensor packed, scales, gs;
};

// The kernel variants of train_quantize / train_quantize_rowcol, chosen per call by the
// environment variable NVFP4_OPS_TRAIN_KERNEL for A/B measurements (train/quantize.cuh's
// header lists them). Every variant gives the same bits.
struct TrainVariant {
  bool direct_rowwise;  // rowwise-only quantize passes on train/rowwise.cuh
  bool direct_colwise;  // nearest 16-bit columnwise and rowcol passes on train/colwise.cuh
  bool direct_sr;       // and the stochastic columnwise-alone ones (train_colwise_sr_kernel)
  bool direct_sr_rowcol;  // and the stochastic rowcol ones
  int depth;            // tile kernel: tiles of loads in flight (1 or 2)
  // The codec kernels of nvfp4/ops.cu where they compute the same bits: the inference
  // quantize for a rowwise nearest pass without transform or 2-D scales, global_scale for
  // a computed global scale of untransformed operands (auto only: the other variants
  // measure their own kernels).
  bool codec = false;
  // The shared-memory staged kernel (train/colwise_smem.cuh) for the nearest columnwise
  // operand alone, before the direct kernels.
  bool smem_colwise = false;
  // train/rowwise.cuh's wide kernel for a nearest pass of the untransformed rowwise operand
  // alone of 16-bit x (2-D scales: 1-D ones take the codec), before the direct kernels.
  bool wide = false;
};

// device: the op's device ("auto" depends on its architecture).
TrainVariant train_variant(const char* op, int device) {
  const char* env = std::getenv("NVFP4_OPS_TRAIN_KERNEL");
  const std::string v = env != nullptr ? env : "";
  if (v.empty() || v == "auto" || v == "smem") {
    // sm_100 / sm_120 code of the direct kernels spills (rowwise 46-70 bytes, rowcol up to
    // 408 / 1608 bytes of stores / loads, with CUDA 13): the tile kernel there until measured
    const int cc = compute_capability(device);
    const int major = cc > 0 ? cc / 10 : 9;  // (a failed query: as sm_90)
    // sm_90: the fastest of each row measured on an H200 (benchmarks/RESULTS.md, "fourth
    // part"): the direct kernels, the SR columnwise kernel for the columnwise operand alone
    // (0.21 vs 0.29 ms at 8192^2) but not for rowcol (0.46 vs 0.42), the tile kernel at depth
    // 1 (depth 2 was slower on every row, amax passes too); "fifth part": the staged
    // columnwise kernel for the nearest columnwise operand alone (0.102 vs 0.137 ms);
    // "seventh part": the wide rowwise kernel for 2-D scales (0.071 vs 0.077 ms). "smem"
    // takes the staged kernel on every architecture.
    TrainVariant a = major >= 10 ? TrainVariant{false, false, false, false, 1, true}
                                 : TrainVariant{true, true, true, false, 1, true};
    a.smem_colwise = major < 10 || v == "smem";
    a.wide = major < 10;
    return a;
  }
  if (v == "tile") return {false, false, false, false, 1};
  if (v == "tile2") return {false, false, false, false, 2};
  if (v == "row") return {true, false, false, false, 1};
  if (v == "direct") return {true, true, false, false, 1};
  if (v == "sr") return {true, true, true, true, 2};
  NVFP4_CHECK(false, op,
              ": NVFP4_OPS_TRAIN_KERNEL must be unset, auto, tile, tile2, row, direct, sr or smem, "
              "got ",
              py_repr(v));
  return {};
}

template <bool kAmaxOnly>
void launch_tiles(const train::TileParams& p, ScalarType dtype, int depth, cudaStream_t stream) {
  const int64_t n_tiles = p.batches * p.tiles_m * p.tiles_k;
  if (n_tiles == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto kernel = depth == 2 ? train::train_quantize_kernel<T, kAmaxOnly, 2>
                             : train::train_quantize_kernel<T, kAmaxOnly, 1>;
    const unsigned grid =
        grid_for(n_tiles, 1, std::max<int64_t>(1, resident_ctas(kernel, train::kThreads)));
    kernel<<<grid, train::kThreads, 0, stream>>>(p);
  });
}

// The item grid of a direct kernel: false where it would have 2^31 items or more.
bool item_grid(int64_t batches, int64_t outer, int64_t inner, train::ItemGrid& g) {
  const int64_t items = batches * outer * inner;
  if (items >= (int64_t(1) << 31)) return false;
  g.items = static_cast<uint32_t>(items);
  g.outer = static_cast<uint32_t>(outer);
  g.inner = static_cast<uint32_t>(inner);
  g.div_outer = FastDiv::make(g.outer);
  g.div_inner = FastDiv::make(g.inner);
  return true;
}

// A direct kernel of `threads` threads (a warp per item) over the items of g, grid-stride
// with the CTAs that are resident at once.
template <typename K>
void launch_direct(K kernel, int threads, const train::TileParams& p, const train::ItemGrid& g,
                   cudaStream_t stream) {
  if (g.items == 0) return;
  const unsigned grid =
      grid_for(g.items, threads / 32, std::max<int64_t>(1, resident_ctas(kernel, threads)));
  kernel<<<grid, threads, 0, stream>>>(p, g);
}

// The direct rowwise kernel for a quantize pass of the rowwise operand alone; false (nothing
// launched) where it does not apply: 16-byte loads impossible, or 2^31 warp items or more.
bool launch_rowwise(const train::TileParams& p, ScalarType dtype, cudaStream_t stream) {
  if (!p.op[0].active || p.op[1].active || !p.vec) return false;
  bool launched = false;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    train::ItemGrid g{};
    launched = item_grid(p.batches, ceil_div(p.m, 16),
                         ceil_div(p.k / 16, train::RowwiseShape<T>::kW), g);
    if (launched) launch_direct(train::train_rowwise_kernel<T>, train::kRowThreads, p, g, stream);
  });
  return launched;
}

// The wide rowwise kernel (train/rowwise.cuh) for a nearest quantize pass of the
// untransformed rowwise operand alone of 16-bit x; false (nothing launched) where it does
// not apply.
bool launch_rowwise_wide(const train::TileParams& p, ScalarType dtype, cudaStream_t stream) {
  if (!p.op[0].active || p.op[1].active || p.op[0].signs != nullptr || !p.vec ||
      p.stochastic || dtype == ScalarType::Float)
    return false;
  train::ItemGrid g{};
  if (!item_grid(p.batches, ceil_div(p.m, train::kWideRows), ceil_div(p.k, train::kWideElems),
                 g))
    return false;
  if (g.items == 0) return true;  // (x has no rows: no scale padding either)
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) == 2) {
      constexpr auto kernel = train::train_rowwise_wide_kernel<T>;
      const unsigned grid =
          grid_for(g.items, 1, std::max<int64_t>(1, resident_ctas(kernel, train::kRowThreads)));
      kernel<<<grid, train::kRowThreads, 0, stream>>>(p, g);
    }
  });
  return true;
}

// The direct columnwise kernels for a quantize pass of 16-bit x that produces the
// columnwise operand, alone or with the rowwise one (rowcol: that one untransformed); with
// stochastic rounding only where sr; false (nothing launched) where they do not apply.
bool launch_colwise(const train::TileParams& p, ScalarType dtype, bool sr, cudaStream_t stream) {
  if (!p.op[1].active || (p.op[0].active && p.op[0].signs != nullptr) || !p.vec ||
      (p.stochastic && !sr) || dtype == ScalarType::Float) {
    return false;
  }
  train::ItemGrid g{};
  const int span = p.stochastic ? train::kColSpanSr : train::kColSpan;
  if (!item_grid(p.batches, ceil_div(p.m, 32), ceil_div(p.k, span), g)) return false;
  const int threads = train::kColThreads;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) == 2) {
      using train::train_colwise_kernel, train::train_colwise_sr_kernel;
      const bool rc = p.op[0].active;
      if (p.stochastic) {
        rc ? launch_direct(train_colwise_sr_kernel<T, true>, threads, p, g, stream)
           : launch_direct(train_colwise_sr_kernel<T, false>, threads, p, g, stream);
      } else {
        rc ? launch_direct(train_colwise_kernel<T, true>, threads, p, g, stream)
           : launch_direct(train_colwise_kernel<T, false>, threads, p, g, stream);
      }
    }
  });
  return true;
}

// The shared-memory staged kernel (train/colwise_smem.cuh) for a quantize pass of the
// columnwise operand alone with round to nearest; false (nothing launched) where it does not
// apply (16-byte loads impossible). Its tiles are mx::ColTile<T>'s (128 rows x 128 bytes), so
// p's tile counts are replaced by theirs.
bool launch_colwise_smem(const char* op, const train::TileParams& p, ScalarType dtype,
                         int device, cudaStream_t stream) {
  if (!p.op[1].active || p.op[0].active || !p.vec || p.stochastic) return false;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    using G = train::SmemTile<T>;
    train::TileParams q = p;
    q.tiles_m = ceil_div(p.m, G::TM);
    q.tiles_k = ceil_div(p.k, G::TK);
    const int64_t n_tiles = q.batches * q.tiles_m * q.tiles_k;
    if (n_tiles == 0) return;  // (no scale padding either: x^T has no rows or no blocks)
    constexpr auto kernel = train::train_colwise_smem_kernel<T>;
    constexpr int kSmem = train::SmemLayout<T>::kBytes;
    // The opt-in to more than 48 KB of dynamic shared memory and the CTAs resident at once,
    // per device and dtype.
    const int64_t slots = smem_kernel_slots<kernel>(op, device, kSmem, [&] {
      return std::max<int64_t>(1, resident_ctas(kernel, train::kThreads, kSmem));
    });
    kernel<<<grid_for(n_tiles, 1, slots), train::kThreads, kSmem, stream>>>(q);
  });
  return true;
}

// Both operands of train_quantize_rowcol, or one of them (train_quantize), from one read of x
// per pass: an amax pass first when a global scale is computed, then the quantize pass.
std::vector<OperandOutputs> train_quantize_run(const char* op, const TrainVariant& variant,
                                               const Tensor& x, const OperandRequest (&req)[2],
                                               bool block_2d, bool stochastic,
                                               const std::optional<Tensor>& seed,
                                               const std::optional<Tensor>& offset, bool swizzle) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor xc = contiguous_aligned(x);
  const cudaStream_t stream = current_stream(xc);
  const int64_t batches = x.dim() == 3 ? x.size(0) : 1;
  const int64_t m = x.size(-2), k = x.size(-1);

  train::TileParams p{};
  p.x = xc.const_data_ptr();
  p.batches = batches;
  p.m = m;
  p.k = k;
  p.tiles_m = ceil_div(m, train::kTile);
  p.tiles_k = ceil_div(k, train::kTile);
  const int64_t elem_bytes = x.scalar_type() == ScalarType::Float ? 4 : 2;
  p.vec = (k * elem_bytes) % 16 == 0 && aligned16(xc.const_data_ptr());
  p.block_2d = block_2d;
  p.swizzle = swizzle;
  p.stochastic = stochastic;

  std::optional<Tensor> seed_c, offset_c, signs_c[2];
  if (stochastic) {
    seed_c = torch::stable::contiguous(*seed);
    offset_c = torch::stable::contiguous(*offset);
    p.seed = static_cast<const int64_t*>(seed_c->const_data_ptr());
    p.offset = static_cast<const int64_t*>(offset_c->const_data_ptr());
  }

  std::vector<OperandOutputs> outs(2);
  bool need_amax = false;
  for (int d = 0; d < 2; ++d) {
    if (!req[d].active) continue;
    const int64_t rows = d ? k : m, cols = d ? m : k;
    train::Operand& o = p.op[d];
    o.active = true;
    o.rows = rows;
    o.kb = cols / 16;
    o.mp = round_up(rows, 128);
    o.kp = round_up(o.kb, 4);
    outs[d].packed = empty_like_shape(xc, with_batch(x, {rows, cols / 2}), ScalarType::Byte);
    outs[d].scales = empty_like_shape(
        xc,
        with_batch(x, swizzle ? std::vector<int64_t>{o.mp, o.kp}
                              : std::vector<int64_t>{rows, o.kb}),
        ScalarType::Float8_e4m3fn);
    o.packed = static_cast<uint8_t*>(outs[d].packed.mutable_data_ptr());
    o.scales = static_cast<uint8_t*>(outs[d].scales.mutable_data_ptr());
    if (req[d].signs.has_value()) {
      signs_c[d] = torch::stable::contiguous(*req[d].signs);
      o.signs = static_cast<const float*>(signs_c[d]->const_data_ptr());
    }
    if (req[d].gs.has_value()) {
      outs[d].gs = copy_scale(op, xc, *req[d].gs, stream);
      o.gs_per_batch = outs[d].gs.numel() != 1;
    } else {
      outs[d].gs = empty_like_shape(xc, {1}, ScalarType::Float);
      need_amax = true;
    }
    o.gs = static_cast<const float*>(outs[d].gs.const_data_ptr());
  }

  bool transformed_amax = false;  // an operand with a computed scale has a transform
  for (int d = 0; d < 2; ++d) {
    transformed_amax |= req[d].active && !req[d].gs.has_value() && req[d].signs.has_value();
  }
  if (need_amax && variant.codec && !transformed_amax) {
    // Untransformed operands: the amax of x (of x^T too) is one global_scale pass.
    const Tensor g = global_scale_of(xc);
    bool first = true;
    for (int d = 0; d < 2; ++d) {
      if (!req[d].active || req[d].gs.has_value()) continue;
      outs[d].gs = first ? g : copy_scale(op, xc, g, stream);  // outputs never alias
      p.op[d].gs = static_cast<const float*>(outs[d].gs.const_data_ptr());
      first = false;
    }
  } else if (need_amax) {
    // The amax of each operand whose scale is computed (after its transform), then
    // gs = 2688 / amax into that operand's output 3, which the quantize pass reads.
    Tensor amax = zeroed_u32(op, xc, 2, stream);
    uint32_t* slots = static_cast<uint32_t*>(amax.mutable_data_ptr());
    train::TileParams pa = p;
    for (int d = 0; d < 2; ++d) {
      pa.op[d].active = req[d].active && !req[d].gs.has_value();
      pa.op[d].amax = slots + d;
    }
    launch_tiles<true>(pa, xc.scalar_type(), variant.depth, stream);
    check_launch(op);
    for (int d = 0; d < 2; ++d) {
      if (pa.op[d].active) {
        launch_gs_from_amax(op, slots + d, static_cast<float*>(outs[d].gs.mutable_data_ptr()), 1,
                            stream);
      }
    }
  }
  const bool direct = (variant.wide && launch_rowwise_wide(p, xc.scalar_type(), stream)) ||
                      (variant.smem_colwise && launch_colwise_smem(op, p, xc.scalar_type(),
                                                                   x.get_device_index(), stream)) ||
                      (variant.direct_rowwise && launch_rowwise(p, xc.scalar_type(), stream)) ||
                      (variant.direct_colwise &&
                       launch_colwise(p, xc.scalar_type(),
                                      p.op[0].active ? variant.direct_sr_rowcol : variant.direct_sr,
                                      stream));
  if (!direct) launch_tiles<false>(p, xc.scalar_type(), variant.depth, stream);
  check_launch(op);
  return outs;
}

// The rowwise operand of a nearest pass without transform or 2-D scales: the same bits as
// the inference quantize (docs/spec.md sec. 8), whose kernel is faster than the training
// kernels on this case (benchmarks/RESULTS.md, "fourth part"). {packed, scales, gs}.
std::tuple<Tensor, Tensor, Tensor> rowwise_codec(const char* op, const Tensor& x,
                                                 const std::optional<Tensor>& global_scale,
                                                 bool swizzle) {
  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor gs = global_scale.has_value()
                        ? copy_scale(op, x, *global_scale, current_stream(x))
                        : global_scale_of(x);
  auto [packed, scales] = quantize_amax(x, gs, swizzle);
  return {packed, scales, gs};
}

std::tuple<Tensor, Tensor, Tensor> train_quantize_cuda(
    Tensor x, std::optional<Tensor> global_scale, int64_t axis, bool block_2d,
    std::string rounding, std::optional<Tensor> seed, std::optional<Tensor> offset,
    std::optional<Tensor> hadamard_signs, bool swizzle) {
  const char* op = "nvfp4.train_quantize";
  const bool colwise =
      check_train_quantize(op, x, global_scale, axis, rounding, seed, offset, hadamard_signs);
  const TrainVariant variant = train_variant(op, x.get_device_index());
  if (!colwise && !block_2d && rounding == "nearest" && !hadamard_signs.has_value() &&
      variant.codec)
    return rowwise_codec(op, x, global_scale, swizzle);
  OperandRequest req[2];
  req[colwise ? 1 : 0] = {true, global_scale, hadamard_signs};
  auto outs = train_quantize_run(op, variant, x, req, block_2d, rounding == "stochastic", seed,
                                 offset, swizzle);
  const OperandOutputs& o = outs[colwise ? 1 : 0];
  return {o.packed, o.scales, o.gs};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> train_quantize_rowcol_cuda(
    Tensor x, std::optional<Tensor> global_scale, std::optional<Tensor> colwise_global_scale,
    bool block_2d, std::string rounding, std::optional<Tensor> seed,
    std::optional<Tensor> offset, std::optional<Tensor> colwise_hadamard_signs, bool swizzle) {
  const char* op = "nvfp4.train_quantize_rowcol";
  // check_train_quantize_rowcol_args: the rowwise checks, then the columnwise ones.
  check_train_quantize(op, x, global_scale, -1, rounding, seed, offset, std::nullopt);
  if (colwise_global_scale.has_value()) {
    check_global_scale(op, *colwise_global_scale, x.dim() == 3 ? x.size(0) : -1);
  }
  check_quantized_multiple(op, x, true);
  check_signs(op, "colwise_hadamard_signs", colwise_hadamard_signs);
  TensorList devices = {{"x", &x}};
  add_present(devices, "colwise_global_scale", colwise_global_scale);
  add_present(devices, "colwise_hadamard_signs", colwise_hadamard_signs);
  check_one_device(op, devices);

  const TrainVariant variant = train_variant(op, x.get_device_index());
  OperandRequest req[2];
  req[0] = {true, global_scale, std::nullopt};
  req[1] = {true, colwise_global_scale, colwise_hadamard_signs};
  if (rounding == "nearest" && variant.codec && variant.smem_colwise &&
      (!block_2d || variant.direct_rowwise)) {
    // Two passes, the same bits: the inference quantize (2-D scales: train_quantize_run's
    // rowwise kernel, the wide one in "auto") for the rowwise operand and the staged
    // columnwise kernel; 1-D 0.160 vs 0.197 ms from one read at 8192^2 on the H200
    // (benchmarks/RESULTS.md, "fifth part"), 2-D 0.138 vs 0.204 ms ("seventh part"). An
    // untransformed columnwise operand with a computed scale takes the rowwise one's (the
    // same amax).
    Tensor packed, scales, gs;
    if (block_2d) {
      const OperandRequest row[2] = {req[0], {}};
      auto r = train_quantize_run(op, variant, x, row, true, false, seed, offset, swizzle);
      packed = r[0].packed;
      scales = r[0].scales;
      gs = r[0].gs;
    } else {
      std::tie(packed, scales, gs) = rowwise_codec(op, x, global_scale, swizzle);
    }
    req[0].active = false;
    if (!req[1].gs.has_value() && !req[1].signs.has_value() && !global_scale.has_value())
      req[1].gs = gs;
    auto outs = train_quantize_run(op, variant, x, req, block_2d, false, seed, offset, swizzle);
    return {packed, scales, gs, outs[1].packed, outs[1].scales, outs[1].gs};
  }
  auto outs = train_quantize_run(op, variant, x, req, block_2d, rounding == "stochastic", seed,
                                 offset, swizzle);
  return {outs[0].packed, outs[0].scales, outs[0].gs, outs[1].packed, outs[1].scales, outs[1].gs};
}

// ---- grouped (MoE) quantize ------------------------------------------------------------------

// The per-row group bookkeeping of a grouped quantize, on the device.
struct RowGroups {
  Tensor row_group, row_dest;
};

template <typename I>
RowGroups row_groups_t(const char* op, const Tensor& x, const Tensor& offsets,
                       cudaStream_t stream) {
  const int64_t rows = x.size(0), groups = offsets.size(0);
  RowGroups r;
  r.row_group = empty_like_shape(x, {rows}, ScalarType::Int);
  r.row_dest = empty_like_shape(x, {rows}, ScalarType::Long);
  if (rows == 0) return r;
  const I* ends = static_cast<const I*>(offsets.const_data_ptr());
  int32_t* row_group = static_cast<int32_t*>(r.row_group.mutable_data_ptr());
  int64_t* row_dest = static_cast<int64_t*>(r.row_dest.mutable_data_ptr());
  const unsigned grid = grid_for(rows, 256, 4096);
  if (groups <= train::kLocalGroups) {
    const size_t smem = static_cast<size_t>(2 * groups) * sizeof(int64_t);
    train::row_groups_kernel<I, true><<<grid, 256, smem, stream>>>(ends, groups, nullptr, rows,
                                                                   row_group, row_dest);
  } else {
    const Tensor pstart = empty_like_shape(x, {groups}, ScalarType::Long);
    int64_t* ps = static_cast<int64_t*>(pstart.mutable_data_ptr());
    train::group_starts_kernel<I><<<1, 1, 0, stream>>>(ends, groups, ps);
    check_launch(op);
    train::row_groups_kernel<I, false><<<grid, 256, 0, stream>>>(ends, groups, ps, rows,
                                                                 row_group, row_dest);
  }
  check_launch(op);
  return r;
}

RowGroups row_groups(const char* op, const Tensor& x, const Tensor& offsets, cudaStream_t stream) {
  return offsets.scalar_type() == ScalarType::Int ? row_groups_t<int32_t>(op, x, offsets, stream)
                                                  : row_groups_t<int64_t>(op, x, offsets, stream);
}

// The common part of both grouped ops: data [T, k or k / 2], scales (zeroed when swizzled),
// the row bookkeeping and the kernel parameters (gs left to the caller).
struct GroupedSetup {
  Tensor xc, data, scales;
  RowGroups groups;
  std::optional<Tensor> ends;  // the contiguous offsets (without the row table)
  train::GroupedParams p{};
  cudaStream_t stream{};
};

// row_table: the per-row group table (row_groups); without it (MX with linear scales) the
// kernel reads the last end only.
GroupedSetup grouped_setup(const char* op, const Tensor& x, const Tensor& offsets, int64_t block,
                           bool e2m1_data, ScalarType data_dtype, ScalarType scale_dtype,
                           bool swizzle, bool row_table = true) {
  GroupedSetup s;
  s.xc = contiguous_aligned(x);
  s.stream = current_stream(s.xc);
  const Tensor oc = torch::stable::contiguous(offsets);
  const int64_t rows = x.size(0), k = x.size(1), groups = offsets.size(0);
  const int64_t kb = k / block, kp = round_up(kb, 4);
  // rows of the swizzled scales: roundup(T, 128) + 128 G (reference grouped_scale_rows)
  const int64_t scale_rows = round_up(rows, 128) + 128 * groups;
  s.data = empty_like_shape(s.xc, {rows, e2m1_data ? k / 2 : k}, data_dtype);
  s.scales = empty_like_shape(
      s.xc, swizzle ? std::vector<int64_t>{scale_rows, kp} : std::vector<int64_t>{rows, kb},
      scale_dtype);
  if (swizzle && s.scales.numel() > 0) {  // the padding and the rows of no group stay 0
    check_cuda(op, cudaMemsetAsync(s.scales.mutable_data_ptr(), 0, s.scales.numel(), s.stream),
            "cudaMemsetAsync");
  }
  train::GroupedParams& p = s.p;
  if (row_table) {
    s.groups = row_groups(op, s.xc, oc, s.stream);
    p.row_group = static_cast<const int32_t*>(s.groups.row_group.const_data_ptr());
    p.row_dest = static_cast<const int64_t*>(s.groups.row_dest.const_data_ptr());
  } else {
    s.ends = oc;
    if (oc.scalar_type() == ScalarType::Int) {
      p.ends32 = static_cast<const int32_t*>(oc.const_data_ptr());
    } else {
      p.ends64 = static_cast<const int64_t*>(oc.const_data_ptr());
    }
  }
  p.x = s.xc.const_data_ptr();
  p.rows = rows;
  p.k = k;
  p.groups = groups;
  const int64_t per_vec = x.scalar_type() == ScalarType::Float ? 4 : 8;
  p.vec_per_row = k / per_vec;
  p.n_vec = rows * p.vec_per_row;
  p.fast = p.n_vec < (int64_t(1) << 31) && p.vec_per_row > 0;
  if (p.fast) p.div_vpr = FastDiv::make(static_cast<uint32_t>(p.vec_per_row));
  p.data = static_cast<uint8_t*>(s.data.mutable_data_ptr());
  p.scales = static_cast<uint8_t*>(s.scales.mutable_data_ptr());
  p.kb = kb;
  p.kp = kp;
  p.scale_rows = scale_rows;
  p.swizzle = swizzle;
  return s;
}

template <typename T, train::GroupedFormat F, MxRounding R>
void launch_grouped_t(const train::GroupedParams& p, cudaStream_t stream) {
  if (p.n_vec == 0) return;
  const unsigned grid = grid_for(p.n_vec, int64_t(train::kGroupedThreads) * train::kGroupedUnroll,
                                 int64_t(1) << 30);
  if constexpr (F == train::GroupedFormat::kNvfp4) {
    train::grouped_nvfp4_kernel<T><<<grid, train::kGroupedThreads, 0, stream>>>(p);
  } else {
    train::grouped_quantize_kernel<T, F, R><<<grid, train::kGroupedThreads, 0, stream>>>(p);
  }
}

std::tuple<Tensor, Tensor, Tensor> grouped_quantize_cuda(Tensor x, Tensor group_offsets,
                                                         std::optional<Tensor> global_scale,
                                                         bool swizzle) {
  const char* op = "nvfp4.grouped_quantize";
  check_grouped(op, x, group_offsets, 16);
  const int64_t groups = group_offsets.size(0);
  if (global_scale.has_value()) {
    const Tensor& g = *global_scale;
    check_tensor_spec(op, "global_scale", g,
                      g.scalar_type() == ScalarType::Float && g.dim() == 1 && g.size(0) == groups,
                      "float32 of shape [G] = [" + std::to_string(groups) + "] (one per group)");
  }
  TensorList devices = {{"x", &x}, {"group_offsets", &group_offsets}};
  add_present(devices, "global_scale", global_scale);
  check_one_device(op, devices);

  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  GroupedSetup s = grouped_setup(op, x, group_offsets, 16, true, ScalarType::Byte,
                                 ScalarType::Float8_e4m3fn, swizzle);
  Tensor gs;
  if (global_scale.has_value()) {
    gs = copy_scale(op, s.xc, *global_scale, s.stream);
  } else {
    // one amax per group (a warp per row), then gs = 2688 / amax (1 for an empty group)
    gs = empty_like_shape(s.xc, {groups}, ScalarType::Float);
    Tensor amax = zeroed_u32(op, s.xc, groups, s.stream);
    uint32_t* slots = static_cast<uint32_t*>(amax.mutable_data_ptr());
    if (s.p.rows > 0) {
      dispatch_float(x.scalar_type(), [&](auto tag) {
        using T = decltype(tag);
        const unsigned grid = grid_for(s.p.rows, train::kGroupedThreads / 32,
                                       16LL * sm_count(s.xc.get_device_index()));
        train::group_amax_kernel<T><<<grid, train::kGroupedThreads, 0, s.stream>>>(
            static_cast<const T*>(s.p.x), s.p.rows, s.p.k, s.p.row_group, groups, slots);
      });
      check_launch(op);
    }
    launch_gs_from_amax(op, slots, static_cast<float*>(gs.mutable_data_ptr()), groups, s.stream);
  }
  s.p.gs = static_cast<const float*>(gs.const_data_ptr());
  dispatch_float(x.scalar_type(), [&](auto tag) {
    launch_grouped_t<decltype(tag), train::GroupedFormat::kNvfp4, MxRounding::kRceil>(s.p,
                                                                                     s.stream);
  });
  check_launch(op);
  return {s.data, s.scales, gs};
}

std::tuple<Tensor, Tensor> mx_grouped_quantize_cuda(Tensor x, Tensor group_offsets,
                                                    std::string elem, std::string rounding,
                                                    bool swizzle) {
  const char* op = "nvfp4.mx_grouped_quantize";
  check_grouped(op, x, group_offsets, 32);
  check_choice(op, "elem", elem, {"e4m3", "e2m1"});
  check_choice(op, "rounding", rounding, {"rceil", "floor"});
  check_one_device(op, {{"x", &x}, {"group_offsets", &group_offsets}});

  torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const bool e2m1 = elem == "e2m1";
  GroupedSetup s = grouped_setup(op, x, group_offsets, 32, e2m1,
                                 e2m1 ? ScalarType::Byte : ScalarType::Float8_e4m3fn,
                                 ScalarType::Byte, swizzle, /*row_table=*/swizzle);
  const bool use_floor = rounding == "floor";
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using train::GroupedFormat;
    if (e2m1) {
      use_floor ? launch_grouped_t<T, GroupedFormat::kMxE2m1, MxRounding::kFloor>(s.p, s.stream)
                : launch_grouped_t<T, GroupedFormat::kMxE2m1, MxRounding::kRceil>(s.p, s.stream);
    } else {
      use_floor ? launch_grouped_t<T, GroupedFormat::kMxE4m3, MxRounding::kFloor>(s.p, s.stream)
                : launch_grouped_t<T, GroupedFormat::kMxE4m3, MxRounding::kRceil>(s.p, s.stream);
    }
  });
  check_launch(op);
  return {s.data, s.scales};
}

}  // namespace
}  // namespace nvfp4

STABLE_TORCH_LIBRARY_IMPL(nvfp4, CUDA, m) {
  m.impl("train_quantize", TORCH_BOX(&nvfp4::train_quantize_cuda));
  m.impl("train_quantize_rowcol", TORCH_BOX(&nvfp4::train_quantize_rowcol_cuda));
  m.impl("grouped_quantize", TORCH_BOX(&nvfp4::grouped_quantize_cuda));
  m.impl("mx_grouped_quantize", TORCH_BOX(&nvfp4::mx_grouped_quantize_cuda));
}
