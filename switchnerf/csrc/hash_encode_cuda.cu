// CUDA kernels of the hash encoding, tiny-cuda-nn style: one thread per (point, level),
// backward by atomicAdd into the table gradient. Same semantics as hash_encode_cpu.cpp.
//
// This file depends on the CUDA runtime only (no torch headers): the host part passes the
// stream, so the kernels compile with a plain nvcc anywhere.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "hash_encode.h"

namespace switchnerf {
namespace {

constexpr int kThreads = 128;

struct DeviceLevel {
  float scale;
  uint32_t res;
  uint32_t size;
  int64_t offset;
};

// The expert of point i, or -1 when its id is outside [0, n_grids) (the host does not check
// ids on CUDA, to avoid a synchronisation per call).
__device__ inline int64_t device_expert(const HashEncodeArgs& a, int64_t i) {
  const int64_t e = a.expert_id ? a.expert_id[i] : 0;
  return (e >= 0 && e < a.n_grids) ? e : -1;
}

__device__ inline DeviceLevel device_level(const HashEncodeArgs& a, int64_t e, int64_t l) {
  const int64_t k = e * a.n_levels + l;
  return DeviceLevel{a.scale[k], uint32_t(a.resolution[k]), uint32_t(a.size[k]), a.offset[k]};
}

// Rows (absolute) and weights of the 8 corners, tcnn's grid_index and corner order.
__device__ inline void device_corners(const DeviceLevel& lv, const float* xi, int64_t rows[8],
                                      float w[8]) {
  uint32_t g[3];
  float fr[3];
#pragma unroll
  for (int d = 0; d < 3; ++d) {
    const float p = __fmaf_rn(lv.scale, xi[d], 0.5f);
    const float fl = floorf(p);
    g[d] = uint32_t(int32_t(fl));
    fr[d] = p - fl;
  }
  const uint64_t stride = lv.res <= kMaxDenseResolution
                              ? uint64_t(lv.res) * uint64_t(lv.res) * uint64_t(lv.res)
                              : uint64_t(0xFFFFFFFFu);
  const bool hashed = uint64_t(lv.size) < stride;
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    uint32_t q[3];
    float weight = 1.0f;
#pragma unroll
    for (int d = 0; d < 3; ++d) {
      const bool up = (c >> d) & 1;
      q[d] = g[d] + (up ? 1u : 0u);
      weight *= up ? fr[d] : 1.0f - fr[d];
    }
    const uint32_t v = hashed ? (q[0] ^ (q[1] * kPrime1) ^ (q[2] * kPrime2))
                              : (q[0] + q[1] * lv.res + q[2] * (lv.res * lv.res));
    rows[c] = lv.offset + int64_t(v % lv.size);
    w[c] = weight;
  }
}

template <int F>
__global__ void forward_kernel(const HashEncodeArgs a, float* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t l = blockIdx.y;
  if (i >= a.n_points) return;
  float* o = out + i * a.n_levels * F + l * F;
  const int64_t e = device_expert(a, i);
  if (e < 0) {
#pragma unroll
    for (int f = 0; f < F; ++f) o[f] = 0.0f;
    return;
  }
  const DeviceLevel lv = device_level(a, e, l);
  int64_t rows[8];
  float w[8];
  device_corners(lv, a.x + 3 * i, rows, w);
  float acc[F];
#pragma unroll
  for (int f = 0; f < F; ++f) acc[f] = 0.0f;
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const float* row = a.table + rows[c] * F;
#pragma unroll
    for (int f = 0; f < F; ++f) acc[f] = __fmaf_rn(w[c], __ldg(row + f), acc[f]);
  }
#pragma unroll
  for (int f = 0; f < F; ++f) o[f] = acc[f];
}

template <int F>
__global__ void backward_kernel(const HashEncodeArgs a, const float* __restrict__ grad_out,
                                float* __restrict__ grad_table) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t l = blockIdx.y;
  if (i >= a.n_points) return;
  const int64_t e = device_expert(a, i);
  if (e < 0) return;
  const DeviceLevel lv = device_level(a, e, l);
  int64_t rows[8];
  float w[8];
  device_corners(lv, a.x + 3 * i, rows, w);
  const float* go = grad_out + i * a.n_levels * F + l * F;
  float g[F];
#pragma unroll
  for (int f = 0; f < F; ++f) g[f] = go[f];
#pragma unroll
  for (int c = 0; c < 8; ++c) {
#pragma unroll
    for (int f = 0; f < F; ++f) atomicAdd(grad_table + rows[c] * F + f, w[c] * g[f]);
  }
}

void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": CUDA kernel launch failed: " +
                             cudaGetErrorString(err));
  }
}

dim3 grid_of(const HashEncodeArgs& a) {
  return dim3(unsigned((a.n_points + kThreads - 1) / kThreads), unsigned(a.n_levels));
}

}  // namespace

void hash_encode_forward_cuda(const HashEncodeArgs& a, float* out, void* stream_ptr) {
  if (a.n_points == 0 || a.n_levels == 0) return;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  switch (a.n_features) {
    case 1: forward_kernel<1><<<grid_of(a), kThreads, 0, stream>>>(a, out); break;
    case 2: forward_kernel<2><<<grid_of(a), kThreads, 0, stream>>>(a, out); break;
    case 4: forward_kernel<4><<<grid_of(a), kThreads, 0, stream>>>(a, out); break;
    case 8: forward_kernel<8><<<grid_of(a), kThreads, 0, stream>>>(a, out); break;
    default: break;  // the host entry point admits only 1, 2, 4, 8
  }
  check_launch("hash_encode_forward");
}

void hash_encode_backward_cuda(const HashEncodeArgs& a, const float* grad_out,
                               float* grad_table, void* stream_ptr) {
  if (a.n_points == 0 || a.n_levels == 0) return;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  switch (a.n_features) {
    case 1: backward_kernel<1><<<grid_of(a), kThreads, 0, stream>>>(a, grad_out, grad_table); break;
    case 2: backward_kernel<2><<<grid_of(a), kThreads, 0, stream>>>(a, grad_out, grad_table); break;
    case 4: backward_kernel<4><<<grid_of(a), kThreads, 0, stream>>>(a, grad_out, grad_table); break;
    case 8: backward_kernel<8><<<grid_of(a), kThreads, 0, stream>>>(a, grad_out, grad_table); break;
    default: break;
  }
  check_launch("hash_encode_backward");
}

}  // namespace switchnerf
