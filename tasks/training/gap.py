"""GAP through quippy's `gap_fit`: the argument list, the training file with per-configuration sigmas, the fit."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from reactforge.schemas.tasks import GAPModelSpec

from ..structures import plain_atoms
from ..train import TrainingFailed, fitter_executable, reference_energies, run_logged, stress_3x3, write_training_file


def _braced(values) -> str:
    # Arrays inside gap={...} need one extra level of braces on the command line.
    return "{{" + " ".join(str(v) for v in values) + "}}"


def soap_turbo_terms(spec: GAPModelSpec, species_Z: list[int]) -> list[str]:
    """One soap_turbo descriptor per SOAP term and central species (thesis appendix A: add_species=F,
    the per-species terms written out, `central_index` 1-based into species_Z)."""
    n = len(species_Z)
    terms = []
    for soap in spec.soap:
        for centre in range(1, n + 1):
            terms.append(
                " ".join(
                    [
                        "soap_turbo",
                        f"l_max={soap.l_max}",
                        f"alpha_max={_braced([soap.alpha_max] * n)}",
                        f"atom_sigma_r={_braced([soap.atom_sigma_r_A] * n)}",
                        f"atom_sigma_t={_braced([soap.atom_sigma_t_A] * n)}",
                        f"atom_sigma_r_scaling={_braced([0.0] * n)}",
                        f"atom_sigma_t_scaling={_braced([0.0] * n)}",
                        f"amplitude_scaling={_braced([1.0] * n)}",
                        f"central_weight={_braced([1.0] * n)}",
                        f"rcut_hard={soap.rcut_hard_A}",
                        f"rcut_soft={soap.rcut_soft_A}",
                        f"basis={soap.basis}",
                        "scaling_mode=polynomial",
                        "radial_enhancement=1",
                        f"n_species={n}",
                        f"species_Z={_braced(species_Z)}",
                        f"central_index={centre}",
                        "add_species=F",
                        "covariance_type=dot_product",
                        f"zeta={soap.zeta}",
                        f"delta={soap.delta}",
                        f"n_sparse={soap.n_sparse}",
                        f"sparse_method={soap.sparse_method}",
                    ]
                )
            )
    return terms


def pairs_within(configs: list[Atoms], cutoff_A: float) -> set[tuple[int, int]]:
    """Species pairs (Z1 <= Z2) that occur closer than the cut-off somewhere in the data."""
    from ase.neighborlist import neighbor_list

    pairs: set[tuple[int, int]] = set()
    for atoms in configs:
        a = atoms.copy()
        if a.cell.rank < 3:
            a.pbc = False
        i, j = neighbor_list("ij", a, cutoff_A)
        z = a.numbers
        pairs |= {(min(p, q), max(p, q)) for p, q in zip(z[i].tolist(), z[j].tolist())}
    return pairs


def distance_2b_terms(spec: GAPModelSpec, species_Z: list[int],
                      present: set[tuple[int, int]] | None = None) -> list[str]:
    """One pair term per species pair; with `present`, only pairs the data sample (gap_fit stops on a
    term without data points, e.g. H-H before any adsorbate was labelled)."""
    if spec.distance_2b is None:
        return []
    d = spec.distance_2b
    terms = []
    for i, z1 in enumerate(species_Z):
        for z2 in species_Z[i:]:
            if present is not None and (z1, z2) not in present:
                continue
            terms.append(
                f"distance_2b Z1={z1} Z2={z2} cutoff={d.cutoff_A} "
                f"cutoff_transition_width={d.cutoff_transition_width_A} "
                f"covariance_type=ard_se theta_uniform={d.theta_uniform_A} delta={d.delta} "
                f"n_sparse={d.n_sparse} sparse_method=uniform add_species=F"
            )
    return terms


def gap_fit_command(
    spec: GAPModelSpec, species_Z: list[int], e0: dict[int, float], at_file: str, gp_file: str, seed: int = 0,
    pairs: set[tuple[int, int]] | None = None,
) -> list[str]:
    """The gap_fit argument list (first element: the executable)."""
    terms = distance_2b_terms(spec, species_Z, pairs) + soap_turbo_terms(spec, species_Z)
    e0_text = ":".join(f"{chemical_symbols[z]}:{float(e0[z])!r}" for z in species_Z)
    return [
        fitter_executable("gap_fit"),
        f"at_file={at_file}",
        "gap={" + " : ".join(terms) + "}",
        f"default_sigma={{{spec.sigma_energy_eV} {spec.sigma_force_eV_per_A} {spec.sigma_virial_eV} 0.0}}",
        f"e0={{{e0_text}}}",
        "energy_parameter_name=REF_energy",
        "force_parameter_name=REF_forces",
        "virial_parameter_name=REF_virial",
        "sigma_parameter_name=sigma",
        "config_type_parameter_name=config_type",
        f"sparse_jitter={spec.sparse_jitter}",
        f"rnd_seed={seed + 1}",  # gap_fit's generator rejects 0
        "do_copy_at_file=F",
        f"gp_file={gp_file}",
        # sparse points in their own files: quippy parses them 6x faster than the same numbers inside
        # the xml (0.7 s against 4.2 s for 3 x 200 SOAP points), and every MLFF task loads the model
        "sparse_separate_file=T",
    ]


def gap_training_images(configs: list[Atoms], spec: GAPModelSpec) -> list[Atoms]:
    """extxyz images for gap_fit. A weight w becomes a per-configuration sigma = default/w: gap_fit
    reads info energy_sigma/force_sigma/virial_sigma as absolute values (not per atom, measured: a
    per-config energy_sigma equal to default·sqrt(N) reproduces the default fit), so those are scaled
    by sqrt(N) like the per-atom default_sigma."""
    cutoff = max([soap.rcut_hard_A for soap in spec.soap] + [spec.distance_2b.cutoff_A if spec.distance_2b else 0.0])
    images = []
    for atoms in configs:
        a = plain_atoms(atoms, provenance=False)
        if not a.pbc.any() and a.cell.rank < 3:
            # gap_fit mis-fits configurations without a cell (measured: a cell-less dimer in the set
            # gave 0.87 eV/atom training error): box it, wider than the cut-off on every side
            a.cell = np.ptp(a.positions, axis=0) + 2 * cutoff + 1.0
            a.center()
        a.info["REF_energy"] = float(atoms.info["REF_energy"])
        a.arrays["REF_forces"] = np.asarray(atoms.arrays["REF_forces"], dtype=float)
        if "config_type" in atoms.info:
            a.info["config_type"] = str(atoms.info["config_type"])
        if "REF_stress" in atoms.info and a.pbc.all():
            a.info["REF_virial"] = (-stress_3x3(atoms.info["REF_stress"]) * a.get_volume()).reshape(-1)
        w_e, w_f = float(atoms.info.get("energy_weight", 1.0)), float(atoms.info.get("force_weight", 1.0))
        if w_e != 1.0 or w_f != 1.0:
            root_n = np.sqrt(len(a))
            a.info["energy_sigma"] = spec.sigma_energy_eV * root_n / w_e
            a.info["virial_sigma"] = spec.sigma_virial_eV * root_n / w_e
            a.info["force_sigma"] = spec.sigma_force_eV_per_A / w_f
        images.append(a)
    return images


def gap_fit_invocation(cmd: list[str], workdir: Path, name: str = "gap_fit.config") -> list[str]:
    """Write the arguments to a config file (one per line) and return `gap_fit config_file=...`.

    QUIP reads each command-line argument into a fixed-length string: the gap={...} argument of the
    thesis's double SOAP for three or more species does not fit ("Problem reading command argument 2").
    The config file is read line by line into fixed-length chunks too, so the gap={...} argument is
    broken into one descriptor term per line (measured: a 6000-character line is cut mid-value).
    """
    lines = [arg.replace(" : ", " :\n ") if arg.startswith("gap={") else arg for arg in cmd[1:]]
    tmp = Path(workdir) / (name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, Path(workdir) / name)
    return [cmd[0], f"config_file={name}"]


def fit(spec: GAPModelSpec, configs, isolated, workdir: Path, seed: int, device: str, threads: int):
    species = sorted({int(z) for a in configs for z in a.numbers} | set(isolated) | set(spec.species_Z or []))
    e0 = reference_energies(configs, isolated, use_isolated=spec.e0_method == "isolated")
    e0 = {z: e0.get(z, 0.0) for z in species}
    write_training_file(workdir / "train.xyz", gap_training_images(configs, spec))
    pairs = pairs_within(configs, spec.distance_2b.cutoff_A) if spec.distance_2b is not None else None
    cmd = gap_fit_invocation(gap_fit_command(spec, species, e0, "train.xyz", "gap.xml", seed, pairs), workdir)
    (workdir / "gap_fit.cmd").write_text(shlex.join(cmd) + "\n")
    for old in workdir.glob("gap.xml*"):  # a retried task must not mix sparseX files of two fits
        old.unlink()
    run_logged([(cmd, workdir, workdir / "gap_fit.log")], {"OMP_NUM_THREADS": str(max(1, threads))})
    xml = workdir / "gap.xml"
    if not xml.exists():
        raise TrainingFailed(f"gap_fit finished without writing {xml}")
    # the model is the xml plus the sparse-point files it names (tasks.mlff resolves them beside it)
    files = [xml] + sorted(workdir.glob("gap.xml.sparseX.*"))
    return files, files, e0, [shlex.join(cmd)]
