"""Matrix function network: symmetry, the matrix and its function, training and MD (thesis ch. 6)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reactforge.models.mfn  # noqa: F401  (mace before e3nn)
from e3nn import o3
from mace.tools.utils import AtomicNumberTable

from reactforge.models.mfn import data as mfn_data
from reactforge.models.mfn.cumulene import cumulene
from reactforge.models.mfn.matrix import BlockBasis, resolvent_function
from reactforge.models.mfn.model import MFNConfig, build

Z = AtomicNumberTable([1, 6])


@pytest.fixture(autouse=True, scope="module")
def float64():
    prev, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # tiny matrices: extra OpenMP threads only add contention
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(prev)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models_by_l(float64):
    return {0: tiny(0), 1: tiny(1)}


def tiny(l_max: int = 1, **kw) -> torch.nn.Module:
    cfg = dict(
        atomic_numbers=[1, 6], atomic_energies_eV=[-10.0, -50.0], channels=4, max_ell=2, correlation=2,
        matrix_channels=2, n_poles=3, matrix_l_max=l_max, radial_MLP=[8], matrix_norm="layer",
    )
    cfg.update(kw)
    return build(MFNConfig(**cfg)).eval()


def molecule(n_c: int = 4, phi: float = 40.0, seed: int = 0):
    a = cumulene(n_c, phi)
    a.positions += np.random.default_rng(seed).normal(0, 0.05, a.positions.shape)
    return a


def batch_of(atoms_list):
    for a in atoms_list:
        a.info.setdefault("REF_energy", 0.0)
        a.arrays.setdefault("REF_forces", np.zeros((len(a), 3)))
    return next(iter(mfn_data.loader(mfn_data.graphs(atoms_list, Z, 3.0), len(atoms_list)))).to_dict()


def energy_forces(model, atoms):
    out = model(batch_of([atoms.copy()]))
    return out["energy"].detach()[0], out["forces"].detach()


def random_orthogonal(seed: int, reflect: bool) -> np.ndarray:
    torch.manual_seed(seed)
    R = o3.rand_matrix().numpy()
    return -R if reflect else R


@pytest.mark.parametrize("l_max", [0, 1])
@pytest.mark.parametrize("reflect", [False, True])
def test_energy_invariant_forces_equivariant_under_O3(models_by_l, l_max, reflect):
    model = models_by_l[l_max]
    a = molecule()
    e, f = energy_forces(model, a)
    R = random_orthogonal(3, reflect)
    b = a.copy()
    b.positions = a.positions @ R.T + np.array([0.3, -1.2, 2.0])
    e_r, f_r = energy_forces(model, b)
    assert abs(e_r - e) <= 1e-8 * abs(e)
    expected = f @ torch.from_numpy(R).T
    assert torch.linalg.norm(f_r - expected) <= 1e-8 * torch.linalg.norm(f)
    assert torch.linalg.norm(f) > 1e-3  # the check is not vacuous


def test_permutation_invariant(models_by_l):
    model = models_by_l[1]
    a = molecule(5)
    perm = np.random.default_rng(1).permutation(len(a))
    e, f = energy_forces(model, a)
    e_p, f_p = energy_forces(model, a[perm])
    assert abs(e_p - e) <= 1e-10 * abs(e)
    assert torch.allclose(f_p, f[perm], atol=1e-10)


def _matrix(model, atoms):
    """The first layer's normalised H (one graph, [c, n·M, n·M])."""
    b = batch_of([atoms.copy()])
    m = model
    from mace.modules.utils import get_edge_vectors_and_lengths

    vec, length = get_edge_vectors_and_lengths(b["positions"], b["edge_index"], b["shifts"])
    edge_feats, cutoff = m.radial_embedding(length, b["node_attrs"], b["edge_index"], m.atomic_numbers)
    h = m.node_embedding(b["node_attrs"])
    msg, sc = m.interactions[0](
        node_attrs=b["node_attrs"], node_feats=h, edge_attrs=m.spherical_harmonics(vec),
        edge_feats=edge_feats, edge_index=b["edge_index"], cutoff=cutoff,
    )
    V = m.products[0](node_feats=msg, sc=sc, node_attrs=b["node_attrs"])
    H, mask = m.matrix_layers[0].matrix(V, b["node_attrs"], edge_feats, vec, b["edge_index"], b["batch"], b["ptr"])
    return H[0].detach()


