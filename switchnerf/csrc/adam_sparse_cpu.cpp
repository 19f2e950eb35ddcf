// CPU kernel of the lazy Adam step for hash tables (see adam_sparse.h), OpenMP over rows.
#include <algorithm>
#include <cmath>

#if defined(__AVX__)
#include <immintrin.h>
#endif

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

int64_t adam_skip_zero_cpu(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                           int64_t n, float step_size, float bc2_sqrt, float beta1, float beta2,
                           float eps) {
  const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
  constexpr int64_t kBlock = 1 << 15;  // values per task
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
  int64_t updated = 0;
#pragma omp parallel for schedule(static) reduction(+ : updated) if (n_blocks > 1)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    int64_t i = lo;
#if defined(__AVX__)
    const __m256 vb1 = _mm256_set1_ps(beta1), vc1 = _mm256_set1_ps(c1);
    const __m256 vb2 = _mm256_set1_ps(beta2), vc2 = _mm256_set1_ps(c2);
    const __m256 vss = _mm256_set1_ps(step_size), vbc = _mm256_set1_ps(bc2_sqrt);
    const __m256 veps = _mm256_set1_ps(eps), zero = _mm256_setzero_ps();
    for (; i + 8 <= hi; i += 8) {
      const __m256 g = _mm256_loadu_ps(grad + i);
      const __m256 nz = _mm256_cmp_ps(g, zero, _CMP_NEQ_UQ);  // g != 0 or NaN
      const int lanes = _mm256_movemask_ps(nz);
      if (lanes == 0) continue;
      updated += __builtin_popcount(unsigned(lanes));
      const __m256 m0 = _mm256_loadu_ps(exp_avg + i), v0 = _mm256_loadu_ps(exp_avg_sq + i);
      const __m256 p0 = _mm256_loadu_ps(param + i);
      const __m256 m1 = _mm256_add_ps(_mm256_mul_ps(vb1, m0), _mm256_mul_ps(vc1, g));
      const __m256 v1 = _mm256_add_ps(_mm256_mul_ps(vb2, v0),
                                      _mm256_mul_ps(vc2, _mm256_mul_ps(g, g)));
      const __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v1), vbc), veps);
      const __m256 p1 = _mm256_sub_ps(p0, _mm256_mul_ps(vss, _mm256_div_ps(m1, den)));
      _mm256_storeu_ps(exp_avg + i, _mm256_blendv_ps(m0, m1, nz));
      _mm256_storeu_ps(exp_avg_sq + i, _mm256_blendv_ps(v0, v1, nz));
      _mm256_storeu_ps(param + i, _mm256_blendv_ps(p0, p1, nz));
    }
#endif
    for (; i < hi; ++i) {
      const float g = grad[i];
      if (g == 0.0f) continue;
      ++updated;
      const float m = beta1 * exp_avg[i] + c1 * g;
      const float v = beta2 * exp_avg_sq[i] + c2 * (g * g);
      exp_avg[i] = m;
      exp_avg_sq[i] = v;
      param[i] = param[i] - step_size * (m / (std::sqrt(v) / bc2_sqrt + eps));
    }
  }
  return updated;
}

}  // namespace switchnerf
