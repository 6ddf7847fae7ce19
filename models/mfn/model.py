"""Matrix function network MFN(MACE) (thesis §6.3): MACE layers whose node features build a learnable
equivariant matrix per structure; the diagonal of a learnable matrix function of it updates the nodes.

Per layer t: (1) MACE interaction + product block → V_i; (2) H_ij from a radial-weighted channel-wise
tensor product of V_i, V_j through CG blocks, H_ii from V_i; (3) trace normalisation; (4) pole expansion
f(H) from one eigendecomposition per channel; (5) h_i = V_i + W · irreps(f(H)_ii) (diagonal update, Eq. 6.20); MACE readout.
The MACE blocks, radial basis, readouts and e3nn irreps are used as they are from mace-torch / e3nn.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from mace.modules.blocks import (
    AtomicEnergiesBlock,
    EquivariantProductBasisBlock,
    LinearNodeEmbeddingBlock,
    LinearReadoutBlock,
    NonLinearReadoutBlock,
    RadialEmbeddingBlock,
    RealAgnosticInteractionBlock,
    RealAgnosticResidualInteractionBlock,
    ScaleShiftBlock,
)
from mace.modules.utils import get_edge_vectors_and_lengths
from mace.tools.scatter import scatter_sum

from .matrix import BlockBasis, MatrixNorm, PoleExpansion, dense_blocks


@dataclass
class MFNConfig:
    """Architecture hyper-parameters (thesis Table 6.2 / §6.7.3 where given)."""

    atomic_numbers: list[int]
    atomic_energies_eV: list[float]
    r_max_A: float = 3.0
    num_layers: int = 2
    channels: int = 32  # MACE node channels K of K×0e + K×1o (thesis: 128)
    max_ell: int = 3  # spherical harmonics of the MACE layer
    correlation: int = 3
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    radial_MLP: list[int] = field(default_factory=lambda: [64, 64, 64])
    matrix_l_max: int = 1  # 0: s blocks ("L=0"); 1: s+p blocks ("L=1")
    matrix_channels: int = 16
    n_poles: int = 16
    pole_im_min: float = 0.05
    # weight of the V ⊗ V and V_i terms against the bond-direction terms: with these small the start is
    # a tight-binding-like H whose σ and π bands are both wide, so f(H) carries orientations along a
    # chain from the first step; a narrow π band between the poles transmits nothing (evanescent)
    matrix_product_scale: float = 0.1
    # initial Im z_s, geometric spread over the poles (normalised spectrum, variance 1). Poles near 1 keep
    # the energy surface smooth; those near 0.1 resolve the levels of a 12–30 carbon chain, whose length
    # parity and end-to-end dihedral decay along the chain as exp(−Im z · d / v). All at 0.5 left the
    # dihedral signal at n_C = 12 at 1e-4 of the per-atom energy spread (models/mfn/diagnose.py)
    pole_im_init: tuple[float, float] = (0.1, 1.0)
    matrix_norm: str = "batch"
    readout_mlp: int = 16
    avg_num_neighbors: float = 2.0
    scale: float = 1.0
    shift: float = 0.0


class MatrixFunctionLayer(torch.nn.Module):
    """Steps (2)–(5) of one MFN layer: node features V -> non-local update of V.

    Off-site blocks (Eq. 6.10–6.11) have two parts: R_c(r_ij)(V_i ⊗ V_j) and a Slater–Koster-like
    part R'_c(r_ij) u_i u_j Y^l(r̂_ij), l ≤ 2, from scalar node features u. The second gives p–p blocks
    an isotropic (δ) and an r̂r̂ (l = 2) term on every bond: on a linear chain the inner atoms'
    vector features vanish by symmetry, so V_i ⊗ V_j alone leaves the p orbitals uncoupled there and
    the orientation of one chain end cannot reach the other. On-site blocks get, besides V_i ⊗ V_i and
    V_i, the neighbourhood sum Σ_j R''_c(r_ij) u_j Y^l(r̂_ij), whose l = 2 part carries the plane of a
    CH2 group (the vectors V_i of its carbon all lie on the chain axis).
    """

    def __init__(self, node_irreps: o3.Irreps, num_bessel: int, cfg: MFNConfig, node_attr_irreps: o3.Irreps | None = None):
        super().__init__()
        c = cfg.matrix_channels
        self.c = c
        self.basis = BlockBasis(cfg.matrix_l_max)
        irreps_c = o3.Irreps([(c, ir) for _, ir in self.basis.basis])
        path_irreps = self.basis.path_irreps(c)
        self.project = o3.Linear(node_irreps, irreps_c)
        # channel-wise tensor product V_i^c ⊗ V_j^c onto every (l1, l2, l3) path, weighted by R_c(r_ij)
        instructions = [(a, b, k, "uuu", True) for k, (a, b, _) in enumerate(self.basis.paths)]
        self.edge_tp = o3.TensorProduct(
            irreps_c, irreps_c, path_irreps, instructions, shared_weights=False, internal_weights=False
        )
        self.radial = e3nn_nn.FullyConnectedNet(
            [num_bessel] + cfg.radial_MLP + [self.edge_tp.weight_numel], torch.nn.functional.silu
        )
        # bond-direction terms u ⊗ Y^l(r̂_ij) onto the paths with l3 ∈ {0e, 1o, 2e}
        self.sh_irreps = o3.Irreps.spherical_harmonics(2 * cfg.matrix_l_max)
        self.sh = o3.SphericalHarmonics(self.sh_irreps, normalize=True, normalization="component")
        scalars_c = o3.Irreps(f"{c}x0e")
        sh_index = {ir: n for n, (_, ir) in enumerate(self.sh_irreps)}
        dir_instr = [(0, sh_index[ir], k, "uvu", True) for k, (_, _, ir) in enumerate(self.basis.paths) if ir in sh_index]
        self.scalars = o3.Linear(node_irreps, scalars_c)
        # element embedding e_Z, O(1) from the start: the bond-direction and neighbourhood terms are built
        # from u = e_Z + scalars(V), not from scalars(V) alone (see matrix())
        n_el = len(cfg.atomic_numbers)
        self.species = o3.Linear(node_attr_irreps or o3.Irreps(f"{n_el}x0e"), scalars_c)
        self.bond_tp = o3.TensorProduct(
            scalars_c, self.sh_irreps, path_irreps, dir_instr, shared_weights=False, internal_weights=False
        )
        self.bond_radial = e3nn_nn.FullyConnectedNet(
            [num_bessel] + cfg.radial_MLP + [self.bond_tp.weight_numel], torch.nn.functional.silu
        )
        self.site_tp = o3.TensorProduct(
            scalars_c, self.sh_irreps, path_irreps, dir_instr, shared_weights=False, internal_weights=False
        )
        self.site_radial = e3nn_nn.FullyConnectedNet(
            [num_bessel] + cfg.radial_MLP + [self.site_tp.weight_numel], torch.nn.functional.silu
        )
        self.avg_num_neighbors = cfg.avg_num_neighbors
        self.product_scale = cfg.matrix_product_scale
        self.onsite_tp = o3.TensorProduct(irreps_c, irreps_c, path_irreps, instructions)
        self.onsite_linear = o3.Linear(node_irreps, path_irreps)
        self.norm = MatrixNorm(c, cfg.matrix_norm)
        self.function = PoleExpansion(c, cfg.n_poles, cfg.pole_im_min, im_init=cfg.pole_im_init)
        self.update = o3.Linear(path_irreps, node_irreps)

    def matrix(self, V, node_attrs, edge_feats, edge_vectors, edge_index, batch, ptr):
        """The normalised H [B, c, n·M, n·M] and its real-row mask.

        u = e_Z + scalars(V): hoppings go as u_i u_j and on-site terms as u_j, so with u = scalars(V) alone
        (untrained MACE features are ~0.05 on inner carbons) the C–C hopping started ~10× below the on-site
        spread and below the pole widths: H was nearly diagonal and f(H) local, so a chain's parity and
        dihedral signals, ~(t/Im z)^d, reached the energy at 1e-13–1e-3 of the per-atom spread at n_C = 12
        (models/mfn/diagnose.py), with gradients to match. The element embedding gives every bond an O(1)
        hopping per element pair and channel (Slater–Koster-like); scalars(V) modulate it with geometry.
        """
        sender, receiver = edge_index[0], edge_index[1]
        Vc = self.project(V)
        u = self.species(node_attrs) + self.scalars(V)
        Y = self.sh(edge_vectors)
        eps = self.edge_tp(Vc[sender], Vc[receiver], self.radial(edge_feats))
        eps = self.product_scale * eps + self.bond_tp(u[sender] * u[receiver], Y, self.bond_radial(edge_feats))
        off = self.basis.to_blocks(eps, self.c)
        site = self.site_tp(u[receiver], Y, self.site_radial(edge_feats))  # seen from the sender
        site = scatter_sum(site, sender, dim=0, dim_size=V.shape[0]) / self.avg_num_neighbors
        on = self.basis.to_blocks(self.product_scale * (self.onsite_tp(Vc, Vc) + self.onsite_linear(V)) + site, self.c)
        on = 0.5 * (on + on.transpose(-1, -2))
        H, mask = dense_blocks(off, edge_index, on, batch, ptr)
        return self.norm(H, mask), mask

    def forward(self, V, node_attrs, edge_feats, edge_vectors, edge_index, batch, ptr):
        H, _ = self.matrix(V, node_attrs, edge_feats, edge_vectors, edge_index, batch, ptr)
        fH = self.function(H)  # [B, c, n·M, n·M]
        B, c, nM, _ = fH.shape
        M = self.basis.M
        n_max = nM // M
        diag = torch.diagonal(fH.reshape(B, c, n_max, M, n_max, M), dim1=2, dim2=4)  # [B, c, M, M, n_max]
        local = torch.arange(batch.numel(), device=batch.device) - ptr[batch]
        blocks = diag.permute(0, 4, 1, 2, 3)[batch, local]  # [N, c, M, M]
        return V + self.update(self.basis.from_blocks(blocks))


class MFN(torch.nn.Module):
    """MFN(MACE) energy model; forward(batch dict of mace AtomicData) -> {energy, forces, node_energy}."""

    def __init__(self, cfg: MFNConfig):
        super().__init__()
        self.cfg = cfg
        n_el = len(cfg.atomic_numbers)
        self.register_buffer("atomic_numbers", torch.tensor(cfg.atomic_numbers, dtype=torch.int64))
        self.register_buffer("r_max", torch.tensor(cfg.r_max_A, dtype=torch.get_default_dtype()))
        K = cfg.channels
        hidden = o3.Irreps(f"{K}x0e + {K}x1o")
        node_attr_irreps = o3.Irreps(f"{n_el}x0e")
        self.node_embedding = LinearNodeEmbeddingBlock(node_attr_irreps, o3.Irreps(f"{K}x0e"))
        self.radial_embedding = RadialEmbeddingBlock(cfg.r_max_A, cfg.num_bessel, cfg.num_polynomial_cutoff)
        edge_feats_irreps = o3.Irreps(f"{self.radial_embedding.out_dim}x0e")
        sh_irreps = o3.Irreps.spherical_harmonics(cfg.max_ell)
        self.spherical_harmonics = o3.SphericalHarmonics(sh_irreps, normalize=True, normalization="component")
        target = (sh_irreps * K).sort()[0].simplify()
        self.atomic_energies_fn = AtomicEnergiesBlock(np.asarray(cfg.atomic_energies_eV, dtype=float))
        self.interactions = torch.nn.ModuleList()
        self.products = torch.nn.ModuleList()
        self.matrix_layers = torch.nn.ModuleList()
        self.readouts = torch.nn.ModuleList()
        node_in = o3.Irreps(f"{K}x0e")
        for t in range(cfg.num_layers):
            cls = RealAgnosticInteractionBlock if t == 0 else RealAgnosticResidualInteractionBlock
            self.interactions.append(
                cls(
                    node_attrs_irreps=node_attr_irreps,
                    node_feats_irreps=node_in,
                    edge_attrs_irreps=sh_irreps,
                    edge_feats_irreps=edge_feats_irreps,
                    target_irreps=target,
                    hidden_irreps=hidden,
                    avg_num_neighbors=cfg.avg_num_neighbors,
                    radial_MLP=cfg.radial_MLP,
                )
            )
            self.products.append(
                EquivariantProductBasisBlock(
                    node_feats_irreps=target,
                    target_irreps=hidden,
                    correlation=cfg.correlation,
                    num_elements=n_el,
                    use_sc=t > 0,
                )
            )
            self.matrix_layers.append(MatrixFunctionLayer(hidden, self.radial_embedding.out_dim, cfg, node_attr_irreps))
            if t < cfg.num_layers - 1:
                self.readouts.append(LinearReadoutBlock(hidden, o3.Irreps("0e")))
            else:
                self.readouts.append(
                    NonLinearReadoutBlock(
                        hidden, o3.Irreps(f"{cfg.readout_mlp}x0e"), torch.nn.functional.silu, o3.Irreps("0e")
                    )
                )
            node_in = hidden
        self.scale_shift = ScaleShiftBlock(scale=cfg.scale, shift=cfg.shift)

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def forward(self, data: dict, training: bool = False, compute_force: bool = True) -> dict:
        positions = data["positions"]
        if compute_force and not positions.requires_grad:
            positions.requires_grad_(True)
        batch, ptr, edge_index = data["batch"], data["ptr"], data["edge_index"]
        n_graphs = ptr.numel() - 1
        node_attrs = data["node_attrs"]
        vectors, lengths = get_edge_vectors_and_lengths(positions, edge_index, data["shifts"])
        edge_attrs = self.spherical_harmonics(vectors)
        edge_feats, cutoff = self.radial_embedding(lengths, node_attrs, edge_index, self.atomic_numbers)
        node_e0 = self.atomic_energies_fn(node_attrs)[:, 0]
        node_energy = node_e0
        h = self.node_embedding(node_attrs)
        for interaction, product, matrix_layer, readout in zip(
            self.interactions, self.products, self.matrix_layers, self.readouts
        ):
            m, sc = interaction(
                node_attrs=node_attrs,
                node_feats=h,
                edge_attrs=edge_attrs,
                edge_feats=edge_feats,
                edge_index=edge_index,
                cutoff=cutoff,
            )
            V = product(node_feats=m, sc=sc, node_attrs=node_attrs)
            h = matrix_layer(V, node_attrs, edge_feats, vectors, edge_index, batch, ptr)
            node_energy = node_energy + self.scale_shift(readout(h).squeeze(-1), torch.zeros_like(batch))
        energy = scatter_sum(node_energy, batch, dim=0, dim_size=n_graphs)
        out = {"energy": energy, "node_energy": node_energy, "forces": None}
        if compute_force:
            (grad,) = torch.autograd.grad(
                energy.sum(), positions, create_graph=training, retain_graph=training, allow_unused=True
            )
            out["forces"] = -grad if grad is not None else torch.zeros_like(positions)
        return out


def build(cfg: MFNConfig | dict) -> MFN:
    if isinstance(cfg, dict):
        cfg = MFNConfig(**cfg)
    return MFN(cfg)


def save(model: MFN, path: str, meta: dict | None = None) -> None:
    """Write {config, state_dict, meta} to path (temp name + rename)."""
    import os

    tmp = f"{path}.tmp"
    torch.save({"config": model.config_dict(), "state_dict": model.state_dict(), "meta": meta or {}}, tmp)
    os.replace(tmp, path)


def load(path: str, device: str = "cpu", dtype: torch.dtype = torch.float64) -> MFN:
    blob = torch.load(path, map_location=device, weights_only=True)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = build(blob["config"])
    finally:
        torch.set_default_dtype(prev)
    model.load_state_dict(blob["state_dict"])
    return model.to(device=device, dtype=dtype).eval()