@pytest.mark.parametrize("reflect", [False, True])
def test_matrix_symmetric_and_transforms_as_D_kron_D(models_by_l, reflect):
    model = models_by_l[1]
    a = molecule(4)
    H = _matrix(model, a)
    assert torch.allclose(H, H.transpose(-1, -2), atol=1e-12)
    assert H.abs().max() > 1e-3
    R = random_orthogonal(5, reflect)
    b = a.copy()
    b.positions = a.positions @ R.T
    H_r = _matrix(model, b)
    D = o3.Irreps("0e + 1o").D_from_matrix(torch.from_numpy(R))  # s ⊕ p block representation
    Dfull = torch.block_diag(*[D] * len(a))
    assert torch.allclose(H_r, Dfull @ H @ Dfull.T, atol=1e-9)
    # sp blocks are not invariant, so this is a real test of D ⊗ D and not of invariance
    assert not torch.allclose(H_r, H, atol=1e-3)


def test_block_basis_is_orthonormal_change_of_basis():
    basis = BlockBasis(1)
    G = basis.G.reshape(basis.G.shape[0], -1)
    assert basis.M == 4 and G.shape == (16, 16)  # 2×0e + 2×1o + 1e + 2e = 16 = 4×4
    assert torch.allclose(G @ G.T, torch.eye(16), atol=1e-12)


def test_resolvent_expansion_matches_eigendecomposition(models_by_l):
    """f(H) by LU solves with a model's learnable poles equals U f(Λ) U^T from eigh (Eq. 6.14 vs 6.24)."""
    function = models_by_l[1].matrix_layers[0].function
    z, w = function.poles().detach(), function.weights().detach()
    assert torch.all(z.imag > 0)
    torch.manual_seed(2)
    A = torch.randn(z.shape[0], 12, 12)
    H = 0.5 * (A + A.transpose(-1, -2))
    f = function(H[None])[0]
    lam, U = torch.linalg.eigh(H)
    g = (2 * (w[:, None, :] / (z[:, None, :] - lam[..., None].to(z.dtype))).sum(-1)).real  # f(λ) per channel
    ref = U @ torch.diag_embed(g) @ U.transpose(-1, -2)
    assert torch.allclose(f.detach(), ref, atol=1e-10)
    assert ref.abs().max() > 1e-2


def test_pole_expansion_differentiates_twice():
    """Forces are trained, so second derivatives through the LU solve must match finite differences."""
    torch.manual_seed(3)
    A = torch.randn(1, 6, 6)
    H0 = 0.5 * (A + A.transpose(-1, -2))
    z = torch.complex(torch.randn(1, 3), torch.rand(1, 3) + 0.2)
    w = torch.complex(torch.randn(1, 3), torch.randn(1, 3))

    def scalar(x):
        return resolvent_function(H0 * x, z, w).diagonal(dim1=-2, dim2=-1).sum()

    x = torch.tensor(0.7, requires_grad=True)
    (g,) = torch.autograd.grad(scalar(x), x, create_graph=True)
    (gg,) = torch.autograd.grad(g, x)
    h = 1e-4
    fd = (scalar(torch.tensor(0.7 + h)) - 2 * scalar(torch.tensor(0.7)) + scalar(torch.tensor(0.7 - h))) / h**2
    assert torch.isclose(gg, fd, rtol=1e-5)


@pytest.mark.parametrize("degenerate", [False, True])
def test_spectral_path_matches_lu_to_second_derivatives(degenerate):
    """The eigendecomposition path gives the LU path's f(H) and the same first and second derivatives
    (what training on forces differentiates) with respect to H, poles and weights, also where H has
    degenerate eigenvalues (two identical chains: every level twice), where eigenvector derivatives
    are undefined."""
    from reactforge.models.mfn.matrix import PoleExpansion

    torch.manual_seed(4)
    c, S, n = 3, 4, 6
    pe = PoleExpansion(c, S, im_init=(0.1, 1.0))
    A = torch.randn(2, c, n, n)
    H = A + A.transpose(-1, -2)
    if degenerate:
        chain = torch.diag(torch.ones(2), 1) + torch.diag(torch.ones(2), -1)
        H[1] = torch.block_diag(chain, chain)
        assert torch.linalg.eigvalsh(H[1, 0]).diff().abs().min() < 1e-12
    H.requires_grad_(True)
    G, Y = torch.randn(2, c, n, n), torch.randn(2, c, n, n)  # generic, non-symmetric upstream gradients
    params = list(pe.parameters())
    results = []
    for f in (pe.lu, pe):
        F = f(H)
        (dH,) = torch.autograd.grad((F * G).sum(), H, create_graph=True)  # like forces = −∂E/∂x
        second = torch.autograd.grad((dH * Y).sum(), [H, *params])  # like ∂(force loss)/∂(H, θ)
        first = torch.autograd.grad((f(H) * G).sum(), params)
        results.append([F.detach(), dH.detach(), *second, *first])
    lu, spectral = results
    for k, (a, b) in enumerate(zip(lu, spectral)):
        assert torch.allclose(b, a, atol=1e-10, rtol=1e-9), (k, (a - b).abs().max())
        assert a.abs().max() > 1e-3, k


