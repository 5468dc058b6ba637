// CUDA launchers of nvfp4.gemm_nvfp4_w4a16, nvfp4.gemm_nvfp4_w4a16_prepacked and
// nvfp4.gemm_mx_w16 (schemas in csrc/registration.cpp; the kernel and its design in
// w16_gemm.cuh, measurements in NOTES.md). The argument checks raise the texts of
// nvfp4_ops/reference/_checks.py (check_gemm_*), in the same order. prepack / unprepack have
// no CUDA kernel: they are byte moves, and the reference serves them on every device.

#include "gemm/w16_gemm.cuh"
#include "gemm/wgmma.cuh"
#include "torch_utils.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <optional>

namespace nvfp4 {
namespace gemm {
namespace {

constexpr const char* kOp = "nvfp4.gemm_nvfp4_w4a16";
constexpr const char* kOpPrepacked = "nvfp4.gemm_nvfp4_w4a16_prepacked";
constexpr const char* kOpMx = "nvfp4.gemm_mx_w16";

// _check_gemm_x
void check_x(const char* op, const Tensor& x) {
  const ScalarType xt = x.scalar_type();
  NVFP4_CHECK(xt == ScalarType::Half || xt == ScalarType::BFloat16, op,
              ": x must be float16 or bfloat16, got ", dtype_name(xt));
  NVFP4_CHECK(x.dim() >= 1, op, ": x must have at least 1 dim ([..., K]), got 0-D");
}

void check_k_positive(const char* op, int64_t K) {
  NVFP4_CHECK(K > 0, op, ": K must be > 0, got ", K);
}

// bias: None or [N] of x's dtype (_check_bias).
void check_bias(const char* op, const Tensor& x, const std::optional<Tensor>& bias, int64_t N) {
  if (!bias.has_value()) return;
  const Tensor& b = *bias;
  NVFP4_CHECK(b.dim() == 1 && b.size(0) == N && b.scalar_type() == x.scalar_type(), op,
              ": bias must be None or of shape [N] = [", N, "] and dtype ",
              dtype_name(x.scalar_type()), ", got shape ", shape_str(b), " and dtype ",
              dtype_name(b.scalar_type()));
}

// The global scale, bias None or [N] of x's dtype, every tensor on one device.
void check_bias_devices(const char* op, const Tensor& x, const Tensor& packed,
                        const Tensor& scales, const Tensor& gs, const std::optional<Tensor>& bias,
                        int64_t N) {
  check_global_scale(op, gs, -1);
  check_bias(op, x, bias, N);
  if (bias.has_value())
    check_one_device(op, {{"x", &x}, {"packed", &packed}, {"scales", &scales},
                          {"global_scale", &gs}, {"bias", &*bias}});
  else
    check_one_device(op, {{"x", &x}, {"packed", &packed}, {"scales", &scales},
                          {"global_scale", &gs}});
}

// check_gemm_nvfp4_w4a16_args (its _check_nvfp4_weight inlined)
void check_args(const Tensor& x, const Tensor& packed, const Tensor& scales, const Tensor& gs,
                const std::optional<Tensor>& bias) {
  const char* op = kOp;
  check_x(op, x);
  NVFP4_CHECK(packed.scalar_type() == ScalarType::Byte, op,
              ": packed must be uint8 (two E2M1 codes per byte), got ",
              dtype_name(packed.scalar_type()));
  NVFP4_CHECK(packed.dim() == 2, op, ": packed must be 2-D [N, K/2], got ", packed.dim(),
              "-D shape ", shape_str(packed));
  const int64_t N = packed.size(0), Kh = packed.size(1);
  check_multiple(op, "the last dim of packed (K/2)", Kh, 8);
  check_k_positive(op, 2 * Kh);
  NVFP4_CHECK(x.size(-1) == 2 * Kh, op,
              ": the last dim of x (K) must equal 2 * packed.shape[1] = ", 2 * Kh, ", got ",
              x.size(-1));
  NVFP4_CHECK(scales.scalar_type() == ScalarType::Float8_e4m3fn, op,
              ": scales must be torch.float8_e4m3fn, got ", dtype_name(scales.scalar_type()));
  check_scales_shape(op, scales, {N, Kh / 8}, false, "K/16");
  check_bias_devices(op, x, packed, scales, gs, bias, N);
}

bool has_shape(const Tensor& t, const std::vector<int64_t>& want) {
  if (t.dim() != static_cast<int64_t>(want.size())) return false;
  for (size_t i = 0; i < want.size(); ++i)
    if (t.size(static_cast<int64_t>(i)) != want[i]) return false;
  return true;
}

// _check_prepacked_weight: the shapes of prepack_nvfp4_w4a16's outputs for [n, K].
void check_prepacked_weight(const char* op, const Tensor& packed, const Tensor& scales,
                            int64_t n, int64_t K) {
  const std::vector<int64_t> wp{ceil_div(n, 16), ceil_div(K, kSuperK), 16, kSuperK / 2};
  const std::vector<int64_t> sp{ceil_div(n, 16), ceil_div(K, kSuperK), 16, kSuperK / 16};
  NVFP4_CHECK(packed.scalar_type() == ScalarType::Byte && has_shape(packed, wp), op,
              ": packed must be uint8 of shape [ceil(n/16), ceil(K/512), 16, 256] = ",
              dims_str(wp), " (nvfp4.prepack_nvfp4_w4a16), got shape ", shape_str(packed),
              " and dtype ", dtype_name(packed.scalar_type()));
  NVFP4_CHECK(scales.scalar_type() == ScalarType::Float8_e4m3fn && has_shape(scales, sp), op,
              ": scales must be torch.float8_e4m3fn of shape [ceil(n/16), ceil(K/512), 16, 32] = ",
              dims_str(sp), " (nvfp4.prepack_nvfp4_w4a16), got shape ", shape_str(scales),
              " and dtype ", dtype_name(scales.scalar_type()));
}

// check_gemm_nvfp4_w4a16_prepacked_args
void check_prepacked_args(const Tensor& x, const Tensor& packed, const Tensor& scales,
                          const Tensor& gs, int64_t n, const std::optional<Tensor>& bias) {
  const char* op = kOpPrepacked;
  check_x(op, x);
  const int64_t K = x.size(-1);
  check_multiple(op, "the last dim of x (K)", K, 16);
  check_k_positive(op, K);
  NVFP4_CHECK(n > 0, op, ": n must be > 0, got ", n);
  check_prepacked_weight(op, packed, scales, n, K);
  check_bias_devices(op, x, packed, scales, gs, bias, n);
}

// WG: the wgmma kernel (wgmma.cuh; NVFP4 with K % 128 == 0, plain or prepacked, or MXFP4 /
// MXFP8 with K % 512 == 0; 8 * NT = 64 or 128 tokens per CTA).
template <typename T, int FMT, int NT, bool ALIGNED, bool PREPACKED, bool WG = false>
void launch(const char* op, Params p, int device, cudaStream_t stream, const Tensor& like) {
  using C = Config<NT>;
  static_assert(!WG || ((NT == 8 || NT == 16) && ALIGNED), "wgmma: 64 or 128 tokens");
  constexpr auto kernel = [] {
    if constexpr (WG) return w16_wgmma_kernel<T, FMT, PREPACKED, 8 * NT>;
    else return w16_gemm_kernel<T, FMT, NT, ALIGNED, PREPACKED>;
  }();
  // XPRE reserves its largest size here; a launch uses tokens * x_stride of it.
  constexpr int kSmemMax = WG ? kWgSmem : C::kXPre ? kXPreSmem<FMT, NT> : C::kSmemBytes;
  // The shared-memory opt-in and the CTA slots of one wave, per device and instantiation.
  const int64_t slots = smem_kernel_slots<kernel>(op, device, kSmemMax, [&] {
    int per_sm = 0;
    check_cuda(op,
               cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads,
                                                             kSmemMax),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    return int64_t(sm_count(device)) * std::max(per_sm, 1);
  });
  const int64_t n_tiles = ceil_div(p.N, kRowsPerCta), m_tiles = ceil_div(p.M, C::kTokens);
  const int64_t tiles = n_tiles * m_tiles;
  const int64_t tokens = std::min<int64_t>(C::kTokens, p.M);
  // XPRE: the bytes per token of a split of sps steps (== 64 mod 128: the B fragment reads of
  // the 8 tokens of a tile stay free of bank conflicts, as in a ring stage).
  auto x_stride = [](int64_t sps) { return sps * kTokenBytes + (sps % 2 == 0 ? 64 : 0); };
  // Split-K rule (deterministic per shape and device): each split is a whole number of
  // 512-wide K steps; pick the split count whose estimated time, waves of CTAs times the
  // steps of one CTA plus one step of fixed cost, is least (ties: fewer splits). XPRE: only
  // splits whose activations fit in kXPreMaxSmem.
  int64_t best_cost = INT64_MAX, best_sps = 1;
  for (int64_t s = 1; s <= std::min<int64_t>(p.steps, 65535); ++s) {  // (gridDim.y)
    const int64_t sps = ceil_div(p.steps, s);
    if (s > 1 && sps == ceil_div(p.steps, s - 1)) continue;  // the same split as s - 1
    if (C::kXPre && tokens * x_stride(sps) > kXPreSmem<FMT, NT>) continue;
    const int64_t waves = ceil_div(tiles * ceil_div(p.steps, sps), slots);
    const int64_t cost = waves * (sps + 1);
    if (cost < best_cost) best_cost = cost, best_sps = sps;
  }
  p.steps_per_split = static_cast<int>(best_sps);
  p.splits = static_cast<int>(ceil_div(p.steps, best_sps));
  p.x_stride = static_cast<int>(x_stride(best_sps));
  const int smem = WG ? kWgSmem : C::kXPre ? static_cast<int>(tokens * p.x_stride) : C::kSmemBytes;
  Tensor work = like;  // keeps the workspace alive until the launch is queued
  if (p.splits > 1) {
    const int64_t n_part = int64_t(p.splits) * p.M * p.N;
    p.tickets = zeroed_slots(op, device, stream, tiles);
    work = empty_like_shape(like, {n_part + (p.tickets ? 0 : tiles)}, ScalarType::Float);
    p.partials = static_cast<float*>(work.mutable_data_ptr());
    if (!p.tickets) {
      p.tickets = reinterpret_cast<int*>(p.partials + n_part);
      check_cuda(op, cudaMemsetAsync(p.tickets, 0, tiles * sizeof(int), stream),
                 "cudaMemsetAsync");
    }
  }
  // x rearranged once per call into xp (alive until the GEMM is queued), which the kernel
  // then reads: `elems` elements, `items` grid-stride items of the rearranging kernel, which
  // `run(grid, x, xp)` launches.
  Tensor xp = like;
  const auto rearrange_x = [&](int64_t elems, int64_t items, auto run) {
    xp = empty_like_shape(like, {elems}, like.scalar_type());
    run(grid_for(items, kThreads, int64_t(sm_count(device)) * 8),
        static_cast<const uint4*>(p.x), static_cast<uint4*>(xp.mutable_data_ptr()));
    check_launch(op);
    p.x = xp.const_data_ptr();
  };
  if constexpr (WG) {  // the wgmma B layout (wgmma_x_kernel): 16 units per token and step
    // the tokens of a chunk row of the rearranged x: padded to whole tiles for the bulk
    // copies of the 128-token tile
    p.x_stride = static_cast<int>(NT == 16 ? m_tiles * C::kTokens : p.M);
    const int64_t units = int64_t(p.x_stride) * p.steps * 16;
    rearrange_x(units * 4 * 8, units, [&](unsigned grid, const uint4* x, uint4* out) {
      wgmma_x_kernel<FMT><<<grid, kThreads, 0, stream>>>(x, out, p.M, p.x_stride, p.K, p.steps);
    });
  } else if constexpr (!C::kXPre) {  // the ring path: each 16-byte chunk permuted
    const int64_t n16 = int64_t(p.M) * p.K / 8;
    rearrange_x(n16 * 8, n16, [&](unsigned grid, const uint4* x, uint4* out) {
      permute_x_kernel<FMT><<<grid, kThreads, 0, stream>>>(x, out, n16);
    });
  }
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.splits));
  kernel<<<grid, kThreads, smem, stream>>>(p);
  check_launch(op);
}

// The wgmma kernel serves `device`: an sm_90 GPU, a build holding sm_90a code, and not
// switched off (NVFP4_OPS_GEMM_WGMMA=0: the mma.sync kernel, for A/B measurements).
bool wgmma_serves(int device) {
  static const bool on = [] {
    const char* e = std::getenv("NVFP4_OPS_GEMM_WGMMA");
    return std::strstr(NVFP4_OPS_ARCHS, "sm_90a") != nullptr &&
           !(e != nullptr && std::string(e) == "0");
  }();
  return on && compute_capability(device) == 90;
}

// NVFP4 (K % 128 == 0) and MXFP4 (K % 512 == 0) with M > 32, MXFP8 (K % 512 == 0) with
// M > 16: the wgmma kernel where it serves. Otherwise the mma.sync kernel, tokens per CTA
// (8 * NT) by M; NVFP4: the prepacked weight, or the plain one with 16-byte code loads
// (K % 128 == 0) or 8-byte ones. MX: whole-step scale loads when K % 512 == 0; MXFP8 has no
// 32-token tile (M 17..32 takes the 64-token one: fewer instantiations to build).
template <typename T, int FMT>
void dispatch(const char* op, const Params& p, bool prepacked, int device, cudaStream_t stream,
              const Tensor& like) {
  const bool aligned = p.K % (FMT == kNvfp4 ? 128 : kSuperK) == 0;
  // (prepacked: also only when K % 128 == 0, so that both layouts give the same bits)
  // MXFP8 from M = 17 (its mma.sync kernel has no 32-token tile)
  if (p.M > (FMT == kMxfp8 ? 16 : 32) && aligned && wgmma_serves(device)) {
    // 64 tokens per CTA up to M = 64, 128 above (the weights converted once per 128)
    // (M = 128..512 as 64-token tiles measured 1.1-1.4x slower: RESULTS "fifth part")
    const bool t128 = p.M > 64;
    if constexpr (FMT == kNvfp4) {
      if (prepacked) {
        if (t128) launch<T, FMT, 16, true, true, true>(op, p, device, stream, like);
        else launch<T, FMT, 8, true, true, true>(op, p, device, stream, like);
        return;
      }
    }
    if (t128) launch<T, FMT, 16, true, false, true>(op, p, device, stream, like);
    else launch<T, FMT, 8, true, false, true>(op, p, device, stream, like);
    return;
  }
  // (M = 33..64 as two 32-token tiles at 2 CTAs per SM measured 5-12 % slower than one
  // 64-token tile: benchmarks/RESULTS.md, "fifth part")
  const int m = std::min(p.M, 64);
#define NVFP4_GEMM_CASE(NT)                                                                  \
  if (FMT == kNvfp4 && prepacked) launch<T, FMT, NT, true, FMT == kNvfp4>(op, p, device, stream, like); \
  else if (aligned) launch<T, FMT, NT, true, false>(op, p, device, stream, like);             \
  else launch<T, FMT, NT, false, false>(op, p, device, stream, like);
  if (m <= 8) {
    NVFP4_GEMM_CASE(1)
  } else if (m <= 16) {
    NVFP4_GEMM_CASE(2)
  } else if (m > 32 || !kE2m1<FMT>) {
    NVFP4_GEMM_CASE(8)
  } else if constexpr (kE2m1<FMT>) {  // (no MXFP8 instantiation of the 32-token tile)
    NVFP4_GEMM_CASE(4)
  }
#undef NVFP4_GEMM_CASE
}

// y[..., N] for checked arguments; K from x. gs: NVFP4 only.
template <int FMT>
Tensor run(const char* op, const Tensor& x, const Tensor& packed, const Tensor& scales,
           const Tensor* gs, const std::optional<Tensor>& bias, int64_t N, bool prepacked) {
  const int64_t K = x.size(-1);
  std::vector<int64_t> out_sizes;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) out_sizes.push_back(x.size(d));
  out_sizes.push_back(N);
  Tensor y = empty_like_shape(x, out_sizes, x.scalar_type());
  if (y.numel() == 0) return y;  // M == 0 or N == 0 (a weight of 0 rows)
  const int64_t M = y.numel() / N;
  NVFP4_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, op,
              ": M, N and K must each fit in int32, got M=", M, ", N=", N, ", K=", K);
  const Tensor xc = contiguous_aligned(x);
  const Tensor wc = contiguous_aligned(packed);
  const Tensor sc = contiguous_aligned(scales);
  const Tensor gc = gs ? torch::stable::contiguous(*gs) : xc;
  std::optional<Tensor> bc;
  if (bias.has_value()) bc = torch::stable::contiguous(*bias);
  Params p{};
  p.x = xc.const_data_ptr();
  p.w = static_cast<const uint8_t*>(wc.const_data_ptr());
  p.sf = static_cast<const uint8_t*>(sc.const_data_ptr());
  p.gs = gs ? static_cast<const float*>(gc.const_data_ptr()) : nullptr;
  p.bias = bc.has_value() ? bc->const_data_ptr() : nullptr;
  p.y = y.mutable_data_ptr();
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.steps = static_cast<int>(ceil_div(K, kSuperK));
  p.row_groups = static_cast<int>(ceil_div(N, 16));
  const int device = x.get_device_index();
  const cudaStream_t stream = current_stream(x);
  if (x.scalar_type() == ScalarType::Half)
    dispatch<__half, FMT>(op, p, prepacked, device, stream, xc);
  else
    dispatch<__nv_bfloat16, FMT>(op, p, prepacked, device, stream, xc);
  return y;
}

