"""SwitchField: gate -> top-1 hash expert -> shared head -> density and colour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from switchnerf.config import ModelConfig
from switchnerf.encoding import HashExperts, HashGrid, SHEncoding
from switchnerf.errors import SwitchNerfError
from switchnerf.model.activations import density_activation
from switchnerf.model.background import SkyBackground
from switchnerf.model.grids import expert_levels, expert_specs, shared_grid
from switchnerf.moe.expert_parallel import ExpertParallelEncoder
from switchnerf.moe.gate import FixedCellRouter, GateOutput, HashGate
from switchnerf.moe.partition_init import PARTITION_UNITS
from switchnerf.moe.routing import GATE_SCALES, capacity_keep_mask, gate_scale
from switchnerf.ops.mlp import GroupedMLP, apply_mlp, make_mlp


@dataclass
class FieldOutput:
    """Per-sample outputs, all with leading dimension M.

    sigma [M] density per world unit; rgb [M, 3] in [0, 1] (None from ``density``);
    expert_id int64 [M]; gate_value [M]; probs [M, E] gate probabilities; kept bool [M]
    (False where the capacity limit of a training pass dropped the point: its expert
    features are zero).
    """

    sigma: torch.Tensor
    rgb: torch.Tensor | None
    expert_id: torch.Tensor
    gate_value: torch.Tensor
    probs: torch.Tensor
    kept: torch.Tensor


@dataclass
class Geometry:
    """What the density half of the field gives per point (leading dimension M): sigma [M]
    density per world unit; geo [M, G] features for the colour head; gate the routing;
    kept bool [M] (False where the capacity limit dropped the point)."""

    sigma: torch.Tensor
    geo: torch.Tensor
    gate: GateOutput
    kept: torch.Tensor


class SwitchField(nn.Module):
    """The heterogeneous mixture of hash experts (Switch-NeRF++).

    Points are in the unit-cube frame of the foreground box ([0, 1]^3); view directions
    are unit vectors in the world frame; image_index indexes the scene's camera table
    (train images first, then val) for the appearance embedding.

    Appearance for novel views: with ``image_index=None`` the mean of the trained
    embeddings is used (a neutral look; renders of new paths do not depend on which
    training image is nearest).

    Expert parallelism (:meth:`use_expert_parallel`): ``experts`` becomes this rank's
    :class:`~switchnerf.moe.expert_parallel.ExpertParallelEncoder`; every encode is then a
    collective (``collective`` is True), so every rank calls ``geometry`` / ``density`` the
    same number of times, also with no points.

    Gate scale (``cfg.routing.gate_scale``): the expert features go into the head
    multiplied by the gate value g (``product``) or by a straight-through factor whose
    value is 1 and whose gradient wrt g is 1 (``straight_through``; moe ``gate_scale``).

    Shared coarse grid (``cfg.experts.shared_levels`` > 0, :mod:`switchnerf.model.grids`):
    ``shared`` is a :class:`HashGrid` that encodes every point; the head's input is its
    features followed by the gate-scaled expert features (the gate scale and a capacity
    drop touch only the expert's part). It is replicated like the MLPs (a dense parameter
    under expert parallelism) and its table trains with the tables' learning rate.
    Without shared levels ``shared`` is None and the field is Switch-NeRF++ as before.
    """

    def __init__(self, cfg: ModelConfig, n_images: int):
        super().__init__()
        check_routing(cfg)
        self.cfg = cfg
        ex, rt, hd = cfg.experts, cfg.routing, cfg.head
        self.n_experts = ex.n_experts
        specs = expert_specs(ex)
        self.experts = HashExperts(specs, n_levels=expert_levels(ex),
                                   n_features_per_level=ex.n_features_per_level)
        self.shared: HashGrid | None = shared_grid(ex)
        if rt.kind == "gate":
            self.router: nn.Module | None = HashGate(rt.gate, ex.n_experts, rt.gate_hidden,
                                                     dense=rt.gate_dense)
            if rt.gate_init == "partition":
                self.router.start_from_partition([s.max_resolution for s in specs],
                                                 rt.gate_init_sharpness)
        elif rt.kind == "fixed":
            self.router = FixedCellRouter(rt.fixed_grid)
        else:
            self.router = None
        self.head = make_mlp(self.encoding_dim, hd.hidden, 1 + hd.geo_features, 1)
        self.dir_encoding = SHEncoding(hd.sh_degree)
        self.appearance = (nn.Embedding(max(n_images, 1), hd.appearance_dim)
                           if hd.appearance_dim > 0 else None)
        if self.appearance is not None:
            nn.init.normal_(self.appearance.weight, std=0.01)
        color_in = hd.geo_features + self.dir_encoding.output_dim + hd.appearance_dim
        self.color = make_mlp(color_in, hd.color_hidden, 3, hd.color_layers)
        self.background = SkyBackground(cfg.background) if cfg.background.enabled else None

    @property
    def encoding_dim(self) -> int:
        """Width of the head's input: the shared grid's features (if any) and an expert's."""
        shared = 0 if self.shared is None else self.shared.output_dim
        return shared + self.experts.output_dim

    # ------------------------------------------------------------------ routing and geometry
    def route(self, x: torch.Tensor) -> GateOutput:
        """Top-1 expert of each point x [M, 3] (unit cube)."""
        if self.router is None:
            m = x.shape[0]
            return GateOutput(torch.ones(m, 1, device=x.device),
                              torch.zeros(m, dtype=torch.long, device=x.device),
                              torch.ones(m, device=x.device))
        return self.router(x)

    def geometry(self, x: torch.Tensor) -> Geometry:
        """Route, encode and run the density head on unit-cube points x [M, 3]."""
        x = x.clamp(0.0, 1.0)
        gate = self.route(x)
        if self.drops_over_capacity():
            kept = capacity_keep_mask(gate.expert_id, gate.gate_value, self.n_experts,
                                      self.cfg.routing.capacity_factor)
        else:
            kept = torch.ones_like(gate.expert_id, dtype=torch.bool)
        feats = self.experts.encode(x, gate.expert_id)  # [M, L_e*F]
        scale = gate_scale(gate.gate_value, self.cfg.routing.gate_scale) * kept  # [M]
        # head input: [M, S*F] shared grid features (if any), then [M, L_e*F] gate-scaled
        # expert features
        prefix = None if self.shared is None else self.shared(x).to(feats.dtype)
        h = apply_mlp(self.head, feats, scale, prefix=prefix)
        sigma = density_activation(self.cfg.head.density_activation, h[:, 0].float())
        return Geometry(sigma, h[:, 1:], gate, kept)

    def drops_over_capacity(self) -> bool:
        """Whether ``geometry`` applies ``routing.capacity_factor`` now: only in a training
        pass (training mode with gradients). Rendering and occupancy updates keep every
        point, so their results do not depend on how many points are evaluated together."""
        return (self.cfg.routing.capacity_factor is not None and self.n_experts > 1
                and self.training and torch.is_grad_enabled())

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density sigma [M] at unit-cube points x [M, 3]."""
        if x.shape[0] == 0:
            if self.collective:  # the peers' exchange needs this rank, even with no points
                self.experts.encode(x.detach().float(),
                                    torch.zeros(0, dtype=torch.long, device=x.device))
            return x.new_zeros(0)
        return self.geometry(x).sigma

    # ------------------------------------------------------------------ expert parallelism
    @property
    def collective(self) -> bool:
        """Whether encoding is a collective over the ranks (expert parallelism, W > 1)."""
        return isinstance(self.experts, ExpertParallelEncoder) and self.experts.world_size > 1

    @property
    def expert_table(self) -> nn.Parameter:
        """The expert hash tables this process holds, flat: all of them, or with expert
        parallelism this rank's contiguous slice of the single-process table."""
        if isinstance(self.experts, ExpertParallelEncoder):
            return self.experts.local.params
        return self.experts.params

    def use_expert_parallel(self, *, rank: int, world_size: int, group=None) -> None:
        """Keep only this rank's E / W experts (their current values) and encode through
        the sample exchange. Call before building the optimiser."""
        if isinstance(self.experts, ExpertParallelEncoder):
            raise TypeError("use_expert_parallel: the field is already expert parallel")
        self.experts = ExpertParallelEncoder.from_experts(self.experts, rank=rank,
                                                          world_size=world_size, group=group)

    def rgb(self, geo: torch.Tensor, directions: torch.Tensor,
              image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Colour rgb [M, 3] in [0, 1] from geometry features geo [M, G] (``geometry(x).geo``),
        unit world-frame view directions [M, 3] and camera-table indices [M] (None: the
        mean appearance)."""
        parts = [geo, self.dir_encoding(directions).to(geo.dtype)]
        if self.appearance is not None:
            parts.append(self.appearance_for(image_index, geo.shape[0], geo.device).to(geo.dtype))
        return torch.sigmoid(apply_mlp(self.color, torch.cat(parts, dim=-1)).float())

    def rgb_of_rays(self, geo: torch.Tensor, ray_directions: torch.Tensor, ray_index: torch.Tensor,
                    ray_image_index: torch.Tensor | None = None) -> torch.Tensor:
        """``rgb(geo, ray_directions[ray_index], ray_image_index[ray_index])`` with the
        per-ray inputs given once per ray: geo [M, G], unit world-frame ray_directions [N, 3],
        ray_index int64 [M] (the ray of each sample), ray_image_index [N] or None (the mean
        appearance). The view encoding and appearance are evaluated per ray, and on the CPU
        without gradients their share of the colour MLP's first layer too."""
        return self.color_of_rays(ray_directions, ray_image_index, dtype=geo.dtype)(geo, ray_index)

    def color_of_rays(self, ray_directions: torch.Tensor,
                      ray_image_index: torch.Tensor | None = None, *,
                      dtype: torch.dtype = torch.float32
                      ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The colour head with the per-ray inputs of N rays prepared once: returns
        ``f(geo [K, G], ray_index int64 [M], rows=None) -> rgb [M, 3]``, equal to
        :meth:`rgb_of_rays` of ``geo[rows]`` (all of geo when None; rows are read in place)
        for calls on successive subsets of the rays' samples (the front-to-back rounds)."""
        n = ray_directions.shape[0]
        parts = [self.dir_encoding(ray_directions).to(dtype)]
        if self.appearance is not None:
            parts.append(self.appearance_for(ray_image_index, n, ray_directions.device).to(dtype))
        head = GroupedMLP(self.color, torch.cat(parts, dim=-1), self.cfg.head.geo_features)

        def rgb(geo: torch.Tensor, ray_index: torch.Tensor,
                rows: torch.Tensor | None = None) -> torch.Tensor:
            return torch.sigmoid(head(geo, ray_index, rows).float())

        return rgb

    def forward(self, x: torch.Tensor, directions: torch.Tensor,
                image_index: torch.Tensor | None = None) -> FieldOutput:
        g = self.geometry(x)
        rgb = self.rgb(g.geo, directions, image_index)
        return FieldOutput(g.sigma, rgb, g.gate.expert_id, g.gate.gate_value, g.gate.probs,
                           g.kept)

    def appearance_for(self, image_index: torch.Tensor | None, m: int, device) -> torch.Tensor:
        """Appearance embeddings [M, A]; the mean embedding where image_index is None."""
        if image_index is None:
            return self.appearance.weight.mean(0, keepdim=True).expand(m, -1)
        return self.appearance(image_index.clamp(0, self.appearance.num_embeddings - 1))

    def table_parameters(self) -> list[nn.Parameter]:
        """Hash-table parameters (their own learning rate): the expert table first (the
        optimiser state layout of ``switchnerf.train.dist_state`` relies on it), then the
        shared grid's and the gate's, where present."""
        params = [self.expert_table]
        if self.shared is not None:
            params.append(self.shared.params)
        if isinstance(self.router, HashGate):
            params.append(self.router.encoding.params)
        return params

    def mlp_parameters(self) -> list[nn.Parameter]:
        tables = {id(p) for p in self.table_parameters()}
        return [p for p in self.parameters() if id(p) not in tables]

    def set_gate_learning(self, learning: bool) -> None:
        """Let the learned gate's table and MLP get gradients (``learning``) or freeze them:
        a frozen gate routes as it stands and costs no backward pass (no-op without a
        learned gate)."""
        table, mlp = self.gate_parameters()
        for p in table + mlp:
            if p.requires_grad != learning:
                p.requires_grad_(learning)
                p.grad = None

    def gate_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The learned gate's (table, MLP) parameters; both empty without a learned gate.
        They are also among ``table_parameters`` / ``mlp_parameters``."""
        if not isinstance(self.router, HashGate):
            return [], []
        return [self.router.encoding.params], list(self.router.mlp.parameters())


GATE_INITS = ("random", "partition")


def check_routing(cfg: ModelConfig) -> None:
    """Raise SwitchNerfError naming the key for a bad gate option of ``cfg.routing``."""
    rt = cfg.routing
    if rt.gate_scale not in GATE_SCALES:
        raise SwitchNerfError(f"config: model.routing.gate_scale: expected one of "
                              f"{', '.join(GATE_SCALES)}, got {rt.gate_scale!r}")
    if rt.gate_init not in GATE_INITS:
        raise SwitchNerfError(f"config: model.routing.gate_init: expected one of "
                              f"{', '.join(GATE_INITS)}, got {rt.gate_init!r}")
    if rt.kind == "gate" and rt.gate_init == "partition" and rt.gate_hidden < PARTITION_UNITS:
        raise SwitchNerfError(f"config: model.routing.gate_hidden: the partition start needs "
                              f">= {PARTITION_UNITS} hidden units, got {rt.gate_hidden}")
    if not rt.gate_init_sharpness > 0:
        raise SwitchNerfError(f"config: model.routing.gate_init_sharpness: must be > 0, "
                              f"got {rt.gate_init_sharpness}")
    if not rt.gate_lr_factor >= 0:
        raise SwitchNerfError(f"config: model.routing.gate_lr_factor: must be >= 0, "
                              f"got {rt.gate_lr_factor}")
    if rt.gate_eps is not None and not rt.gate_eps > 0:
        raise SwitchNerfError(f"config: model.routing.gate_eps: must be > 0 or null, "
                              f"got {rt.gate_eps}")