def test_model_energy_forces_and_force_loss_gradient_match_lu_path(models_by_l, monkeypatch):
    """A whole MFN: energy, forces and the parameter gradient of a force loss are the same with the
    spectral and the LU matrix function."""
    from reactforge.models.mfn import matrix as M

    model, atoms = models_by_l[1], molecule(5, 20.0)

    def outputs():
        model.zero_grad()
        out = model(batch_of([atoms.copy()]), training=True, compute_force=True)
        (out["forces"].pow(2).sum() + out["energy"].sum()).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return out["energy"].detach(), out["forces"].detach(), grads

    spectral = outputs()
    monkeypatch.setattr(M.PoleExpansion, "forward", M.PoleExpansion.lu)
    lu = outputs()
    assert torch.allclose(spectral[0], lu[0], atol=1e-10)
    assert torch.allclose(spectral[1], lu[1], atol=1e-9) and lu[1].abs().max() > 1e-3
    assert len(spectral[2]) == len(lu[2])
    for a, b in zip(lu[2], spectral[2]):
        assert torch.allclose(b, a, atol=1e-8, rtol=1e-7), (a - b).abs().max()


def _decay_rate(im: float, n: int = 60) -> float:
    """Slope of −log |(zI − L)^-1|_{i,i+d} against graph distance d on a path-graph Laplacian (Fig. 6.6)."""
    L = 2 * torch.eye(n) - torch.diag(torch.ones(n - 1), 1) - torch.diag(torch.ones(n - 1), -1)
    L[0, 0] = L[-1, -1] = 1.0
    z = torch.complex(torch.tensor([[2.0, 2.0]]), torch.tensor([[im, im]]))
    # w = ½ gives 2 Re[½ R] = Re R; w = −i/2 gives Im R: together |R_ij|
    w = torch.complex(torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, -0.5]]))
    re = resolvent_function(L[None].expand(2, n, n), z[:, :1].expand(2, 1), w[:, :1].expand(2, 1))[0]
    im_part = resolvent_function(L[None], z[:, 1:], w[:, 1:])[0]
    R = torch.sqrt(re**2 + im_part**2)
    d = torch.arange(1, 40)
    return -np.polyfit(d.numpy(), np.log(R[10, 10 + d].numpy()), 1)[0]


def test_combes_thomas_locality_controlled_by_imaginary_part():
    """|(zI − H)^-1_ij| ≤ C exp(−c γ d_ij): shrinking Im z makes the function less local (§6.5.2)."""
    rates = [_decay_rate(im) for im in (1.0, 0.3, 0.1, 0.03)]
    assert all(r1 > r2 for r1, r2 in zip(rates, rates[1:])), rates
    assert rates[0] > 5 * rates[-1]


@pytest.mark.parametrize("l_max", [0, 1])
def test_model_is_nonlocal_beyond_receptive_field(models_by_l, l_max):
    """Stretching the far C–H bonds of a 10-carbon chain changes the energy of carbon 0, ≥ 11 Å away:
    out of reach of 2 local layers with r_max = 3 Å (receptive field 6 Å), so it comes from f(H)."""
    model = models_by_l[l_max]
    a = cumulene(10, 0.0)
    b = a.copy()
    far = [len(a) - 2, len(a) - 1]
    b.positions[far] += 0.1 * (b.positions[far] - b.positions[9]) / np.linalg.norm(b.positions[far] - b.positions[9], axis=1)[:, None]
    assert np.min(np.linalg.norm(b.positions[far] - b.positions[0], axis=1)) > 11.0
    ea = model(batch_of([a]))["node_energy"].detach()
    eb = model(batch_of([b]))["node_energy"].detach()
    assert abs(ea[0] - eb[0]) > 1e-9


