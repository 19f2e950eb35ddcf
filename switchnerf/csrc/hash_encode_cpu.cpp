// CPU kernels of the hash encoding (OpenMP).
//
// Work is split into tasks of one (grid, level) pair over a run of that grid's
// points, levels outermost: the threads work on the same level at the same time,
// so one level's slice of the table stays in cache while the points stream by.
// Points of each grid are visited in their input order (a stable counting sort
// of expert_id gives the order; no copy of the batch is made), so ray-ordered
// samples hit neighbouring table rows one after another.
//
// Sparse touches of a large level (a training batch: a few thousand points against tens
// of thousands of rows, the table cold after the optimiser's pass over every row) are
// bound by the latency of the corner rows' cache misses: such a task computes the corners
// of the point kAhead places ahead into a small ring and prefetches their rows, so that
// several points' misses are in flight at once (`visits_sparsely`). A dense batch (a
// render) reuses the rows from cache and runs the plain loop, which the ring would slow.
//
// The backward needs no atomics: the (grid, level) row ranges of the table are
// disjoint, so a task that owns one (grid, level) pair for all of that grid's
// points is the only writer of its rows. If a caller hands a table whose level
// ranges overlap, the backward runs those tasks serially instead.
#include "hash_encode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace switchnerf {
namespace {

constexpr int64_t kForwardChunk = 8192;  // points per forward task

struct Level {
  float scale;
  uint32_t res;
  uint32_t size;
  int64_t offset;
  uint64_t mod_magic;  // for mod_size: 2^64 / size, rounded up
};

Level level_at(const HashEncodeArgs& a, int64_t e, int64_t l) {
  const int64_t k = e * a.n_levels + l;
  const uint32_t size = uint32_t(a.size[k]);
  return Level{a.scale[k], uint32_t(a.resolution[k]), size, a.offset[k],
               UINT64_C(0xFFFFFFFFFFFFFFFF) / size + 1};
}

// v % lv.size without a division (Lemire, Kaser and Kurz, "Faster remainder by direct
// computation", 2019): exact for every 32-bit v and divisor.
inline uint32_t mod_size(uint32_t v, const Level& lv) {
  const uint64_t low = lv.mod_magic * v;
  return uint32_t((static_cast<unsigned __int128>(low) * lv.size) >> 64);
}

// fmaf(scale, x, 0.5f), rounded once. With a hardware FMA this is one instruction;
// otherwise the exact float64 product plus 0.5 is rounded to odd and then to float,
// which gives the correctly rounded result (as the torch reference does).
inline float fma_half(float scale, float x) {
#if defined(__FMA__) || defined(__aarch64__)
  return __builtin_fmaf(scale, x, 0.5f);
#else
  const double p = double(scale) * double(x);  // exact: 24 + 24 bits fit in 53
  const double s = p + 0.5;
  const double bb = s - p;
  const double err = (p - (s - bb)) + (0.5 - bb);  // TwoSum: p + 0.5 == s + err exactly
  if (err == 0.0) return float(s);
  uint64_t bits;
  std::memcpy(&bits, &s, sizeof bits);
  if ((bits & 1u) == 0) bits += ((err > 0.0) == (s > 0.0)) ? 1 : uint64_t(-1);  // round to odd
  double odd;
  std::memcpy(&odd, &bits, sizeof odd);
  return float(odd);
#endif
}

bool is_pow2(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Indices (relative to the level's first row) and trilinear weights of the 8 corners,
// in tcnn's order: corner c takes +1 along axis d where bit d of c is set.
template <bool HASHED, bool POW2>
inline void corners(const Level& lv, const float* xi, uint32_t idx[8], float w[8]) {
  uint32_t g[3];
  float fr[3];
  for (int d = 0; d < 3; ++d) {
    const float p = fma_half(lv.scale, xi[d]);
    const float fl = std::floor(p);
    g[d] = uint32_t(int32_t(fl));
    fr[d] = p - fl;
  }
  uint32_t t0[2], t1[2], t2[2];
  t0[0] = g[0];
  t0[1] = g[0] + 1u;
  if (HASHED) {
    t1[0] = g[1] * kPrime1;
    t1[1] = (g[1] + 1u) * kPrime1;
    t2[0] = g[2] * kPrime2;
    t2[1] = (g[2] + 1u) * kPrime2;
  } else {
    const uint32_t r2 = lv.res * lv.res;
    t1[0] = g[1] * lv.res;
    t1[1] = (g[1] + 1u) * lv.res;
    t2[0] = g[2] * r2;
    t2[1] = (g[2] + 1u) * r2;
  }
  const float wx[2] = {1.0f - fr[0], fr[0]};
  const float wy[2] = {1.0f - fr[1], fr[1]};
  const float wz[2] = {1.0f - fr[2], fr[2]};
  for (int c = 0; c < 8; ++c) {
    const int bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
    uint32_t v = HASHED ? (t0[bx] ^ t1[by] ^ t2[bz]) : (t0[bx] + t1[by] + t2[bz]);
    idx[c] = POW2 ? (v & (lv.size - 1u)) : mod_size(v, lv);
    w[c] = wx[bx] * wy[by] * wz[bz];
  }
}

constexpr int kAhead = 8;  // points whose corner rows are prefetched ahead of their use

// Whether a task visits the level's rows sparsely: its grid's n points touch 8 n corners,
// fewer than 4 per row of the level (the rows are then mostly cold and the ring pays).
inline bool visits_sparsely(int64_t n_points, const Level& lv) {
  return 2 * n_points < int64_t(lv.size);
}

template <int F>
inline void gather_corners(const float* tab, const uint32_t idx[8], const float w[8],
                           float* o) {
  float acc[F];
  for (int f = 0; f < F; ++f) acc[f] = 0.0f;
  for (int c = 0; c < 8; ++c) {
    const float* row = tab + int64_t(idx[c]) * F;
    for (int f = 0; f < F; ++f) acc[f] += w[c] * row[f];
  }
  for (int f = 0; f < F; ++f) o[f] = acc[f];
}

template <int F>
inline void scatter_corners(float* gt, const uint32_t idx[8], const float w[8], const float* go) {
  float g[F];
  for (int f = 0; f < F; ++f) g[f] = go[f];
  for (int c = 0; c < 8; ++c) {
    float* row = gt + int64_t(idx[c]) * F;
    for (int f = 0; f < F; ++f) row[f] += w[c] * g[f];
  }
}

template <int F>
inline bool any_nonzero(const float* go) {
  bool any = false;
  for (int f = 0; f < F; ++f) any |= go[f] != 0.0f;
  return any;
}

// Calls use(i, idx, w) for the points i = order[k], k in [begin, end), in order, with
// their corner rows and weights computed kAhead points before their use and the rows
// prefetched from `base` (row r at base + r * F floats; rw: 0 read, 1 write). Points for
// which want(i) is false are skipped.
template <int F, bool HASHED, bool POW2, int RW, typename Want, typename Use>
void run_ahead(const HashEncodeArgs& a, const Level& lv, const int64_t* order, int64_t begin,
               int64_t end, const float* base, Want want, Use use) {
  uint32_t idx[kAhead][8];
  float w[kAhead][8];
  bool live[kAhead];
  auto at = [&](int64_t k) { return order ? order[k] : k; };
  auto fill = [&](int64_t k) {
    const int s = int(k % kAhead);
    const int64_t i = at(k);
    live[s] = want(i);
    if (!live[s]) return;
    corners<HASHED, POW2>(lv, a.x + 3 * i, idx[s], w[s]);
    for (int c = 0; c < 8; ++c) __builtin_prefetch(base + int64_t(idx[s][c]) * F, RW, 3);
  };
  for (int64_t k = begin; k < std::min(end, begin + kAhead); ++k) fill(k);
  for (int64_t k = begin; k < end; ++k) {
    const int s = int(k % kAhead);
    if (live[s]) use(at(k), idx[s], w[s]);
    if (k + kAhead < end) fill(k + kAhead);
  }
}

template <int F, bool HASHED, bool POW2>
void forward_run(const HashEncodeArgs& a, const Level& lv, int64_t l, const int64_t* order,
                 int64_t begin, int64_t end, bool sparse, float* out) {
  const int64_t stride = a.n_levels * F;
  const float* tab = a.table + lv.offset * F;
  auto at = [&](int64_t k) { return order ? order[k] : k; };
  if (!sparse) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t i = at(k);
      uint32_t idx[8];
      float w[8];
      corners<HASHED, POW2>(lv, a.x + 3 * i, idx, w);
      gather_corners<F>(tab, idx, w, out + i * stride + l * F);
    }
    return;
  }
  run_ahead<F, HASHED, POW2, 0>(
      a, lv, order, begin, end, tab, [](int64_t) { return true; },
      [&](int64_t i, const uint32_t* idx, const float* w) {
        gather_corners<F>(tab, idx, w, out + i * stride + l * F);
      });
}

template <int F, bool HASHED, bool POW2>
void backward_run(const HashEncodeArgs& a, const Level& lv, int64_t l, const int64_t* order,
                  int64_t begin, int64_t end, bool sparse, const float* grad_out,
                  float* grad_table) {
  const int64_t stride = a.n_levels * F;
  float* gt = grad_table + lv.offset * F;
  auto at = [&](int64_t k) { return order ? order[k] : k; };
  auto grad_of = [&](int64_t i) { return grad_out + i * stride + l * F; };
  if (!sparse) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t i = at(k);
      if (!any_nonzero<F>(grad_of(i))) continue;
      uint32_t idx[8];
      float w[8];
      corners<HASHED, POW2>(lv, a.x + 3 * i, idx, w);
      scatter_corners<F>(gt, idx, w, grad_of(i));
    }
    return;
  }
  run_ahead<F, HASHED, POW2, 1>(
      a, lv, order, begin, end, gt, [&](int64_t i) { return any_nonzero<F>(grad_of(i)); },
      [&](int64_t i, const uint32_t* idx, const float* w) {
        scatter_corners<F>(gt, idx, w, grad_of(i));
      });
}

