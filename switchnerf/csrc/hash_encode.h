// Multi-resolution hash encoding with tiny-cuda-nn semantics, for one grid (the
// gate, E = 1) or a mixture of E grids (the experts) stored in one flat table.
//
// Level (e, l) of grid e has
//   scale[e, l]       float    pos = fmaf(scale, x, 0.5)
//   resolution[e, l]  int32    vertices per axis
//   size[e, l]        int32    rows of the level (tcnn hashmap_size)
//   offset[e, l]      int64    first row of the level in the flat table
// Corner index: dense sum_d g_d * res^d when res^3 <= size (res <= 1625),
// otherwise the xor hash with primes (1, 2654435761, 805459861) in uint32;
// then modulo size. Output is level-major: out[i, l * F + f].
//
// This header is torch-free so that the CUDA translation unit and the CPU
// kernels share it; the checked host entry points are declared in ops.h.
#pragma once

#include <cstdint>

namespace switchnerf {

struct HashEncodeArgs {
  const float* x = nullptr;            // [N, 3] positions in [0, 1]
  const int64_t* expert_id = nullptr;  // [N] grid of each point, or null (= grid 0)
  const float* table = nullptr;        // [R, F] flat parameters
  const float* scale = nullptr;        // [E, L]
  const int32_t* resolution = nullptr; // [E, L]
  const int32_t* size = nullptr;       // [E, L]
  const int64_t* offset = nullptr;     // [E, L]
  int64_t n_points = 0;                // N
  int64_t n_grids = 1;                 // E
  int64_t n_levels = 0;                // L
  int64_t n_features = 0;              // F
  int64_t n_rows = 0;                  // R
};

// Primes of tcnn's coherent prime hash (the first one is 1).
constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;

// Largest resolution whose cube fits in uint32 (tcnn computes the dense stride in uint32).
constexpr uint32_t kMaxDenseResolution = 1625u;

// Whether level (res, size) uses the hash (tcnn: hashmap_size < stride).
inline bool level_is_hashed(uint32_t res, uint32_t size) {
  const uint64_t stride = res <= kMaxDenseResolution
                              ? uint64_t(res) * uint64_t(res) * uint64_t(res)
                              : uint64_t(0xFFFFFFFFu);
  return uint64_t(size) < stride;
}

// CPU kernels (OpenMP). out: [N, L * F]; grad_out: [N, L * F]; grad_table: [R, F] zeroed.
void hash_encode_forward_cpu(const HashEncodeArgs& a, float* out);
void hash_encode_backward_cpu(const HashEncodeArgs& a, const float* grad_out, float* grad_table);

#ifdef SWITCHNERF_WITH_CUDA
// CUDA kernels on `stream` (a cudaStream_t): one thread per point and level, atomicAdd
// backward. All pointers (args included) are device pointers.
void hash_encode_forward_cuda(const HashEncodeArgs& a, float* out, void* stream);
void hash_encode_backward_cuda(const HashEncodeArgs& a, const float* grad_out, float* grad_table,
                               void* stream);
#endif

}  // namespace switchnerf
