"""Matrix construction, trace normalisation and the resolvent matrix function (thesis §6.3.2–6.4).

The matrix of a graph is a block matrix H with one M×M block per atom pair, M = Σ_{l ≤ l_max} (2l+1):
l_max = 0 gives 1×1 (s) blocks, l_max = 1 gives 4×4 (s+p) blocks in e3nn's real basis. Each (l1, l2)
sub-block transforms as D^(l1) ⊗ D^(l2); it is assembled from irreducible edge features through the
Clebsch–Gordan coefficients (e3nn's wigner_3j), Eq. 6.11.
"""
from __future__ import annotations

import math

import torch
from e3nn import o3


def block_irreps(l_max: int) -> o3.Irreps:
    """The basis of one matrix block: 0e (s) and, for l_max = 1, 1o (p)."""
    if l_max not in (0, 1):
        raise ValueError(f"matrix l_max must be 0 or 1, got {l_max}")
    return o3.Irreps("0e") if l_max == 0 else o3.Irreps("0e + 1o")


class BlockBasis(torch.nn.Module):
    """Irreps ↔ M×M block change of basis (Eq. 6.11) for l1, l2 ≤ l_max.

    paths: one (a, b, l3) per irreducible component of the (l1 ⊗ l2) sub-block; for s+p this is
    ss:0e, sp:1o, ps:1o, pp:0e+1e+2e (two scalars, two vectors, one pseudo-vector, one l = 2 tensor).
    G[d, m1, m2] stacks the CG coefficients; its rows are orthonormal, so G is also the projection back.
    """

    def __init__(self, l_max: int):
        super().__init__()
        basis = block_irreps(l_max)
        self.basis = basis
        self.M = basis.dim
        offsets = [0]
        for mul_ir in basis:
            offsets.append(offsets[-1] + mul_ir.ir.dim)
        paths, blocks = [], []
        for a, (_, ir_a) in enumerate(basis):
            for b, (_, ir_b) in enumerate(basis):
                for ir_out in ir_a * ir_b:
                    C = o3.wigner_3j(ir_a.l, ir_b.l, ir_out.l, dtype=torch.float64)
                    g = torch.zeros(ir_out.dim, self.M, self.M, dtype=torch.float64)
                    g[:, offsets[a] : offsets[a + 1], offsets[b] : offsets[b + 1]] = C.permute(2, 0, 1)
                    g = g / g.flatten(1).norm(dim=1).reshape(-1, 1, 1)
                    paths.append((a, b, ir_out))
                    blocks.append(g)
        self.paths = paths
        self.register_buffer("G", torch.cat(blocks, dim=0).to(torch.get_default_dtype()))
        self.dims = [ir.dim for _, _, ir in paths]

    def path_irreps(self, channels: int) -> o3.Irreps:
        return o3.Irreps([(channels, ir) for _, _, ir in self.paths])

    def to_blocks(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """[E, path_irreps(c).dim] (e3nn mul-major layout) -> [E, c, M, M]."""
        parts, start = [], 0
        for d in self.dims:
            parts.append(x[:, start : start + channels * d].reshape(-1, channels, d))
            start += channels * d
        return torch.einsum("ecd,dmn->ecmn", torch.cat(parts, dim=-1), self.G.to(x.dtype))

    def from_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """[N, c, M, M] -> [N, path_irreps(c).dim]: the irreducible components of each block."""
        feats = torch.einsum("ncab,dab->ncd", blocks, self.G.to(blocks.dtype))
        parts, start = [], 0
        for d in self.dims:
            parts.append(feats[:, :, start : start + d].flatten(1))
            start += d
        return torch.cat(parts, dim=-1)


def dense_blocks(
    off: torch.Tensor,
    edge_index: torch.Tensor,
    on: torch.Tensor,
    batch: torch.Tensor,
    ptr: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assemble symmetric per-graph dense matrices, padded to the largest graph.

    off: [E, c, M, M] block of each directed edge (sender i, receiver j); the matrix gets
    H_ij = off_ij + off_ji^T, so H_ji = H_ij^T. on: [N, c, M, M] symmetric on-site blocks.
    Returns H [B, c, n_max·M, n_max·M] and the mask of real rows [B, n_max·M].
    """
    n_graphs = ptr.numel() - 1
    counts = ptr[1:] - ptr[:-1]
    n_max = int(counts.max())
    c, M = on.shape[1], on.shape[2]
    local = torch.arange(batch.numel(), device=batch.device) - ptr[batch]
    i, j = edge_index[0], edge_index[1]
    flat_off = (batch[i] * n_max + local[i]) * n_max + local[j]
    flat_on = (batch * n_max + local) * n_max + local
    H = on.new_zeros(n_graphs * n_max * n_max, c, M, M)
    # on/2: the symmetrisation H + H^T below adds each (symmetric) on-site block twice
    H = H.index_add(0, flat_off, off).index_add(0, flat_on, 0.5 * on)
    H = H.reshape(n_graphs, n_max, n_max, c, M, M).permute(0, 3, 1, 4, 2, 5).reshape(n_graphs, c, n_max * M, n_max * M)
    H = H + H.transpose(-1, -2)
    rows = torch.arange(n_max, device=batch.device)[None, :] < counts[:, None]
    mask = rows[:, :, None].expand(n_graphs, n_max, M).reshape(n_graphs, n_max * M)
    return H, mask


class MatrixNorm(torch.nn.Module):
    """Shift/scale the spectrum to mean 0, variance 1 from traces (Eq. 6.12), no eigenvalues needed.

    mode 'layer': statistics of each graph pooled over the matrix channels;
    mode 'batch': per channel, pooled over the graphs of a batch, with running averages used at
    inference (so a structure's energy does not depend on what it is evaluated with). The running
    averages start from the first training batch's statistics; before any (an untrained model in eval
    mode) each graph is normalised per channel with its own statistics. Starting them at mean 0,
    variance 1 left an untrained model's H un-normalised at inference (spectrum ~0.1 wide against poles
    spread over ±2 with Im z 0.5, so f(H) ≈ linear in H) and biased the first epochs' validation.
    """

    def __init__(self, channels: int, mode: str = "batch", momentum: float = 0.1, eps: float = 1e-6):
        super().__init__()
        if mode not in ("batch", "layer"):
            raise ValueError(f"matrix_norm must be 'batch' or 'layer', got {mode!r}")
        self.mode, self.momentum, self.eps = mode, momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "num_batches_tracked"
        if key not in state_dict:  # saved before the counter existed: its running averages are real
            state_dict[key] = torch.tensor(1, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    @staticmethod
    def _moments(t1, t2, n_tot):
        return t1 / n_tot, t2 / (n_tot - 1) - t1**2 / (n_tot * (n_tot - 1))

    def forward(self, H: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = mask.sum(dim=-1).to(H.dtype)  # [B] true matrix size per graph
        tr = torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)  # [B, c]
        tr2 = (H * H).sum(dim=(-2, -1))  # tr(H²) of a symmetric H
        if self.mode == "layer":
            mean, var = self._moments(tr.sum(1), tr2.sum(1), n * H.shape[1])
            mean, var = mean[:, None], var[:, None]
        elif self.training:
            mean, var = self._moments(tr.sum(0), tr2.sum(0), n.sum())
            with torch.no_grad():
                if int(self.num_batches_tracked) == 0:
                    self.running_mean.copy_(mean.detach())
                    self.running_var.copy_(var.detach())
                else:
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    self.running_var.lerp_(var.detach(), self.momentum)
                self.num_batches_tracked += 1
            mean, var = mean[None, :], var[None, :]
        elif int(self.num_batches_tracked) == 0:
            mean, var = self._moments(tr, tr2, n[:, None])  # [B, c]: each graph's own, per channel
        else:
            mean, var = self.running_mean[None, :], self.running_var[None, :]
        eye = torch.diag_embed(mask.to(H.dtype))[:, None]  # identity on real rows only
        return (H - mean[..., None, None] * eye) / torch.sqrt(var.clamp_min(0) + self.eps)[..., None, None]


class PoleExpansion(torch.nn.Module):
    """f(H) = Σ_s [w_s (z_s I − H)^-1 + w_s* (z_s* I − H)^-1] = Σ_s 2 Re[w_s (z_s I − H)^-1] (Eq. 6.24).

    Learnable poles z_s (Im z_s ≥ im_min > 0 keeps z_s off the real spectrum of the symmetric H) and
    complex weights w_s per matrix channel. The thesis (§6.4) solves for each resolvent (LU), since an
    eigendecomposition's derivative is unstable at degenerate eigenvalues; here f(H) comes from one
    eigendecomposition with derivatives that never involve the eigenvectors' own (see forward).
    """

    def __init__(
        self, channels: int, n_poles: int, im_min: float = 0.05, re_span: float = 2.0,
        im_init: tuple[float, float] = (0.5, 0.5),
    ):
        super().__init__()
        self.im_min = im_min
        re = torch.linspace(-re_span, re_span, n_poles).repeat(channels, 1)
        self.pole_re = torch.nn.Parameter(re + 0.05 * torch.randn(channels, n_poles))
        # Im z_s spread geometrically over [im_init]: by Combes–Thomas (§6.5.2) the resolvent at Im z = γ
        # decays over ~v/γ sites (v: band velocity), so large Im z alone makes f(H) local
        lo, hi = im_init
        if not im_min < lo <= hi:
            raise ValueError(f"pole_im_init {im_init} must lie above pole_im_min {im_min}")
        im = torch.logspace(math.log10(lo), math.log10(hi), n_poles)[torch.randperm(n_poles)]
        raw = torch.log(torch.expm1(im - im_min))  # softplus^-1
        self.pole_im_raw = torch.nn.Parameter(raw.repeat(channels, 1))
        # |w_s (z_s − λ)^-1| ≤ |w_s| / Im z_s: weights ∝ Im z_s keep every term of f at most O(1/n_poles)
        # at the start, however close an eigenvalue comes to a pole
        scale = (im / n_poles).repeat(channels, 1)
        self.w_re = torch.nn.Parameter(torch.randn(channels, n_poles) * scale)
        self.w_im = torch.nn.Parameter(torch.randn(channels, n_poles) * scale)

    def poles(self) -> torch.Tensor:
        im = self.im_min + torch.nn.functional.softplus(self.pole_im_raw)
        return torch.complex(self.pole_re, im)

    def weights(self) -> torch.Tensor:
        return torch.complex(self.w_re, self.w_im)

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        """H [B, c, n, n] real symmetric -> f(H) [B, c, n, n] real.

        One eigendecomposition per graph and channel (`SpectralResolventFunction`) instead of n_poles
        complex LU solves (`resolvent_function`, the reference it is tested against): ~an order of
        magnitude cheaper, forward and backward, with the same values and first and second derivatives.
        """
        im = self.im_min + torch.nn.functional.softplus(self.pole_im_raw)
        return SpectralResolventFunction.apply(H, self.pole_re, im, self.w_re, self.w_im)

    def lu(self, H: torch.Tensor) -> torch.Tensor:
        """The same f(H) by n_poles complex LU solves: the reference the spectral path is tested and timed against."""
        return resolvent_function(H, self.poles(), self.weights())


def resolvent_function(H: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_s 2 Re[w_s (z_s I − H)^-1] for H [..., c, n, n], z and w [c, S], by LU solves (the reference)."""
    ctype = torch.complex128 if H.dtype == torch.float64 else torch.complex64
    n = H.shape[-1]
    eye = torch.eye(n, dtype=ctype, device=H.device)
    A = z.to(ctype)[..., None, None] * eye - H.to(ctype).unsqueeze(-3)  # [..., c, S, n, n]
    R = torch.linalg.solve(A, eye.expand_as(A))
    return 2.0 * torch.einsum("cs,...csij->...cij", w.to(ctype), R).real


def _resolvents(lam: torch.Tensor, z_re, z_im) -> torch.Tensor:
    """a[..., k, s] = 1 / (z_s − λ_k) for eigenvalues λ [..., c, n] and poles [c, S]."""
    ctype = torch.complex128 if lam.dtype == torch.float64 else torch.complex64
    z = torch.complex(z_re, z_im).to(ctype)
    return 1.0 / (z[:, None, :] - lam[..., None].to(ctype))


class SpectralResolventFunction(torch.autograd.Function):
    """Σ_s 2 Re[w_s (z_s I − H)^-1] through H = U diag(λ) Uᵀ: f(H) = U diag(f(λ)) Uᵀ.

    Backward by the Daleckii–Krein formula, dF = U [(Uᵀ dH U) ∘ Γ] Uᵀ, whose divided differences are,
    for a resolvent, exactly Γ_ij = Σ_s 2 Re[w_s / ((z_s − λ_i)(z_s − λ_j))]: finite and free of
    cancellation at degenerate eigenvalues (a chain's p_x/p_y pairs), so the eigenvectors' own
    derivative, unstable there (thesis §6.4), is never formed. That backward is itself differentiable
    with respect to H, its upstream gradient, the poles and the weights (`_ResolventAdjoint`), which is
    what training on forces needs; the pole and weight gradients of this first backward are not.
    """

    @staticmethod
    def forward(ctx, H, z_re, z_im, w_re, w_im):
        lam, U = torch.linalg.eigh(H)
        a = _resolvents(lam, z_re, z_im)
        w = torch.complex(w_re, w_im).to(a.dtype)
        f = 2.0 * (a * w[:, None, :]).sum(-1).real  # [..., c, n]
        ctx.save_for_backward(H, lam, U, z_re, z_im, w_re, w_im)
        return (U * f[..., None, :]) @ U.transpose(-1, -2)

    @staticmethod
    def backward(ctx, G):
        H, lam, U, z_re, z_im, w_re, w_im = ctx.saved_tensors
        grad_H = grad_zr = grad_zi = grad_wr = grad_wi = None
        if ctx.needs_input_grad[0]:
            grad_H = _ResolventAdjoint.apply(H, G, z_re, z_im, w_re, w_im, lam, U)
        if any(ctx.needs_input_grad[1:]):
            with torch.no_grad():
                a = _resolvents(lam, z_re, z_im)
                g = torch.diagonal(U.transpose(-1, -2) @ G @ U, dim1=-2, dim2=-1)  # dL/df(λ_k)
                # f_k = Σ_s 2 Re[w_s a_ks], ∂a/∂z = −a²: sum g_k times each partial over graphs and levels
                lead = tuple(range(a.dim() - 3))
                ga = (g[..., None].to(a.dtype) * a).sum(dim=(*lead, -2))  # Σ g_k a_ks  [c, S]
                ga2 = (g[..., None].to(a.dtype) * a * a).sum(dim=(*lead, -2))  # Σ g_k a_ks²
                w = torch.complex(w_re, w_im).to(a.dtype)
                grad_wr, grad_wi = 2.0 * ga.real, -2.0 * ga.imag
                grad_zr, grad_zi = -2.0 * (w * ga2).real, 2.0 * (w * ga2).imag
        return grad_H, grad_zr, grad_zi, grad_wr, grad_wi


class _ResolventAdjoint(torch.autograd.Function):
    """B(H, G) = Σ_s 2 Re[w_s R_s G R_s] = U [(Uᵀ G U) ∘ Γ] Uᵀ, the gradient of <G, f(H)> with respect to H
    (R_s = (z_s I − H)^-1, symmetric). Its own derivatives, in the eigenbasis (Ỹ = Uᵀ Y U, G̃ = Uᵀ G U,
    a_s = diag R_s there), taking B as Σ_s 2 Re[w_s R_sᵀ G R_sᵀ] for a general H, as the LU path does
    (the two agree on symmetric perturbations, the only ones the model makes):
      ∂/∂G:  B(H, Y);
      ∂/∂H:  U (Σ_s 2 Re[w_s a_s ∘ (Ỹ diag(a_s) G̃ᵀ + G̃ᵀ diag(a_s) Ỹ) ∘ a_sᵀ])ᵀ Uᵀ, from dR = R dH R;
      ∂/∂w, ∂/∂z through Γ_ij = Σ_s 2 Re[w_s a_is a_js] with ∂a/∂z = −a².
    One level of differentiation is all that forces in a loss need."""

    @staticmethod
    def forward(ctx, H, G, z_re, z_im, w_re, w_im, lam, U):
        a = _resolvents(lam, z_re, z_im)
        w = torch.complex(w_re, w_im).to(a.dtype)
        gamma = 2.0 * ((a * w[:, None, :]) @ a.transpose(-1, -2)).real
        Gt = U.transpose(-1, -2) @ G @ U
        ctx.save_for_backward(G, z_re, z_im, w_re, w_im, lam, U, gamma, Gt)
        return U @ (Gt * gamma) @ U.transpose(-1, -2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, Y):
        G, z_re, z_im, w_re, w_im, lam, U, gamma, Gt = ctx.saved_tensors
        Ut = U.transpose(-1, -2)
        Yt = Ut @ Y @ U
        a = _resolvents(lam, z_re, z_im)  # [..., c, n, S]
        w = torch.complex(w_re, w_im).to(a.dtype)
        grad_H = grad_G = grad_zr = grad_zi = grad_wr = grad_wi = None
        if ctx.needs_input_grad[1]:
            grad_G = U @ (Yt * gamma) @ Ut
        if ctx.needs_input_grad[0]:
            aT = a.transpose(-1, -2)  # [..., c, S, n]
            Yc, GtT = Yt.to(a.dtype).unsqueeze(-3), Gt.transpose(-1, -2).to(a.dtype).unsqueeze(-3)
            inner = (Yc * aT[..., None, :]) @ GtT + (GtT * aT[..., None, :]) @ Yc  # [..., c, S, n, n]
            inner = inner * aT[..., :, None] * aT[..., None, :] * w[..., None, None]
            grad_H = U @ (2.0 * inner.sum(-3).real).transpose(-1, -2) @ Ut
        if any(ctx.needs_input_grad[2:6]):
            P = (Yt * Gt).to(a.dtype)  # Σ_ij P_ij ∂Γ_ij
            lead = tuple(range(a.dim() - 3))
            aPa = (a * (P @ a)).sum(-2).sum(dim=lead)  # a_sᵀ P a_s  [c, S]
            q = ((a * a) * (P @ a)).sum(-2) + (a * (P @ (a * a))).sum(-2)
            q = q.sum(dim=lead)  # Σ_ij P_ij a_i a_j (a_i + a_j)
            grad_wr, grad_wi = 2.0 * aPa.real, -2.0 * aPa.imag
            grad_zr, grad_zi = -2.0 * (w * q).real, 2.0 * (w * q).imag
        return grad_H, grad_G, grad_zr, grad_zi, grad_wr, grad_wi, None, None