// Runs Kernel<F, HASHED, POW2>::run(args...) for the level's variant.
template <template <int, bool, bool> class Kernel, typename... Args>
void dispatch(int64_t n_features, const Level& lv, Args&&... args) {
  const bool hashed = level_is_hashed(lv.res, lv.size);
  const bool pow2 = is_pow2(lv.size);
#define SWITCHNERF_DISPATCH_F(FV)                                    \
  case FV:                                                           \
    if (hashed && pow2) Kernel<FV, true, true>::run(args...);        \
    else if (hashed) Kernel<FV, true, false>::run(args...);          \
    else if (pow2) Kernel<FV, false, true>::run(args...);            \
    else Kernel<FV, false, false>::run(args...);                     \
    break;
  switch (n_features) {
    SWITCHNERF_DISPATCH_F(1)
    SWITCHNERF_DISPATCH_F(2)
    SWITCHNERF_DISPATCH_F(4)
    SWITCHNERF_DISPATCH_F(8)
    default:
      break;  // the host entry point admits only 1, 2, 4, 8
  }
#undef SWITCHNERF_DISPATCH_F
}

template <int F, bool H, bool P>
struct Forward {
  template <typename... Args>
  static void run(Args&&... args) { forward_run<F, H, P>(args...); }
};

template <int F, bool H, bool P>
struct Backward {
  template <typename... Args>
  static void run(Args&&... args) { backward_run<F, H, P>(args...); }
};

