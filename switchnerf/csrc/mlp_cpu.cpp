// CPU kernel of the field's small MLPs (see mlp.h): a register-blocked micro-kernel of
// kRows rows x 16 hidden units, AVX2/FMA where built for.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if (defined(__FMA__) && defined(__AVX__)) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "mlp.h"

namespace switchnerf {
namespace {

typedef float v8 __attribute__((vector_size(32)));

inline float madd(float a, float b, float c) {
#if defined(__FMA__) || defined(__aarch64__)
  return __builtin_fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

// a * b + c, lane by lane, rounded as madd.
inline v8 vmadd(v8 a, v8 b, v8 c) {
#if defined(__FMA__) && defined(__AVX__)
  return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  v8 r;
  for (int l = 0; l < 8; ++l) r[l] = madd(a[l], b[l], c[l]);
  return r;
#endif
}

inline v8 vload(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void vstore(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }

inline v8 vsplat(float a) { return v8{a, a, a, a, a, a, a, a}; }

constexpr int64_t kRowsPerTask = 240;
constexpr int kRows = 6;  // rows computed together by the micro-kernels


// Scratch of one thread: xs [kRows, I] scaled inputs, hid [kRows, H] hidden activations,
// out [kRows, OP].
struct Scratch {
  std::vector<float> xs, hid, out;
  Scratch(const MlpLayers& L)
      : xs(size_t(kRows * L.I)), hid(size_t(kRows * L.H)), out(size_t(kRows * L.OP)) {}
};

// Hidden pre-activations of kRows rows (rows >= n are zero input and ignored by the caller),
// 16 units at a time: H is a multiple of 16.
void hidden_block(const MlpLayers& L, const float* xs, const float* bias_rows[kRows], float* hid) {
  const int64_t I = L.I, H = L.H;
  for (int64_t j = 0; j < H; j += 16) {
    v8 a[kRows][2];
    const v8 b0 = L.b1 ? vload(L.b1 + j) : vsplat(0.0f);
    const v8 b1 = L.b1 ? vload(L.b1 + j + 8) : vsplat(0.0f);
    for (int r = 0; r < kRows; ++r) {
      a[r][0] = b0;
      a[r][1] = b1;
      if (bias_rows[r]) {
        a[r][0] += vload(bias_rows[r] + j);
        a[r][1] += vload(bias_rows[r] + j + 8);
      }
    }
    const float* w = L.w1t + j;
    for (int64_t i = 0; i < I; ++i, w += H) {
      const v8 w0 = vload(w), w1 = vload(w + 8);
      for (int r = 0; r < kRows; ++r) {
        const v8 x = vsplat(xs[r * I + i]);
        a[r][0] = vmadd(w0, x, a[r][0]);
        a[r][1] = vmadd(w1, x, a[r][1]);
      }
    }
    const v8 zero = vsplat(0.0f);
    for (int r = 0; r < kRows; ++r) {
      vstore(hid + r * H + j, a[r][0] > zero ? a[r][0] : zero);
      vstore(hid + r * H + j + 8, a[r][1] > zero ? a[r][1] : zero);
    }
  }
}

// Outputs of kRows rows from their ReLU'd hidden activations; NV = OP / 8 vectors per row.
template <int NV>
void output_block(const MlpLayers& L, const float* hid, float* out) {
  const int64_t H = L.H, OP = L.OP;
  v8 a[kRows][NV];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) a[r][v] = vload(L.b2 + 8 * v);
  for (int64_t j = 0; j < H; ++j) {
    v8 w[NV];
    for (int v = 0; v < NV; ++v) w[v] = vload(L.w2t + j * OP + 8 * v);
    for (int r = 0; r < kRows; ++r) {
      const v8 h = vsplat(hid[r * H + j]);
      for (int v = 0; v < NV; ++v) a[r][v] = vmadd(w[v], h, a[r][v]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) vstore(out + r * OP + 8 * v, a[r][v]);
}

// The general case (any H, O): one row at a time, scalar.
void row_scalar(const MlpLayers& L, const float* xs, const float* bias_row, float* hid, float* y) {
  const int64_t I = L.I, H = L.H, O = L.O, OP = L.OP;
  for (int64_t j = 0; j < H; ++j) hid[j] = (L.b1 ? L.b1[j] : 0.0f) + (bias_row ? bias_row[j] : 0.0f);
  for (int64_t i = 0; i < I; ++i) {
    const float* wi = L.w1t + i * H;
    for (int64_t j = 0; j < H; ++j) hid[j] = madd(wi[j], xs[i], hid[j]);
  }
  for (int64_t o = 0; o < O; ++o) y[o] = L.b2[o];
  for (int64_t j = 0; j < H; ++j) {
    const float hj = std::max(hid[j], 0.0f);
    const float* wj = L.w2t + j * OP;
    for (int64_t o = 0; o < O; ++o) y[o] = madd(wj[o], hj, y[o]);
  }
}

void mlp_rows(const MlpLayers& L, const float* x_pre, const float* x, const float* scale, float* y,
              int64_t begin, int64_t end, Scratch& s) {
  const int64_t ldx = L.ldx;
  const int64_t* x_index = L.x_index;
  const int64_t I = L.I, O = L.O, OP = L.OP, P = L.P, IX = I - P;
  const bool blocked = L.H % 16 == 0 && OP <= 16;
  for (int64_t r0 = begin; r0 < end; r0 += kRows) {
    const int n = int(std::min<int64_t>(kRows, end - r0));
    const float* bias_rows[kRows];
    for (int r = 0; r < kRows; ++r) {
      bias_rows[r] = (r < n && L.bias) ? L.bias + L.bias_index[r0 + r] * L.H : nullptr;
      const float sr = (r < n && scale) ? scale[r0 + r] : 1.0f;
      float* xs = s.xs.data() + r * I;
      if (r >= n) {
        std::fill(xs, xs + I, 0.0f);
        continue;
      }
      if (P > 0) std::memcpy(xs, x_pre + (r0 + r) * P, sizeof(float) * size_t(P));
      const float* own = x + (x_index ? x_index[r0 + r] : r0 + r) * ldx;
      for (int64_t i = 0; i < IX; ++i) xs[P + i] = sr * own[i];
    }
    if (!blocked) {
      for (int r = 0; r < n; ++r)
        row_scalar(L, s.xs.data() + r * I, bias_rows[r], s.hid.data(), y + (r0 + r) * O);
      continue;
    }
    hidden_block(L, s.xs.data(), bias_rows, s.hid.data());
    if (OP == 8)
      output_block<1>(L, s.hid.data(), s.out.data());
    else
      output_block<2>(L, s.hid.data(), s.out.data());
    for (int r = 0; r < n; ++r)
      std::memcpy(y + (r0 + r) * O, s.out.data() + r * OP, sizeof(float) * size_t(O));
  }
}

}  // namespace

void mlp_forward_cpu(const MlpLayers& L, const float* x_pre, const float* xp, const float* scale,
                     float* yp, int64_t M) {
  const int64_t n_tasks = (M + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel if (n_tasks > 1)
  {
    Scratch s(L);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tasks; ++t) {
      const int64_t begin = t * kRowsPerTask, end = std::min(M, begin + kRowsPerTask);
      mlp_rows(L, x_pre, xp, scale, yp, begin, end, s);
    }
  }
}

namespace {

void top1_row_scalar(const float* l, int64_t E, int64_t* id, float* value) {
  int64_t best = 0;
  for (int64_t e = 1; e < E; ++e)
    if (l[e] > l[best] || (std::isnan(l[e]) && !std::isnan(l[best]))) best = e;
  float sum = 0.0f;
  for (int64_t e = 0; e < E; ++e) sum += std::exp(l[e] - l[best]);
  *id = best;
  *value = 1.0f / sum;
}

#if defined(__AVX2__)
// exp of 8 floats: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
  __m256 fx = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                            _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(0.693359375f)));
  x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(-2.12194440e-4f)));
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                        1.6666665459e-1f, 5.0000001201e-1f})
    y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(c));
  y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, z), x), _mm256_set1_ps(1.0f));
  __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(0x7f));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

