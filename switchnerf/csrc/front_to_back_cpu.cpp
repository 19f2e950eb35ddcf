// CPU kernels of the front-to-back round bookkeeping (see front_to_back.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "front_to_back.h"

namespace switchnerf {

std::vector<int64_t> round_offsets(const int64_t* pos, const int64_t* end, int64_t n_alive,
                                   int64_t k) {
  std::vector<int64_t> first(n_alive + 1);
  int64_t m = 0;
  for (int64_t a = 0; a < n_alive; ++a) {
    first[a] = m;
    m += std::min(end[a] - pos[a], k);
  }
  first[n_alive] = m;
  return first;
}

void round_take_cpu(const int64_t* pos, int64_t n_alive, const std::vector<int64_t>& first,
                    int64_t* idx) {
#pragma omp parallel for schedule(static, 1024) if (first[n_alive] > 65536)
  for (int64_t a = 0; a < n_alive; ++a) {
    const int64_t p = pos[a];
    for (int64_t j = first[a]; j < first[a + 1]; ++j) idx[j] = p + (j - first[a]);
  }
}

RoundPlan round_update_plan(const RoundState& s, const RoundArgs& a, std::vector<int64_t> first) {
  const int64_t A = s.n_alive, m = a.n_samples;
  RoundPlan p;
  p.first = std::move(first);
  p.visible.resize(m);
  p.open.resize(A);
  p.tau.resize(A);
  // The round's depths and their float64 running sum, in order (torch's cumsum).
  std::vector<float> depth32(m);
  std::vector<double> inclusive(m);
#pragma omp parallel for schedule(static) if (m > 65536)
  for (int64_t j = 0; j < m; ++j) depth32[j] = a.sigma[j] * a.dt[a.idx[j]];
  double run = 0.0;
  for (int64_t j = 0; j < m; ++j) {
    run += double(depth32[j]);
    inclusive[j] = run;
  }
  p.block = 2048;
  const int64_t n_blocks = (A + p.block - 1) / p.block;
  p.block_vis.assign(n_blocks + 1, 0);
  p.block_open.assign(n_blocks + 1, 0);
  const bool alpha_test = a.alpha_test, stop_test = a.stop_test;
#pragma omp parallel for schedule(dynamic, 1) if (m > 32768 && n_blocks > 1)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    int64_t n_vis = 0, n_open = 0;
    for (int64_t r = blk * p.block; r < std::min(A, (blk + 1) * p.block); ++r) {
      const int64_t f = p.first[r], l = p.first[r + 1];
      const double tau = s.tau[r];
      const double base = inclusive[f] - double(depth32[f]);  // exclusive at the run's start
      for (int64_t j = f; j < l; ++j) {
        const double d = double(depth32[j]);
        const double exclusive = inclusive[j] - d;
        const double before = (tau + exclusive) - base;
        bool vis = float(std::exp(-before)) >= a.early_stop_eps;
        if (alpha_test) vis = vis && (1.0f - float(std::exp(-d))) >= a.alpha_thre;
        p.visible[j] = vis;
        n_vis += vis;
      }
      const double after = l > f ? (tau + inclusive[l - 1]) - base : tau;
      const bool open = s.pos[r] + (l - f) < s.end[r] && (!stop_test || after <= a.max_tau);
      p.tau[r] = after;
      p.open[r] = open;
      n_open += open;
    }
    p.block_vis[blk + 1] = n_vis;
    p.block_open[blk + 1] = n_open;
  }
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    p.block_vis[blk + 1] += p.block_vis[blk];
    p.block_open[blk + 1] += p.block_open[blk];
  }
  return p;
}

void round_update_write(const RoundState& s, const RoundPlan& p, int64_t* vis, int64_t* ray,
                        int64_t* pos, int64_t* end, double* tau) {
  const int64_t A = s.n_alive;
  const int64_t n_blocks = int64_t(p.block_vis.size()) - 1;
#pragma omp parallel for schedule(dynamic, 1) if (p.first[A] > 32768 && n_blocks > 1)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    int64_t v = p.block_vis[blk], o = p.block_open[blk];
    const int64_t r0 = blk * p.block, r1 = std::min(A, (blk + 1) * p.block);
    for (int64_t j = p.first[r0]; j < p.first[r1]; ++j)
      if (p.visible[j]) vis[v++] = j;
    for (int64_t r = r0; r < r1; ++r) {
      if (!p.open[r]) continue;
      ray[o] = s.ray[r];
      pos[o] = s.pos[r] + (p.first[r + 1] - p.first[r]);
      end[o] = s.end[r];
      tau[o] = p.tau[r];
      ++o;
    }
  }
}

void packed_points_cpu(const float* origins, const float* dirs, const int64_t* ray,
                       const float* t_start, const float* t_end, const int64_t* idx, int64_t m,
                       float* pts) {
#pragma omp parallel for schedule(static) if (m > 65536)
  for (int64_t j = 0; j < m; ++j) {
    const int64_t s = idx[j];
    const int64_t r = ray[s];
    const float mid = 0.5f * (t_start[s] + t_end[s]);
    for (int c = 0; c < 3; ++c) {
      const float md = mid * dirs[3 * r + c];
      pts[3 * j + c] = origins[3 * r + c] + md;
    }
  }
}

}  // namespace switchnerf