// Points of each grid in ascending order: order[begin[e] .. begin[e + 1]).
// With one grid (or no expert_id) the order is the identity and `order` stays empty.
struct Segments {
  std::vector<int64_t> begin;
  std::vector<int64_t> order;
  const int64_t* order_ptr() const { return order.empty() ? nullptr : order.data(); }
};

Segments segments(const HashEncodeArgs& a) {
  Segments s;
  const int64_t E = a.n_grids, N = a.n_points;
  s.begin.assign(E + 1, 0);
  if (a.expert_id == nullptr || E == 1) {
    for (int64_t e = 1; e <= E; ++e) s.begin[e] = N;  // every point belongs to grid 0
    return s;
  }
  std::vector<int64_t> count(E, 0);
  for (int64_t i = 0; i < N; ++i) ++count[a.expert_id[i]];
  for (int64_t e = 0; e < E; ++e) s.begin[e + 1] = s.begin[e] + count[e];
  s.order.resize(N);
  std::vector<int64_t> next(s.begin.begin(), s.begin.end() - 1);
  for (int64_t i = 0; i < N; ++i) s.order[next[a.expert_id[i]]++] = i;
  return s;
}

struct Task {
  int64_t e, l, begin, end;
};

}  // namespace

void hash_encode_forward_cpu(const HashEncodeArgs& a, float* out) {
  if (a.n_points == 0 || a.n_levels == 0) return;
  const Segments seg = segments(a);
  const int64_t* order = seg.order_ptr();
  std::vector<Task> tasks;
  for (int64_t l = 0; l < a.n_levels; ++l)
    for (int64_t e = 0; e < a.n_grids; ++e)
      for (int64_t b = seg.begin[e]; b < seg.begin[e + 1]; b += kForwardChunk)
        tasks.push_back({e, l, b, std::min(b + kForwardChunk, seg.begin[e + 1])});
  const int64_t n_tasks = int64_t(tasks.size());
#pragma omp parallel for schedule(dynamic, 1) if (n_tasks > 1 && a.n_points * a.n_levels > 16384)
  for (int64_t t = 0; t < n_tasks; ++t) {
    const Task& task = tasks[t];
    const Level lv = level_at(a, task.e, task.l);
    const bool sparse = visits_sparsely(seg.begin[task.e + 1] - seg.begin[task.e], lv);
    dispatch<Forward>(a.n_features, lv, a, lv, task.l, order, task.begin, task.end, sparse,
                      out);
  }
}

