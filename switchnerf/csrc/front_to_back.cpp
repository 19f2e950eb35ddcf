// Host part of the front-to-back round bookkeeping: boundary checks, allocation, and the
// CPU kernels of front_to_back_cpu.cpp (semantics in front_to_back.h).
#include <cmath>

#include "checks.h"
#include "front_to_back.h"
#include "ops.h"

namespace switchnerf {
namespace {

RoundState check_state(const char* op, const at::Tensor& ray, const at::Tensor& pos,
                       const at::Tensor& end, const at::Tensor& tau) {
  const at::Device cpu(at::kCPU);
  check_tensor(pos, op, "pos", at::kLong, 1, cpu);
  const int64_t A = pos.size(0);
  check_tensor(end, op, "end", at::kLong, 1, cpu);
  check_size(end, op, "end", 0, A, "one value per open ray");
  RoundState s;
  if (ray.defined()) {
    check_tensor(ray, op, "ray", at::kLong, 1, cpu);
    check_size(ray, op, "ray", 0, A, "one value per open ray");
    s.ray = ray.data_ptr<int64_t>();
  }
  if (tau.defined()) {
    check_tensor(tau, op, "tau", at::kDouble, 1, cpu);
    check_size(tau, op, "tau", 0, A, "one value per open ray");
    s.tau = tau.data_ptr<double>();
  }
  s.pos = pos.data_ptr<int64_t>();
  s.end = end.data_ptr<int64_t>();
  s.n_alive = A;
  for (int64_t a = 0; a < A; ++a)
    TORCH_CHECK(s.pos[a] < s.end[a] && s.pos[a] >= 0, op, ": open ray ", a, " has pos ",
                s.pos[a], " and end ", s.end[a], ", expected 0 <= pos < end");
  return s;
}

}  // namespace

at::Tensor front_to_back_take(const at::Tensor& pos, const at::Tensor& end, int64_t k) {
  const char* op = "front_to_back_take";
  TORCH_CHECK(k >= 1, op, ": k is ", k, ", expected >= 1 sample per ray");
  const RoundState s = check_state(op, at::Tensor(), pos, end, at::Tensor());
  const std::vector<int64_t> first = round_offsets(s.pos, s.end, s.n_alive, k);
  at::Tensor idx = at::empty({first.back()}, pos.options());  // [m]
  round_take_cpu(s.pos, s.n_alive, first, idx.data_ptr<int64_t>());
  return idx;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> front_to_back_update(
    const at::Tensor& sigma, const at::Tensor& dt, const at::Tensor& idx, const at::Tensor& ray,
    const at::Tensor& pos, const at::Tensor& end, const at::Tensor& tau, int64_t k,
    double alpha_thre, double early_stop_eps) {
  const char* op = "front_to_back_update";
  TORCH_CHECK(k >= 1, op, ": k is ", k, ", expected >= 1 sample per ray");
  const at::Device cpu(at::kCPU);
  const RoundState s = check_state(op, ray, pos, end, tau);
  std::vector<int64_t> first = round_offsets(s.pos, s.end, s.n_alive, k);
  const int64_t m = first.back();
  check_tensor(sigma, op, "sigma", at::kFloat, 1, cpu);
  check_size(sigma, op, "sigma", 0, m, "one value per sample taken this round");
  check_tensor(idx, op, "idx", at::kLong, 1, cpu);
  check_size(idx, op, "idx", 0, m, "one value per sample taken this round");
  check_tensor(dt, op, "dt", at::kFloat, 1, cpu);
  const int64_t M = dt.size(0);
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t j = 0; j < m; ++j)
    TORCH_CHECK(ip[j] >= 0 && ip[j] < M, op, ": idx[", j, "] = ", ip[j],
                " is outside [0, ", M, ") (the packed samples)");
  RoundArgs a;
  a.sigma = sigma.data_ptr<float>();
  a.dt = dt.data_ptr<float>();
  a.idx = ip;
  a.n_samples = m;
  a.alpha_thre = float(alpha_thre);
  a.early_stop_eps = float(early_stop_eps);
  a.alpha_test = alpha_thre > 0.0;
  a.stop_test = early_stop_eps > 0.0;
  a.max_tau = a.stop_test ? -std::log(early_stop_eps) : 0.0;
  const RoundPlan p = round_update_plan(s, a, std::move(first));
  const at::TensorOptions opt = pos.options();
  at::Tensor vis = at::empty({p.block_vis.back()}, opt);  // [K]
  const int64_t B = p.block_open.back();
  at::Tensor ray2 = at::empty({B}, opt), pos2 = at::empty({B}, opt), end2 = at::empty({B}, opt);
  at::Tensor tau2 = at::empty({B}, tau.options());
  round_update_write(s, p, vis.data_ptr<int64_t>(), ray2.data_ptr<int64_t>(),
                     pos2.data_ptr<int64_t>(), end2.data_ptr<int64_t>(), tau2.data_ptr<double>());
  return {vis, ray2, pos2, end2, tau2};
}

at::Tensor packed_points(const at::Tensor& origins, const at::Tensor& dirs,
                         const at::Tensor& ray_indices, const at::Tensor& t_starts,
                         const at::Tensor& t_ends, const at::Tensor& idx) {
  const char* op = "packed_points";
  const at::Device cpu(at::kCPU);
  check_tensor(origins, op, "origins", at::kFloat, 2, cpu);
  const int64_t N = origins.size(0);
  check_size(origins, op, "origins", 1, 3, "x, y, z");
  check_tensor(dirs, op, "dirs", at::kFloat, 2, cpu);
  check_size(dirs, op, "dirs", 0, N, "rows of origins");
  check_size(dirs, op, "dirs", 1, 3, "x, y, z");
  check_tensor(ray_indices, op, "ray_indices", at::kLong, 1, cpu);
  const int64_t M = ray_indices.size(0);
  for (const auto& [t, name] : {std::pair{&t_starts, "t_starts"}, {&t_ends, "t_ends"}})
    check_values(*t, op, name, at::kFloat, M, cpu, "one value per sample");
  check_tensor(idx, op, "idx", at::kLong, 1, cpu);
  const int64_t m = idx.size(0);
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t* rp = ray_indices.data_ptr<int64_t>();
  for (int64_t j = 0; j < m; ++j) {
    TORCH_CHECK(ip[j] >= 0 && ip[j] < M, op, ": idx[", j, "] = ", ip[j], " is outside [0, ",
                M, ")");
    TORCH_CHECK(rp[ip[j]] >= 0 && rp[ip[j]] < N, op, ": ray_indices[", ip[j], "] = ",
                rp[ip[j]], " is outside [0, ", N, ")");
  }
  at::Tensor pts = at::empty({m, 3}, origins.options());
  if (m > 0)
    packed_points_cpu(origins.data_ptr<float>(), dirs.data_ptr<float>(), rp,
                      t_starts.data_ptr<float>(), t_ends.data_ptr<float>(), ip, m,
                      pts.data_ptr<float>());
  return pts;
}

}  // namespace switchnerf
