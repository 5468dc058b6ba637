// Read-only streaming probe: how fast can a grid read an NVFP4 weight (N x K/2 bytes) with
// the access patterns a fused GEMM could use? No arithmetic: only the loads.
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cuda_runtime.h>

__device__ __forceinline__ uint4 ld16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// A: the GEMM kernel's pattern. CTA = 128 rows (8 warps x 16), step = 256 bytes per row,
// thread (g, t) of a warp reads rows g, g+8, 4 x 16 bytes at 64 i + 16 t. DEPTH steps in flight.
// PREPACKED (C): a warp's 16 rows x 256 B step is one contiguous 4 KB tile, the tiles of a row
// group in step order (the prepacked layout).
template <int DEPTH, bool PREPACKED>
__global__ void __launch_bounds__(256) pat_rows(const uint8_t* w, int N, int rowbytes, int steps_per_split, uint32_t* sink) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = blockIdx.x * 128 + warp * 16 + g;
  const int group = blockIdx.x * 8 + warp;
  const int steps = rowbytes / 256;
  const int s0 = blockIdx.y * steps_per_split;
  const int s1 = min(steps, s0 + steps_per_split);
  auto addr = [&](int s, int h, int i) {
    return PREPACKED ? w + (int64_t(group) * steps + s) * 4096 + (g + 8 * h) * 256 + 64 * i + 16 * t
                     : w + int64_t(row0 + 8 * h) * rowbytes + s * 256 + 64 * i + 16 * t;
  };
  uint32_t acc = 0;
  uint4 buf[DEPTH][8];
#pragma unroll
  for (int d = 0; d < DEPTH; ++d)
    if (s0 + d < s1)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int i = 0; i < 4; ++i) buf[d][4 * h + i] = ld16(addr(s0 + d, h, i));
  for (int s = s0; s < s1; s += DEPTH) {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d) {
      if (s + d < s1) {
#pragma unroll
        for (int j = 0; j < 8; ++j) acc ^= buf[d][j].x ^ buf[d][j].y ^ buf[d][j].z ^ buf[d][j].w;
      }
      const int sn = s + d + DEPTH;
      if (sn < s1)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int i = 0; i < 4; ++i) buf[d][4 * h + i] = ld16(addr(sn, h, i));
    }
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

// Linear: each CTA reads one contiguous range (the bytes divided among the CTAs, rounded down
// to 4 KB), every load instruction of a warp 512 contiguous bytes, UNROLL of them in flight.
template <int UNROLL>
__global__ void __launch_bounds__(256) pat_lin(const uint8_t* w, int64_t bytes, uint32_t* sink) {
  const int64_t per_cta = (bytes / gridDim.x) & ~int64_t(4095);
  const uint8_t* base = w + per_cta * blockIdx.x;
  uint32_t acc = 0;
  for (int64_t off = threadIdx.x * 16; off < per_cta; off += 256 * 16 * UNROLL) {
    uint4 v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t o = off + u * 256 * 16;
      v[u] = o < per_cta ? ld16(base + o) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

static uint8_t* flushbuf;
static void flush() { cudaMemsetAsync(flushbuf, 1, 256 << 20); }

template <typename F>
static float timeit(F f, int rep = 30) {
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  float best[64]; int n = 0;
  for (int r = 0; r < rep + 3; ++r) {
    flush();
    cudaEventRecord(a); f(); cudaEventRecord(b); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b);
    if (r >= 3) best[n++] = ms;
    cudaError_t e = cudaGetLastError(); if (e != cudaSuccess) { printf("CUDA error %s\n", cudaGetErrorString(e)); exit(1); }
  }
  // median
  for (int i = 0; i < n; ++i) for (int j = i + 1; j < n; ++j) if (best[j] < best[i]) { float x = best[i]; best[i] = best[j]; best[j] = x; }
  return best[n / 2] * 1000.f;
}

int main() {
  setvbuf(stdout, NULL, _IONBF, 0);
  cudaMalloc(&flushbuf, 256 << 20);
  uint32_t* sink; cudaMalloc(&sink, 4);
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const int shapes[][2] = {{8192, 8192}, {28672, 8192}, {14336, 4096}, {4096, 14336}};
  uint8_t* w; cudaMalloc(&w, size_t(28672) * 8192);
  cudaMemset(w, 3, size_t(28672) * 8192);
  uint8_t* dst; cudaMalloc(&dst, size_t(28672) * 4096);
  for (auto& s : shapes) {
    const int N = s[0], K = s[1];
    const int rowbytes = K / 2;
    const int64_t bytes = int64_t(N) * rowbytes;
    const int steps = rowbytes / 256;
    float cp = timeit([&] { cudaMemcpyAsync(dst, w, bytes, cudaMemcpyDeviceToDevice); });
    printf("N=%d K=%d bytes=%.1f MB  copy %.1f us (%.0f GB/s r+w; read-only equiv %.0f GB/s)\n", N, K, bytes / 1e6, cp, 2 * bytes / cp / 1e3, bytes / cp / 1e3);
    for (int splits : {1, 2, 4, 8, 16}) {
      if (splits > steps) continue;
      const int sps = (steps + splits - 1) / splits;
      dim3 grid(N / 128, splits);
      float a1 = timeit([&] { pat_rows<1, false><<<grid, 256>>>(w, N, rowbytes, sps, sink); });
      float a2 = timeit([&] { pat_rows<2, false><<<grid, 256>>>(w, N, rowbytes, sps, sink); });
      float a4 = timeit([&] { pat_rows<4, false><<<grid, 256>>>(w, N, rowbytes, sps, sink); });
      float c2 = timeit([&] { pat_rows<2, true><<<grid, 256>>>(w, N, rowbytes, sps, sink); });
      float c4 = timeit([&] { pat_rows<4, true><<<grid, 256>>>(w, N, rowbytes, sps, sink); });
      printf("  splits %2d (%5d CTAs): A d1 %.1f us  A d2 %.1f  A d4 %.1f  | C(prepacked) d2 %.1f  d4 %.1f   [GB/s A d2 %.0f, C d4 %.0f]\n",
             splits, grid.x * grid.y, a1, a2, a4, c2, c4, bytes / a2 / 1e3, bytes / c4 / 1e3);
    }
    for (int ctas : {sms, 2 * sms, 4 * sms, 8 * sms}) {
      float l4 = timeit([&] { pat_lin<4><<<ctas, 256>>>(w, bytes, sink); });
      float l8 = timeit([&] { pat_lin<8><<<ctas, 256>>>(w, bytes, sink); });
      printf("  linear %4d CTAs: unroll4 %.1f us (%.0f GB/s)  unroll8 %.1f us (%.0f GB/s)\n", ctas, l4, bytes / l4 / 1e3, l8, bytes / l8 / 1e3);
    }
  }
  cudaError_t e = cudaDeviceSynchronize();
  printf("status: %s\n", cudaGetErrorString(e));
}
