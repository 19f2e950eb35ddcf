"""The pure-torch hash encoding against hand-computed rows and an independent scalar model."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from switchnerf.encoding import GridSpec, LevelTable
from switchnerf.ops.hash_encode_torch import _fma_half_f32, hash_encode_reference

P1, P2 = 2654435761, 805459861


def _round_f32(v: Fraction) -> float:
    """Round an exact rational to the nearest float32 (ties to even); normal range only."""
    if v == 0:
        return 0.0
    sign, v = (-1, -v) if v < 0 else (1, v)
    e = math.floor(math.log2(v))
    while Fraction(2) ** e > v:
        e -= 1
    while Fraction(2) ** (e + 1) <= v:
        e += 1
    q = v / Fraction(2) ** (e - 23)
    n = math.floor(q)
    if q - n > Fraction(1, 2) or (q - n == Fraction(1, 2) and n % 2 == 1):
        n += 1
    return sign * float(n * Fraction(2) ** (e - 23))


def _naive_levels(base, pls, log2_t, n_levels, first_row, table_size=None):
    """(scale, res, size, offset, hashed) per level, re-derived from tcnn's formulas
    (``table_size`` rows per hashed level in place of ``2 ** log2_t`` when given)."""
    out, offset = [], first_row
    for lvl in range(n_levels):
        scale = np.exp2(np.float32(lvl) * np.log2(np.float32(pls))) * np.float32(base)
        scale = np.float32(scale - np.float32(1))
        res = math.ceil(float(scale)) + 1
        size = min((res**3 + 7) // 8 * 8, table_size or 2**log2_t)
        out.append((float(scale), res, size, offset, size < res**3))
        offset += size
    return out, offset


def _naive_point(x, table, levels):
    """Encode one point (three float32 values) with scalar Python math."""
    out = []
    for scale, res, size, offset, hashed in levels:
        pos = [_round_f32(Fraction(scale) * Fraction(xd) + Fraction(1, 2)) for xd in x]
        grid = [math.floor(p) for p in pos]
        frac = [np.float32(p) - np.float32(g) for p, g in zip(pos, grid)]
        feats = [0.0] * len(table[0])
        for c in range(8):
            w, corner = np.float32(1), []
            for d in range(3):
                bit = (c >> d) & 1
                w = np.float32(w * (frac[d] if bit else np.float32(1) - frac[d]))
                corner.append((grid[d] + bit) % 2**32)
            if hashed:
                index = (corner[0] ^ (corner[1] * P1) ^ (corner[2] * P2)) % 2**32
            else:
                index = (corner[0] + corner[1] * res + corner[2] * res * res) % 2**32
            row = offset + index % size
            for f in range(len(feats)):
                feats[f] += float(w) * table[row][f]
        out += feats
    return out


def test_rows_at_a_vertex_dense_and_hashed():
    # base 9, pls 2, one level: scale 8, res 9. x = (3, 5, 13) / 16 gives pos = 8x + 0.5 =
    # (2, 3, 7) exactly: the point sits on vertex (2, 3, 7) with weight 1.
    x = torch.tensor([[3 / 16, 5 / 16, 13 / 16]])
    # T = 2**10: 729 -> 736 rows, dense: 2 + 3 * 9 + 7 * 81 = 596.
    dense = LevelTable.for_grid(
        n_levels=1, n_features=2, log2_hashmap_size=10, base_resolution=9, per_level_scale=2.0
    )
    # T = 2**8 < 729: hashed, 2 ^ (3 * 2654435761 mod 2**32) ^ (7 * 805459861 mod 2**32)
    # = 2 ^ 3668339987 ^ 1343251731, and mod 256 that is 2.
    hashed = LevelTable.for_grid(
        n_levels=1, n_features=2, log2_hashmap_size=8, base_resolution=9, per_level_scale=2.0
    )
    assert (2 ^ 3668339987 ^ 1343251731) % 256 == 2
    for lv, row in ((dense, 596), (hashed, 2)):
        table = torch.randn(lv.n_rows, 2)
        out = hash_encode_reference(x, table, None, lv)
        assert torch.equal(out[0], table[row])


def test_level_major_layout():
    lv = LevelTable.for_grid(
        n_levels=3, n_features=2, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0
    )
    table = torch.empty(lv.n_rows, 2)
    for lvl in range(3):  # every row of level l holds (10 l, 10 l + 1)
        first, size = int(lv.offset[0, lvl]), int(lv.size[0, lvl])
        table[first : first + size] = torch.tensor([10.0 * lvl, 10.0 * lvl + 1])
    out = hash_encode_reference(torch.rand(7, 3), table, None, lv)
    expected = torch.tensor([0.0, 1.0, 10.0, 11.0, 20.0, 21.0]).expand(7, 6)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_matches_scalar_model_on_mixed_dense_and_hashed_experts():
    gen = torch.Generator().manual_seed(0)
    configs = [(3, 1.5, 10), (4, 2.0, 8), (2, 3.1, 9), (16, 6.0, 6)]  # base, pls, log2 T
    specs = [GridSpec(b, t, per_level_scale=p) for b, p, t in configs]
    lv = LevelTable.for_experts(specs, n_levels=3, n_features=2)
    naive, first = [], 0
    for b, p, t in configs:
        levels, first = _naive_levels(b, p, t, 3, first)
        naive.append(levels)
    assert first == lv.n_rows
    assert "mixed" in lv.level_kinds
    table = torch.randn(lv.n_rows, 2, dtype=torch.float64, generator=gen)
    x = torch.rand(48, 3, generator=gen)
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.999, 1.0, 0.0]])
    expert_id = torch.randint(0, 4, (48,), generator=gen)
    out = hash_encode_reference(x, table, expert_id, lv)
    rows = table.tolist()
    expected = [_naive_point(p, rows, naive[e]) for p, e in zip(x.tolist(), expert_id.tolist())]
    # float64 table: any float32 weight or row difference would show far above 1e-12.
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_matches_scalar_model_with_non_power_of_two_tables():
    """Explicit hashmap sizes: the hash is reduced modulo the size, not masked."""
    gen = torch.Generator().manual_seed(2)
    configs = [(3, 1.5, 10, 1000), (4, 2.0, 8, None), (2, 3.1, 9, 333), (16, 6.0, 6, 72)]
    specs = [GridSpec(b, t, per_level_scale=p, hashmap_size=h) for b, p, t, h in configs]
    lv = LevelTable.for_experts(specs, n_levels=3, n_features=2)
    naive, first = [], 0
    for b, p, t, h in configs:
        levels, first = _naive_levels(b, p, t, 3, first, table_size=h)
        naive.append(levels)
    assert first == lv.n_rows
    # 1000 exceeds every level of expert 0 (all dense); 333 caps expert 2's hashed levels.
    assert lv.size.tolist() == [[32, 128, 344], [64, 256, 256], [8, 333, 333], [72, 72, 72]]
    assert lv.pow2_sizes == (False, False, False)
    table = torch.randn(lv.n_rows, 2, dtype=torch.float64, generator=gen)
    x = torch.rand(64, 3, generator=gen)
    expert_id = torch.randint(0, 4, (64,), generator=gen)
    out = hash_encode_reference(x, table, expert_id, lv)
    rows = table.tolist()
    expected = [_naive_point(p, rows, naive[e]) for p, e in zip(x.tolist(), expert_id.tolist())]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # one expert alone: every level "hashed" with a non-power-of-two size
    single = LevelTable.for_experts(specs[3:], n_levels=3, n_features=2)
    assert single.level_kinds == ("hashed",) * 3 and single.pow2_sizes == (False,) * 3
    out = hash_encode_reference(x, table[lv.expert_rows(3)[0]:], None, single)
    expected = [_naive_point(p, rows, naive[3]) for p in x.tolist()]  # absolute rows
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_position_is_a_single_rounding_fma():
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.rand(600, generator=gen), torch.rand(600, generator=gen) * 2**-9])
    scale = torch.tensor([[2074.9414]], dtype=torch.float32)
    got = _fma_half_f32(x.view(-1, 1), scale).view(-1).tolist()
    s = Fraction(float(scale))
    exact = [_round_f32(s * Fraction(v) + Fraction(1, 2)) for v in x.tolist()]
    assert got == exact
    twice_rounded = (x * scale.view(()) + 0.5).tolist()
    assert twice_rounded != exact  # the check above can tell a fused from an unfused sum


def test_gradcheck_table_and_points():
    # base 2, pls 2, T = 2**3: level 0 res 2 (8 rows, dense), level 1 res 4 (64 > 8, hashed).
    lv = LevelTable.for_grid(
        n_levels=2, n_features=2, log2_hashmap_size=3, base_resolution=2, per_level_scale=2.0
    )
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(lv.n_rows, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    x = torch.rand(6, 3, generator=gen) * 0.9 + 0.05
    assert torch.autograd.gradcheck(lambda t: hash_encode_reference(x, t, None, lv), (table,))
    x64 = x.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: hash_encode_reference(p, table.detach(), None, lv), (x64,)
    )


def test_empty_batch_and_shapes():
    lv = LevelTable.for_grid(
        n_levels=2, n_features=4, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0
    )
    table = torch.randn(lv.n_rows, 4, requires_grad=True)
    out = hash_encode_reference(torch.zeros(0, 3), table, torch.zeros(0, dtype=torch.long), lv)
    assert out.shape == (0, 8)
    out.sum().backward()
    assert torch.count_nonzero(table.grad) == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    specs = [GridSpec(3, 10, per_level_scale=1.5), GridSpec(16, 6, per_level_scale=6.0)]
    lv = LevelTable.for_experts(specs, n_levels=3, n_features=2)
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(lv.n_rows, 2, generator=gen, requires_grad=True)
    x = torch.rand(500, 3, generator=gen)
    expert_id = torch.randint(0, 2, (500,), generator=gen)
    upstream = torch.randn(500, 6, generator=gen)
    out = hash_encode_reference(x, table, expert_id, lv)
    (grad,) = torch.autograd.grad((out * upstream).sum(), table)
    table_cuda = table.detach().cuda().requires_grad_(True)
    out_cuda = hash_encode_reference(x.cuda(), table_cuda, expert_id.cuda(), lv.to("cuda"))
    (grad_cuda,) = torch.autograd.grad((out_cuda * upstream.cuda()).sum(), table_cuda)
    torch.testing.assert_close(out_cuda.cpu(), out, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_cuda.cpu(), grad, rtol=0, atol=1e-5)
