// Lazy ("sparse") Adam for hash tables, CPU kernel. Torch-free: the host part
// (adam_sparse.cpp) checks arguments and allocates.
//
// Dense Adam (no weight decay, no amsgrad) updates every row at every step t = 1, 2, ...:
//   m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,
//   p <- p - step_size[t] * m / (sqrt(v) / bc2_sqrt[t] + eps),
// with step_size[t] = lr_t / (1 - b1^t) and bc2_sqrt[t] = sqrt(1 - b2^t). A row whose
// gradient is zero still moves (its moments decay and m is not zero). The lazy form visits
// only rows with a non-zero gradient; last[r] is the last step row r is up to date with.
// When row r is visited at step t after k = t - 1 - last[r] skipped steps it first replays
// them (g = 0: m <- b1 m, v <- b2 v, the parameter update of each step with that step's
// step_size and bc2_sqrt), then takes step t with its gradient. The replay is exact to
// float32 rounding for the first max_replay skipped steps; beyond those only the moments
// decay (m <- b1^n m, v <- b2^n v, exact) and the parameter updates are dropped: their sum
// is at most r^K / (1 - r) times the largest single-step update, r = b1 / sqrt(b2),
// K = max_replay (the caller picks K so that this is below float32 resolution).
// A flush (no gradient) brings every row up to step t the same way, with no step t.
#pragma once

#include <cstdint>

namespace switchnerf {

struct AdamSparseArgs {
  float* param = nullptr;        // [R, F]
  const float* grad = nullptr;   // [R, F], or nullptr: flush to `step`
  float* exp_avg = nullptr;      // [R, F]
  float* exp_avg_sq = nullptr;   // [R, F]
  int64_t* last = nullptr;       // [R] last step each row is up to date with
  const double* step_size = nullptr;  // [K]: entry i is step base + 1 + i
  const double* bc2_sqrt = nullptr;   // [K]
  int64_t rows = 0;
  int64_t features = 0;
  int64_t base = 0;   // step_size[0] is step base + 1
  int64_t step = 0;   // the current step t (base < t <= base + K)
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  int64_t max_replay = 0;
};

// One lazy Adam step (or a flush when grad is nullptr). Returns the number of rows updated,
// or -1 - r when row r was last updated before the history starts (row r is left as it
// was; the step is then incomplete).
int64_t adam_sparse_step_cpu(const AdamSparseArgs& a);

}  // namespace switchnerf
