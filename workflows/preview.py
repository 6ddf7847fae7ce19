"""What `reactforge check` shows before any reference call: the catalysis protocol's structures as built.

    bulk.xyz, slab.xyz, site_slab.xyz   per-atom arrays `index` (what `active_site: {index: ...}` names),
                                        `fixed`, `layer` (atomic layer, 0 = top) and `active_site`
    intermediates/<name>.xyz            each intermediate on the site slab, its adsorbate atoms flagged
                                        (`@` in a name is `_at_`: ase.io.read takes `@` for an index)
    placements.xyz                      block 3's placements, on the unrelaxed site slab
    neb/<reaction>.xyz                  initial and final end, then the final end in every like-atom
                                        ordering block 6 keeps
    overview.png                        site slab from the top and the side, indices and the site marked

Everything is built in memory first, so a protocol that fails to build writes nothing; each file is
then written through the store's atomic helper. Other workflows have no preview.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write
from reactforge.engine.store import atomic_file

from . import catalysis, sampling
from . import catalysis_build as build


def file_name(name: str) -> str:
    """An intermediate's file stem: names are free text in the protocol, and `@` in a file name is an
    index to ase.io.read and `ase gui` (H2@vacancy -> H2_at_vacancy). Reaction names are identifiers."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name.replace("@", "_at_")).lstrip(".") or "_"


def _site_atom(system: build.CatalysisSystem) -> int:
    """The slab atom at the active site: the removed one for a vacancy, the named one otherwise."""
    return int(np.argmin(np.linalg.norm(system.slab.positions - system.site_position, axis=1)))


def _annotated(atoms: Atoms, tolerance_A: float, active: int | None = None) -> Atoms:
    """A copy with the arrays a user picks indices from: index, fixed, layer (0 = top), active_site."""
    out = atoms.copy()
    n = len(out)
    out.new_array("index", np.arange(n))
    fixed = np.zeros(n, dtype=bool)
    fixed[build.fixed_indices(atoms)] = True
    out.new_array("fixed", fixed)
    layer = np.zeros(n, dtype=int)
    for k, members in enumerate(reversed(build.atomic_layers(atoms, tolerance_A))):
        layer[members] = k
    out.new_array("layer", layer)
    site = np.zeros(n, dtype=bool)
    if active is not None:
        site[active] = True
    out.new_array("active_site", site)
    return out


def preview_structures(protocol) -> dict[str, list[Atoms]]:
    """File name (under the preview folder) -> frames, for a catalysis protocol."""
    system = build.build_system(protocol)
    tol = protocol.surface.layer_tolerance_A
    site = _site_atom(system)
    vacancy = protocol.active_site.kind == "vacancy"
    where = {"site_position_A": [float(x) for x in system.site_position], "site_kind": protocol.active_site.kind,
             "site_atom_index": site, "site_element": system.slab[site].symbol}

    slab = _annotated(system.slab, tol, active=site)
    slab.info.update(where)
    # a vacancy has no atom left on the site slab: its position is in the info
    site_slab = _annotated(system.site_slab, tol, active=None if vacancy else site)
    site_slab.info.update(where)
    files = {"bulk.xyz": [system.bulk], "slab.xyz": [slab], "site_slab.xyz": [site_slab]}

    n_slab = len(system.site_slab)
    for name, atoms in system.intermediates.items():
        a = _annotated(atoms, tol, active=None if vacancy else site)
        a.new_array("adsorbate", np.arange(len(a)) >= n_slab)
        files[f"intermediates/{file_name(name)}.xyz"] = [a]

    # the seed-0 snapshot: block 3 places on MLFF MD snapshots of the site slab, which need a model;
    # here the site slab as built stands in, with the protocol's seed as block 3 uses it
    b3 = protocol.parameters.b3_adsorbate_seed
    files["placements.xyz"] = catalysis.placements(system, [system.site_slab], b3,
                                                   np.random.default_rng(protocol.seed))

    b6 = protocol.parameters.b6_neb
    for r in protocol.reactions:
        initial, final = system.intermediates[r.initial], system.intermediates[r.final]
        frames = [initial.copy(), final.copy()]
        frames[0].info["end"], frames[1].info["end"] = "initial", "final"
        # the same call as block 6, on the unrelaxed ends (block 6 uses block 5's minima)
        kept = sampling.like_atom_permutations(initial, final, system.adsorbate_indices(r.initial),
                                               b6.permutation_limit, b6.permutations_kept)
        for k, (order, distance) in enumerate(kept):
            permuted = sampling.apply_order(final, order)
            permuted.info.update(end="final", permutation=k, order=np.asarray(order),
                                 distance_to_initial_A=round(float(distance), 4))
            frames.append(permuted)
        files[f"neb/{r.name}.xyz"] = frames
    return files


