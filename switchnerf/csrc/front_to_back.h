// Bookkeeping of the front-to-back rounds of inference rendering, CPU kernels (torch-free;
// the host part front_to_back.cpp checks the arguments and allocates). The arithmetic is
// that of switchnerf.ops.front_to_back's torch twin, operation for operation.
//
// State: the A rays still open, each with ray id, next packed sample pos, end of its
// samples, and tau (float64 optical depth so far). A round takes, per open ray, the
// take_a = min(end_a - pos_a, k) next samples: idx = [pos_a, pos_a + take_a) for every a,
// concatenated (first_a = sum_{b<a} take_b is ray a's offset in the round).
//
// Update, with the m = sum(take) samples' density sigma_j and dt = t_end - t_start:
//   depth32_j = sigma_j * dt[idx_j] (float32);  inclusive = sequential float64 sum of
//   depth over the whole round (as torch's cumsum);  exclusive_j = inclusive_j - depth_j;
//   base_a = exclusive_{first_a};  tau_before_j = (tau_a + exclusive_j) - base_a;
//   visible_j = float(exp(-tau_before_j)) >= float(eps)
//               [&& 1 - float(exp(-depth32_j)) >= float(alpha_thre) when alpha_thre > 0];
//   tau_a' = (tau_a + inclusive_{first_a + take_a - 1}) - base_a;  pos_a' = pos_a + take_a;
//   ray a stays open when pos_a' < end_a and (eps <= 0 or tau_a' <= -log(eps)).
// Outputs: the round positions j of the visible samples (ascending) and the state of the
// rays left open (in order).
#pragma once

#include <cstdint>
#include <vector>

namespace switchnerf {

// The open rays of a round.
struct RoundState {
  const int64_t* ray = nullptr;  // [A]
  const int64_t* pos = nullptr;  // [A]
  const int64_t* end = nullptr;  // [A]
  const double* tau = nullptr;   // [A]
  int64_t n_alive = 0;           // A
};

// Round offsets first[0..A] (first[A] = m) of taking up to k samples per open ray.
std::vector<int64_t> round_offsets(const int64_t* pos, const int64_t* end, int64_t n_alive,
                                   int64_t k);

// idx [m]: the packed indices of the samples taken (offsets from round_offsets).
void round_take_cpu(const int64_t* pos, int64_t n_alive, const std::vector<int64_t>& first,
                    int64_t* idx);

struct RoundArgs {
  const float* sigma = nullptr;  // [m]
  const float* dt = nullptr;     // [M], indexed by idx
  const int64_t* idx = nullptr;  // [m]
  int64_t n_samples = 0;         // m
  float alpha_thre = 0.0f;       // float32(alpha_thre)
  float early_stop_eps = 0.0f;   // float32(eps)
  bool alpha_test = false;       // alpha_thre > 0
  bool stop_test = false;        // eps > 0
  double max_tau = 0.0;          // -log(eps) (unused without stop_test)
};

// What the first pass of an update found: per-sample visibility, per-ray new tau and
// openness, and the counts of each block of rays (for the compaction).
struct RoundPlan {
  std::vector<int64_t> first;         // [A + 1]
  std::vector<uint8_t> visible;       // [m]
  std::vector<uint8_t> open;          // [A]
  std::vector<double> tau;            // [A], tau_a'
  std::vector<int64_t> block_vis;     // [B + 1], exclusive offsets of visible samples
  std::vector<int64_t> block_open;    // [B + 1], exclusive offsets of open rays
  int64_t block = 1;                  // rays per block
};

// First pass: visibility and the new state of every ray (OpenMP over blocks of rays).
RoundPlan round_update_plan(const RoundState& s, const RoundArgs& a, std::vector<int64_t> first);

// Second pass: vis [block_vis.back()] and the open rays' ray/pos/end/tau
// [block_open.back()] in order.
void round_update_write(const RoundState& s, const RoundPlan& p, int64_t* vis, int64_t* ray,
                        int64_t* pos, int64_t* end, double* tau);

// pts [m, 3] = origins[ray[idx_j]] + t_mid * dirs[ray[idx_j]], t_mid = 0.5 * (t_start + t_end)
// of sample idx_j, in float32 as the torch expression (no FMA): the points a round
// evaluates. origins, dirs [N, 3]; ray, t_start, t_end [M]; idx [m].
void packed_points_cpu(const float* origins, const float* dirs, const int64_t* ray,
                       const float* t_start, const float* t_end, const int64_t* idx, int64_t m,
                       float* pts);

}  // namespace switchnerf