Tensor gemm_nvfp4_w4a16_cuda(Tensor x, Tensor packed, Tensor scales, Tensor global_scale,
                             std::optional<Tensor> bias) {
  check_args(x, packed, scales, global_scale, bias);
  return run<kNvfp4>(kOp, x, packed, scales, &global_scale, bias, packed.size(0), false);
}

Tensor gemm_nvfp4_w4a16_prepacked_cuda(Tensor x, Tensor packed, Tensor scales,
                                       Tensor global_scale, int64_t n,
                                       std::optional<Tensor> bias) {
  check_prepacked_args(x, packed, scales, global_scale, n, bias);
  return run<kNvfp4>(kOpPrepacked, x, packed, scales, &global_scale, bias, n, true);
}

// check_gemm_mx_w16_args
void check_mx_args(const Tensor& x, const Tensor& data, const Tensor& scales,
                   const std::string& elem, const std::optional<Tensor>& bias) {
  const char* op = kOpMx;
  check_x(op, x);
  check_choice(op, "elem", elem, {"e4m3", "e2m1"});
  const bool fp8 = elem == "e4m3";
  const ScalarType dt = data.scalar_type();
  if (fp8)
    NVFP4_CHECK(dt == ScalarType::Float8_e4m3fn, op,
                ": data must be torch.float8_e4m3fn for elem='e4m3', got ", dtype_name(dt));
  else
    NVFP4_CHECK(dt == ScalarType::Byte, op,
                ": data must be uint8 (two E2M1 codes per byte) for elem='e2m1', got ",
                dtype_name(dt));
  NVFP4_CHECK(data.dim() == 2, op, ": data must be 2-D ", fp8 ? "[N, K]" : "[N, K/2]",
              ", got ", data.dim(), "-D shape ", shape_str(data));
  const int64_t N = data.size(0), K = data.size(1) * (fp8 ? 1 : 2);
  check_multiple(op, fp8 ? "K (the last dim of data)" : "the last dim of data (K/2)",
                 data.size(1), fp8 ? 32 : 16);
  check_k_positive(op, K);
  NVFP4_CHECK(x.size(-1) == K, op, ": the last dim of x (K) must equal ",
              fp8 ? "data.shape[1]" : "2 * data.shape[1]", " = ", K, ", got ", x.size(-1));
  const ScalarType st = scales.scalar_type();
  NVFP4_CHECK(st == ScalarType::Byte || st == ScalarType::Float8_e8m0fnu, op,
              ": scales must be uint8 or torch.float8_e8m0fnu, got ", dtype_name(st));
  check_scales_shape(op, scales, {N, K / 32}, false, "K/32");
  check_bias(op, x, bias, N);
  if (bias.has_value())
    check_one_device(op, {{"x", &x}, {"data", &data}, {"scales", &scales}, {"bias", &*bias}});
  else
    check_one_device(op, {{"x", &x}, {"data", &data}, {"scales", &scales}});
}

Tensor gemm_mx_w16_cuda(Tensor x, Tensor data, Tensor scales, std::string elem,
                        std::optional<Tensor> bias) {
  check_mx_args(x, data, scales, elem, bias);
  if (elem == "e4m3")
    return run<kMxfp8>(kOpMx, x, data, scales, nullptr, bias, data.size(0), false);
  return run<kMxfp4>(kOpMx, x, data, scales, nullptr, bias, data.size(0), false);
}

}  // namespace
}  // namespace gemm
}  // namespace nvfp4

STABLE_TORCH_LIBRARY_IMPL(nvfp4, CUDA, m) {
  m.impl("gemm_nvfp4_w4a16", TORCH_BOX(&nvfp4::gemm::gemm_nvfp4_w4a16_cuda));
  m.impl("gemm_nvfp4_w4a16_prepacked", TORCH_BOX(&nvfp4::gemm::gemm_nvfp4_w4a16_prepacked_cuda));
  m.impl("gemm_mx_w16", TORCH_BOX(&nvfp4::gemm::gemm_mx_w16_cuda));
}