// The lane-wise maximum of v in every lane.
inline __m256 all_max(__m256 v) {
  v = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
  v = _mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0x4E));
  return _mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0xB1));
}

inline float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#endif

}  // namespace

bool top1_softmax_vectorised(int64_t E) {
#if defined(__AVX2__)
  return E == 8;
#else
  (void)E;
  return false;
#endif
}

void top1_softmax_cpu(const float* logits, int64_t M, int64_t E, int64_t* id, float* value) {
  const bool vec = top1_softmax_vectorised(E);
#pragma omp parallel for schedule(static) if (M > 16384)
  for (int64_t r = 0; r < M; ++r) {
    const float* l = logits + r * E;
#if defined(__AVX2__)
    if (vec) {
      const __m256 v = _mm256_loadu_ps(l);
      const __m256 m = all_max(v);
      const int eq = _mm256_movemask_ps(_mm256_cmp_ps(v, m, _CMP_EQ_OQ));
      if (eq != 0) {  // else a NaN logit: the scalar rule
        id[r] = __builtin_ctz(unsigned(eq));
        value[r] = 1.0f / lane_sum(exp8(_mm256_sub_ps(v, m)));
        continue;
      }
    }
#endif
    (void)vec;
    top1_row_scalar(l, E, id + r, value + r);
  }
}

}  // namespace switchnerf
