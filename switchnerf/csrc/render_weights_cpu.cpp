// CPU kernels of the packed volume-rendering weights (see render_weights.h), OpenMP over rays.
#include <algorithm>
#include <cmath>
#include <vector>

#include "render_weights.h"

namespace switchnerf {

int64_t first_bad_ray_index(const PackedArgs& a) {
  const int64_t* ray = a.ray;
  int64_t bad = -1;
#pragma omp parallel for if (a.n_samples > 65536)
  for (int64_t s = 0; s < a.n_samples; ++s) {
    const bool ok = ray[s] >= 0 && ray[s] < a.n_rays && (s == 0 || ray[s - 1] <= ray[s]);
    if (!ok) {
#pragma omp atomic write
      bad = s;
    }
  }
  return bad;
}

std::vector<int64_t> chunk_bounds(const PackedArgs& a) {
  std::vector<int64_t> begin(a.n_rays + 1, a.n_samples);
#pragma omp parallel for if (a.n_rays > 4096)
  for (int64_t r = 0; r < a.n_rays; ++r)
    begin[r] = std::lower_bound(a.ray, a.ray + a.n_samples, r) - a.ray;
  return begin;
}

void render_weights_forward_cpu(const PackedArgs& a, const std::vector<int64_t>& begin,
                                float* w, float* tr, float* al) {
  const float* ts = a.t_starts;
  const float* te = a.t_ends;
  const float* sg = a.sigmas;
#pragma omp parallel for schedule(dynamic, 256) if (a.n_samples > 32768)
  for (int64_t r = 0; r < a.n_rays; ++r) {
    double trans = 1.0;  // exp(-exclusive sum), as a float64 running product
    for (int64_t s = begin[r]; s < begin[r + 1]; ++s) {
      const float tau = sg[s] * (te[s] - ts[s]);
      const double e = std::exp(-double(tau));
      const float alpha = 1.0f - float(e);  // the float32 exp rounded as torch's, then 1 - it
      const float T = float(trans);
      al[s] = alpha;
      tr[s] = T;
      w[s] = T * alpha;
      trans *= e;
    }
  }
}

void composite_rays_cpu(const PackedArgs& a, const std::vector<int64_t>& begin,
                        const float* values, int64_t n_values, float* weights, float* sums,
                        float* opacity, float* depth, int64_t* best, int64_t* count) {
  const float* ts = a.t_starts;
  const float* te = a.t_ends;
  const float* sg = a.sigmas;
  const int64_t C = n_values;
#pragma omp parallel for schedule(dynamic, 256) if (a.n_samples > 32768)
  for (int64_t r = 0; r < a.n_rays; ++r) {
    double trans = 1.0;  // as render_weights_forward_cpu
    float op = 0.0f, dp = 0.0f, w_best = 0.0f;
    int64_t s_best = -1;
    float* acc = sums + r * C;
    for (int64_t c = 0; c < C; ++c) acc[c] = 0.0f;
    for (int64_t s = begin[r]; s < begin[r + 1]; ++s) {
      const float tau = sg[s] * (te[s] - ts[s]);
      const double e = std::exp(-double(tau));
      const float alpha = 1.0f - float(e);
      const float w = float(trans) * alpha;
      weights[s] = w;
      trans *= e;
      op += w;
      dp += w * (0.5f * (ts[s] + te[s]));
      const float* v = values + s * C;
      for (int64_t c = 0; c < C; ++c) acc[c] += w * v[c];
      if (w > w_best) {
        w_best = w;
        s_best = s;
      }
    }
    opacity[r] = op;
    depth[r] = dp;
    best[r] = s_best;
    count[r] = begin[r + 1] - begin[r];
  }
}

void render_weights_backward_cpu(const PackedArgs& a, const std::vector<int64_t>& begin,
                                 const float* gw, const float* gt, const float* ga,
                                 const float* tr, float* gs, float* gts, float* gte) {
  const float* ts = a.t_starts;
  const float* te = a.t_ends;
  const float* sg = a.sigmas;
#pragma omp parallel for schedule(dynamic, 256) if (a.n_samples > 32768)
  for (int64_t r = 0; r < a.n_rays; ++r) {
    double suffix = 0.0;  // sum over later samples of the ray of gT'_i * T_i
    for (int64_t s = begin[r + 1] - 1; s >= begin[r]; --s) {
      const float dt = te[s] - ts[s];
      const float tau = sg[s] * dt;
      const float e = float(std::exp(-double(tau)));
      const float alpha = 1.0f - e;
      const float T = tr[s];
      const float g_alpha = ga[s] + gw[s] * T;
      const float g_trans = gt[s] + gw[s] * alpha;
      const float g_tau = float(double(g_alpha * e) - suffix);
      suffix += double(g_trans) * double(T);
      gs[s] = g_tau * dt;
      gte[s] = g_tau * sg[s];
      gts[s] = -gte[s];
    }
  }
}

}  // namespace switchnerf
