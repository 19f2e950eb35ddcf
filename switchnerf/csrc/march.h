// Occupancy-grid ray marching, CPU kernel (torch-free; the host part march.cpp checks the
// arguments and allocates): packed output (the CPU twin of nerfacc's
// traverse_grids over a one-level grid on the unit cube), with the arithmetic of
// switchnerf.ops.march's torch twin (march_torch) so that both give the same samples.
//
// Per ray, with base = near (+ stratified offset) and [t0, t1) = [max(base, t_enter),
// min(far, t_exit)) the part of the ray inside [0, 1]^3:
//   t_start_k = base + k * step, t_end_k = t_start_k + step   (float64, stored as float32)
//   kept when t0 <= midpoint < t1 and the midpoint's cell is occupied,
// at most max_samples first kept samples per ray (max_samples < 0: no limit).
// Blocks of rays march in parallel into their own buffers, concatenated in ray order.
#pragma once

#include <cstdint>
#include <vector>

namespace switchnerf {

struct MarchArgs {
  const float* origins = nullptr;  // [N, 3], unit-cube frame
  const float* dirs = nullptr;     // [N, 3], d / (hi - lo)
  const float* base = nullptr;     // [N], near plus any stratified offset
  const float* far = nullptr;      // [N]
  const bool* binary = nullptr;    // [R0, R1, R2], cell (i, j, k) at (i * R1 + j) * R2 + k
  int64_t resolution[3] = {0, 0, 0};
  int64_t n_rays = 0;
  double step = 0.0;          // world units of t
  int64_t max_samples = -1;   // < 0: no limit
};

// The kept samples of a block of rays, in ray order.
struct MarchBlock {
  std::vector<int64_t> ray;
  std::vector<float> t_start, t_end;
};

// Marches every ray (OpenMP over blocks of rays); returns the blocks in ray order.
std::vector<MarchBlock> march_rays_cpu(const MarchArgs& a);

// Concatenates the blocks into ray_indices [M], t_starts [M], t_ends [M]
// (M = total samples of the blocks).
void gather_march_blocks_cpu(const std::vector<MarchBlock>& blocks, int64_t* ray_indices,
                             float* t_starts, float* t_ends);

// Total samples of the blocks.
int64_t march_blocks_size(const std::vector<MarchBlock>& blocks);

}  // namespace switchnerf
