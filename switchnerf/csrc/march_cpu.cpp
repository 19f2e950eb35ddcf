// CPU kernel of the occupancy-grid ray marching (see march.h), OpenMP over blocks of rays.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "march.h"

namespace switchnerf {
namespace {


constexpr int64_t kBlockCells = 4;  // fine cells per axis of a coarse block

struct Grid {
  const bool* binary;  // [R0, R1, R2], cell (i, j, k) at (i * R1 + j) * R2 + k
  int64_t r[3];
  float rf[3];
  // Coarse blocks of kBlockCells^3 fine cells: occupied when any of their cells is.
  std::vector<uint8_t> coarse;  // [C0, C1, C2], C = ceil(R / kBlockCells)
  int64_t c[3];

  void build_coarse() {
    for (int d = 0; d < 3; ++d) c[d] = (r[d] + kBlockCells - 1) / kBlockCells;
    coarse.assign(c[0] * c[1] * c[2], 0);
    for (int64_t i = 0; i < r[0]; ++i)
      for (int64_t j = 0; j < r[1]; ++j)
        for (int64_t k = 0; k < r[2]; ++k)
          if (binary[(i * r[1] + j) * r[2] + k])
            coarse[((i / kBlockCells) * c[1] + j / kBlockCells) * c[2] + k / kBlockCells] = 1;
  }