def test_terminal_dihedral_reaches_the_energy_only_through_l1_matrix():
    """n_C = 12: the two CH2 ends are 14 Å apart, beyond two 3 Å layers, so only f(H) can couple their
    orientations. L = 1 needs p–p hopping on every bond (δ and r̂r̂ parts) and an anisotropic on-site block
    at the CH2 end; L = 0 blocks are built from invariants of local environments and stay blind to it."""
    spread = {}
    for l in (0, 1):
        torch.manual_seed(2)
        model = tiny(l, channels=8, matrix_channels=4, n_poles=8, pole_im_init=(0.06, 0.2))
        batch = batch_of([cumulene(12, phi) for phi in (0.0, 45.0, 90.0)])
        e = model(batch)["energy"].detach().numpy()
        spread[l] = np.abs(e - e[0]).max() / abs(e[0])
    assert spread[1] > 1e-7, spread  # exactly 0 without the bond-direction blocks
    assert spread[0] < 1e-13, spread


@pytest.mark.parametrize("matrix_norm", ["layer", "batch"])
@pytest.mark.parametrize("l_max", [0, 1])
def test_untrained_matrix_carries_chain_parity_and_dihedral(l_max, matrix_norm):
    """A tight-binding-like f(H) of a chain sees its length parity and, with p blocks, the end-to-end
    dihedral, from the first step and not only after training has found them. Measured against the spread
    of the same quantity across a chain's atoms (models/mfn/diagnose.py):

    * f(H)_ii invariants of the end carbon, first layer, n_C = 4, 5, 6 at 0° / 90°;
    * the energy at n_C = 10, 11, 12, where a 2-layer, 3 Å model is blind to both (ends ≥ 11 Å apart).

    With hoppings ∝ u_i u_j of raw untrained scalars (~0.05) the chain was nearly diagonal: f(H)_C0 dihedral
    ratios 1e-16–3e-3, energy ratios down to 1e-12, and no normalisation at all in 'batch' mode before
    running statistics existed (parity ratios ~1e-15)."""
    from reactforge.models.mfn.diagnose import sensitivity

    for seed in (0, 1):
        torch.manual_seed(seed)
        model = tiny(l_max, channels=8, matrix_channels=4, n_poles=8, matrix_norm=matrix_norm)
        short, long = sensitivity(model, (4, 5, 6)), sensitivity(model, (10, 11, 12))
        assert short["f_parity_ratio"] > 0.05, (seed, short)
        assert long["e_parity_ratio"] > 0.02, (seed, long)
        if l_max == 1:
            assert short["f_dihedral_ratio"] > 0.02, (seed, short)
            assert long["e_dihedral_ratio"] > 5e-3, (seed, long)
        else:  # s blocks are built from invariants of local environments: blind to the far end's orientation
            assert long["e_dihedral_ratio"] < 1e-10, (seed, long)


def test_batch_matrix_norm_running_statistics_start_from_the_first_batch():
    """Eq. 6.12 in 'batch' mode: before any training batch an H is normalised with its own per-channel
    statistics (not left raw by running averages at 0 / 1); the first batch sets the running averages."""
    from reactforge.models.mfn.matrix import MatrixNorm

    torch.manual_seed(4)
    A = 0.1 * torch.randn(3, 2, 6, 6) + 0.3 * torch.eye(6)
    H, mask = 0.5 * (A + A.transpose(-1, -2)), torch.ones(3, 6, dtype=torch.bool)
    norm = MatrixNorm(2, "batch").eval()
    lam = torch.linalg.eigvalsh(norm(H, mask))
    assert torch.allclose(lam.mean(-1), torch.zeros(3, 2), atol=1e-10)
    assert torch.allclose(lam.var(-1), torch.ones(3, 2), atol=1e-4)
    norm.train()(H, mask)
    lam = torch.linalg.eigvalsh(H).transpose(0, 1).reshape(2, -1)  # per channel, pooled over the batch
    assert torch.allclose(norm.running_mean, lam.mean(-1), atol=1e-10)
    assert torch.allclose(norm.running_var, lam.var(-1), atol=1e-10)
    state = {k: v for k, v in norm.state_dict().items() if k != "num_batches_tracked"}
    old = MatrixNorm(2, "batch")
    old.load_state_dict(state)  # saved before the counter existed: its running averages are used
    assert int(old.num_batches_tracked) == 1