def _label_front(ax, view, atoms: Atoms):
    """Each atom's index at its image position; an atom hidden behind a nearer one keeps no label."""
    image = view.to_image_plane_positions(atoms.positions)
    shown: list[np.ndarray] = []
    for i in np.argsort(-image[:, 2], kind="stable"):  # nearest to the viewer first (drawn last by ASE)
        if all(np.linalg.norm(image[i, :2] - p) > 0.6 * view.scale for p in shown):
            ax.annotate(str(i), tuple(image[i, :2]), ha="center", va="center", fontsize=7)
            shown.append(image[i, :2])


def overview_figure(protocol, structures: dict[str, list[Atoms]]):
    """The site slab from the top and the side with its atoms' indices and the active site circled, and
    one small panel per intermediate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.visualize.plot import Matplotlib
    from matplotlib.patches import Circle

    site_slab = structures["site_slab.xyz"][0]
    position = np.asarray(site_slab.info["site_position_A"])
    inters = [(v[0].info["intermediate"], v[0]) for k, v in structures.items() if k.startswith("intermediates/")]
    ncol = max(2, len(inters))
    fig = plt.figure(figsize=(3.0 * ncol, 7.0), layout="constrained")
    grid = fig.add_gridspec(2, ncol, height_ratios=[3, 2])
    views = ((fig.add_subplot(grid[0, : ncol // 2]), "", "site slab from the top (a1 along x)"),
             (fig.add_subplot(grid[0, ncol // 2:]), "-90x", "from the side (along a1)"))
    for ax, rotation, title in views:
        view = Matplotlib(site_slab, ax, rotation=rotation, radii=0.8, scale=1)
        view.write()
        _label_front(ax, view, site_slab)
        cx, cy = view.to_image_plane_positions(position[None, :])[0, :2]
        ax.add_patch(Circle((cx, cy), 1.0 * view.scale, fill=False, color="crimson", lw=2, zorder=5))
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{protocol.name}: active site circled ({site_slab.info['site_kind']} at slab atom "
                 f"{site_slab.info['site_atom_index']}, {site_slab.info['site_element']}); numbers are "
                 "site-slab indices", fontsize=9)
    for k, (name, atoms) in enumerate(inters):
        ax = fig.add_subplot(grid[1, k])
        # tilted: the adsorbate above the surface and where on it
        view = Matplotlib(atoms, ax, rotation="-70x", radii=0.8, scale=1)
        view.write()
        cx, cy = view.to_image_plane_positions(position[None, :])[0, :2]
        ax.add_patch(Circle((cx, cy), 1.0 * view.scale, fill=False, color="crimson", lw=1.5, zorder=5))
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    return fig


def write_preview(protocol, folder: Path) -> list[Path]:
    """The preview files of a catalysis protocol in `folder` (the paths written); nothing for other
    workflows. Raises ValueError, before writing anything, when a structure cannot be built."""
    if getattr(protocol, "workflow", None) != "catalysis":
        return []
    structures = preview_structures(protocol)
    fig = overview_figure(protocol, structures)
    folder = Path(folder)
    written = []
    try:
        for name, frames in structures.items():
            with atomic_file(folder / name) as tmp:
                write(tmp, frames, format="extxyz")
            written.append(folder / name)
        with atomic_file(folder / "overview.png") as tmp:
            fig.savefig(tmp, dpi=110)
        written.append(folder / "overview.png")
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)
    return written