  // Cell of a point (clamped as the torch path does) and whether it lies in [0, 1]^3.
  bool cell(const float p[3], int64_t ijk[3]) const {
    bool inside = true;
    for (int d = 0; d < 3; ++d) {
      inside &= p[d] >= 0.0f && p[d] <= 1.0f;
      const float c = std::floor(p[d] * rf[d]);
      ijk[d] = !(c >= 0.0f) ? 0 : (c >= rf[d] ? r[d] - 1 : int64_t(c));  // NaN -> 0
    }
    return inside;
  }
  bool occupied(const int64_t ijk[3]) const {
    return binary[(ijk[0] * r[1] + ijk[1]) * r[2] + ijk[2]];
  }
  bool block_occupied(const int64_t ijk[3]) const {
    return coarse[((ijk[0] / kBlockCells) * c[1] + ijk[1] / kBlockCells) * c[2] +
                  ijk[2] / kBlockCells];
  }
};

// Candidate steps [k_begin, k_end) of one ray; empty when it misses the cube.
void ray_steps(const float* o, const float* d, float base, float far, double step,
               int64_t& k_begin, int64_t& k_end) {
  const float inf = std::numeric_limits<float>::infinity();
  float t_enter = -inf, t_exit = inf;
  for (int a = 0; a < 3; ++a) {
    float lo, hi;
    if (d[a] == 0.0f) {
      const bool inside = o[a] >= 0.0f && o[a] <= 1.0f;
      lo = inside ? -inf : inf;
      hi = inside ? inf : -inf;
    } else {
      const float ta = (0.0f - o[a]) / d[a];
      const float tb = (1.0f - o[a]) / d[a];
      lo = std::min(ta, tb);
      hi = std::max(ta, tb);
    }
    t_enter = std::max(t_enter, lo);
    t_exit = std::min(t_exit, hi);
  }
  const double t0 = double(std::max(base, t_enter));
  const double t1 = double(std::min(far, t_exit));
  k_begin = k_end = 0;
  if (!(t1 > t0) || !std::isfinite(t0) || !std::isfinite(t1)) return;
  const double b = double(base);
  k_begin = int64_t(std::max(std::ceil((t0 - b) / step - 0.5), 0.0));
  k_end = std::max(int64_t(std::ceil((t1 - b) / step - 0.5)), k_begin);
}

struct Step {
  float t_start, t_end;
  float p[3];  // midpoint, unit frame
};

// Step k of a ray, with the torch path's float32/float64 arithmetic.
inline Step step_at(const float* o, const float* d, double b, double step, int64_t k) {
  Step s;
  const double ts64 = b + double(k) * step;
  s.t_start = float(ts64);
  s.t_end = float(ts64 + step);
  const float mid = 0.5f * (s.t_start + s.t_end);
  for (int a = 0; a < 3; ++a) {
    const float md = mid * d[a];
    s.p[a] = o[a] + md;
  }
  return s;
}

// Visits the kept samples of ray n in order: fn(index within the ray, t_start, t_end);
// returns how many.
//
// Empty-space skipping stays exact: every operation from k to the midpoint's cell
// coordinate is monotone (float rounding included), so the steps whose midpoints fall in
// one cell form an interval. From a step in an empty cell, the cell's exit parameter
// gives a candidate step; if the step just before it is still in the same cell, every
// step in between is too and is skipped; otherwise the candidate moves back one step.
// Where the cell's whole coarse block is empty, the same is done with the block.
template <typename Fn>
int64_t march_one(const float* origins, const float* dirs, const float* base, const float* far,
                  const Grid& grid, double step, int64_t max_samples, int64_t n, Fn&& fn) {
  const float* o = origins + 3 * n;
  const float* d = dirs + 3 * n;
  int64_t k_begin, k_end;
  ray_steps(o, d, base[n], far[n], step, k_begin, k_end);
  const double b = double(base[n]);
  // Reciprocals for the skip estimates below (the estimate only proposes a step; the check
  // after it decides, so its rounding does not change the samples).
  const double inv_step = 1.0 / step;
  double inv_d[3];
  for (int a = 0; a < 3; ++a) inv_d[a] = d[a] == 0.0f ? 0.0 : 1.0 / double(d[a]);
  int64_t kept = 0;
  int64_t k = k_begin;
  while (k < k_end) {
    if (max_samples >= 0 && kept >= max_samples) break;
    const Step s = step_at(o, d, b, step, k);
    int64_t ijk[3];
    const bool inside = grid.cell(s.p, ijk);
    if (inside && grid.occupied(ijk)) {
      fn(kept, s.t_start, s.t_end);
      ++kept;
      ++k;
      continue;
    }
    if (!inside) {
      ++k;
      continue;
    }
    // The empty region to skip: the cell, or its whole coarse block when that is empty
    // too (fine cell indices are monotone in k, so a block's steps form an interval as
    // well). lo[a] .. hi[a] are its fine cells along axis a.
    const bool block = !grid.block_occupied(ijk);
    int64_t lo[3], hi[3];
    for (int a = 0; a < 3; ++a) {
      lo[a] = block ? ijk[a] / kBlockCells * kBlockCells : ijk[a];
      hi[a] = block ? std::min(lo[a] + kBlockCells, grid.r[a]) : ijk[a] + 1;
    }
    // Parameter where the ray leaves the region (float64 estimate).
    double t_leave = std::numeric_limits<double>::infinity();
    for (int a = 0; a < 3; ++a) {
      if (d[a] == 0.0f) continue;
      const double face = double(d[a] > 0.0f ? hi[a] : lo[a]) / double(grid.r[a]);
      t_leave = std::min(t_leave, (face - double(o[a])) * inv_d[a]);
    }
    int64_t next = k + 1;
    if (std::isfinite(t_leave)) {
      const double kk = std::ceil((t_leave - b) * inv_step - 0.5);
      next = kk >= double(k_end) ? k_end : std::max(int64_t(kk), k + 1);
    } else {
      next = k_end;
    }
    for (int miss = 0; next > k + 1; ++miss) {  // is step next - 1 still in the region?
      const Step q = step_at(o, d, b, step, next - 1);
      int64_t c[3];
      if (grid.cell(q.p, c) && c[0] >= lo[0] && c[0] < hi[0] && c[1] >= lo[1] &&
          c[1] < hi[1] && c[2] >= lo[2] && c[2] < hi[2])
        break;
      // The estimate is off by rounding: back off one step, then bisect towards k + 1.
      next = miss < 2 ? next - 1 : k + 1 + (next - 1 - (k + 1)) / 2;
    }
    k = next;
  }
  return kept;
}

}  // namespace

std::vector<MarchBlock> march_rays_cpu(const MarchArgs& a) {
  Grid grid{a.binary, {a.resolution[0], a.resolution[1], a.resolution[2]}, {}, {}, {}};
  for (int d = 0; d < 3; ++d) grid.rf[d] = float(grid.r[d]);
  grid.build_coarse();
  const int64_t N = a.n_rays;
  constexpr int64_t kBlock = 128;  // rays per block
  const int64_t n_blocks = (N + kBlock - 1) / kBlock;
  std::vector<MarchBlock> blocks(n_blocks);
#pragma omp parallel for schedule(dynamic, 1) if (n_blocks > 1)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    MarchBlock& out = blocks[blk];
    for (int64_t n = blk * kBlock; n < std::min(N, (blk + 1) * kBlock); ++n) {
      march_one(a.origins, a.dirs, a.base, a.far, grid, a.step, a.max_samples, n,
                [&](int64_t, float t_start, float t_end) {
                  out.ray.push_back(n);
                  out.t_start.push_back(t_start);
                  out.t_end.push_back(t_end);
                });
    }
  }
  return blocks;
}

int64_t march_blocks_size(const std::vector<MarchBlock>& blocks) {
  int64_t m = 0;
  for (const MarchBlock& b : blocks) m += int64_t(b.ray.size());
  return m;
}

void gather_march_blocks_cpu(const std::vector<MarchBlock>& blocks, int64_t* ri, float* ts,
                             float* te) {
  const int64_t n_blocks = int64_t(blocks.size());
  std::vector<int64_t> first(n_blocks + 1, 0);
  for (int64_t blk = 0; blk < n_blocks; ++blk)
    first[blk + 1] = first[blk] + int64_t(blocks[blk].ray.size());
#pragma omp parallel for schedule(dynamic, 4) if (n_blocks > 1 && first[n_blocks] > 65536)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    const MarchBlock& in = blocks[blk];
    std::copy(in.ray.begin(), in.ray.end(), ri + first[blk]);
    std::copy(in.t_start.begin(), in.t_start.end(), ts + first[blk]);
    std::copy(in.t_end.begin(), in.t_end.end(), te + first[blk]);
  }
}

}  // namespace switchnerf
