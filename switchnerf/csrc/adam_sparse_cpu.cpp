// CPU kernel of the lazy Adam step for hash tables (see adam_sparse.h), OpenMP over rows.
#include <algorithm>
#include <cmath>

#include "adam_sparse.h"

namespace switchnerf {
namespace {

// Replay `n` zero-gradient steps from step `from` (inclusive) on one row of F features.
inline void replay(const AdamSparseArgs& a, float* p, float* m, float* v, int64_t from,
                   int64_t n) {
  const float b1 = static_cast<float>(a.beta1), b2 = static_cast<float>(a.beta2);
  const float eps = static_cast<float>(a.eps);
  for (int64_t s = from; s < from + n; ++s) {
    const int64_t i = s - a.base - 1;
    const float ss = static_cast<float>(a.step_size[i]);
    const float bc = static_cast<float>(a.bc2_sqrt[i]);
    for (int64_t f = 0; f < a.features; ++f) {
      m[f] = b1 * m[f];
      v[f] = b2 * v[f];
      p[f] = p[f] - ss * (m[f] / (std::sqrt(v[f]) / bc + eps));
    }
  }
}

// Bring one row from last + 1 up to and including step `upto` with zero gradients.
inline void catch_up(const AdamSparseArgs& a, float* p, float* m, float* v, int64_t last,
                     int64_t upto) {
  const int64_t k = upto - last;
  if (k <= 0) return;
  bool moving = false, any = false;
  for (int64_t f = 0; f < a.features; ++f) {
    moving = moving || m[f] != 0.0f;
    any = any || m[f] != 0.0f || v[f] != 0.0f;
  }
  if (!any) return;  // zero moments stay zero and move nothing
  const int64_t n = moving ? std::min(k, a.max_replay) : 0;
  replay(a, p, m, v, last + 1, n);
  if (k > n) {
    const float d1 = static_cast<float>(std::pow(a.beta1, static_cast<double>(k - n)));
    const float d2 = static_cast<float>(std::pow(a.beta2, static_cast<double>(k - n)));
    for (int64_t f = 0; f < a.features; ++f) {
      m[f] = d1 * m[f];
      v[f] = d2 * v[f];
    }
  }
}

}  // namespace

int64_t adam_sparse_step_cpu(const AdamSparseArgs& a) {
  const int64_t F = a.features;
  const float b1 = static_cast<float>(a.beta1), b2 = static_cast<float>(a.beta2);
  const float eps = static_cast<float>(a.eps);
  const int64_t it = a.step - a.base - 1;
  const float ss = static_cast<float>(a.step_size[it]);
  const float bc = static_cast<float>(a.bc2_sqrt[it]);
  int64_t updated = 0, bad = -1;
#pragma omp parallel for schedule(static, 4096) reduction(+ : updated) if (a.rows > 16384)
  for (int64_t r = 0; r < a.rows; ++r) {
    float* p = a.param + r * F;
    float* m = a.exp_avg + r * F;
    float* v = a.exp_avg_sq + r * F;
    if (a.last[r] < a.base) {  // its skipped steps are not in the history
#pragma omp atomic write
      bad = r;
      continue;
    }
    if (a.grad == nullptr) {
      if (a.last[r] < a.step) {
        catch_up(a, p, m, v, a.last[r], a.step);
        a.last[r] = a.step;
        ++updated;
      }
      continue;
    }
    const float* g = a.grad + r * F;
    bool touched = false;
    for (int64_t f = 0; f < F; ++f) touched = touched || g[f] != 0.0f;
    if (!touched) continue;
    catch_up(a, p, m, v, a.last[r], a.step - 1);
    for (int64_t f = 0; f < F; ++f) {
      m[f] = b1 * m[f] + (1.0f - b1) * g[f];
      v[f] = b2 * v[f] + (1.0f - b2) * (g[f] * g[f]);
      p[f] = p[f] - ss * (m[f] / (std::sqrt(v[f]) / bc + eps));
    }
    a.last[r] = a.step;
    ++updated;
  }
  return bad >= 0 ? -1 - bad : updated;
}

}  // namespace switchnerf