void hash_encode_backward_cpu(const HashEncodeArgs& a, const float* grad_out, float* grad_table) {
  if (a.n_points == 0 || a.n_levels == 0) return;
  const Segments seg = segments(a);
  const int64_t* order = seg.order_ptr();
  std::vector<Task> tasks;
  for (int64_t l = 0; l < a.n_levels; ++l)
    for (int64_t e = 0; e < a.n_grids; ++e)
      if (seg.begin[e + 1] > seg.begin[e]) tasks.push_back({e, l, seg.begin[e], seg.begin[e + 1]});
  // Longest tasks first balances the threads; stable keeps the level order among equals.
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& p, const Task& q) {
    return p.end - p.begin > q.end - q.begin;
  });

  // Row ranges of the levels in use must be disjoint for tasks to run concurrently.
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const Task& t : tasks) {
    const Level lv = level_at(a, t.e, t.l);
    ranges.emplace_back(lv.offset, lv.offset + int64_t(lv.size));
  }
  std::sort(ranges.begin(), ranges.end());
  bool disjoint = true;
  for (size_t k = 1; k < ranges.size(); ++k) disjoint &= ranges[k].first >= ranges[k - 1].second;

  const int64_t n_tasks = int64_t(tasks.size());
#pragma omp parallel for schedule(dynamic, 1) if (disjoint && n_tasks > 1 && a.n_points * a.n_levels > 16384)
  for (int64_t t = 0; t < n_tasks; ++t) {
    const Task& task = tasks[t];
    const Level lv = level_at(a, task.e, task.l);
    const bool sparse = visits_sparsely(task.end - task.begin, lv);
    dispatch<Backward>(a.n_features, lv, a, lv, task.l, order, task.begin, task.end, sparse,
                       grad_out, grad_table);
  }
}

}  // namespace switchnerf
