"""Adsorption energies and the mechanism on one energy axis (thesis §3.4, Fig. 3.3c, Supp. Figs. 1-2).

    E_ads(X) = E(slab + X) − E(site slab) − Σ_el n_el(X) μ_el

with μ_el the chemical potentials of the adsorbate elements, solved from gas-phase molecules relaxed
in a box (H2 -> μ_H = E/2, H2O -> μ_O = E − 2 μ_H, CO2 -> μ_C = E − 2 μ_O). The reference's μ serve
both methods: μ belong to the gas reservoir, which the surface MLFF is not fitted to (thesis Table A.1
has no gas molecule), so E_ads(MLFF) − E_ads(reference) is the error in E(slab + X) − E(site slab),
what active learning on the surface improves (thesis Supp. Fig. 1: 82 -> 23 -> 12 meV).

Pure functions of energies and compositions: no engine, no files. The workflow (catalysis.py) collects
the energies; summary.json's `adsorption` and the report's figures are made from what these return.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

# Closed-shell molecules every reference code describes well, so μ carries no spin or multiplet error:
# H2O rather than the thesis's O2 (a triplet, DFT's worst-described small molecule, and GFN2-xTB's), CO2
# (the thesis's) for C, N2 for N. An element not listed is referred to its free atom: for a metal
# adatom E_ads is then its binding energy. A protocol names other molecules in `gas_references`.
DEFAULT_MOLECULE = {"H": "H2", "O": "H2O", "C": "CO2", "N": "N2"}

SITE_SLAB = "(site slab)"  # the bare site's key among block 5's minima (not a name an intermediate takes)


def is_atom(name: str) -> bool:
    return name in chemical_symbols[1:]


def gas_atoms(name: str, box_A: float) -> Atoms:
    """The molecule (ase.build.molecule, g2 names) or free atom (an element symbol) centred in a cubic,
    non-periodic box, as block 0's isolated atoms are."""
    from ase.build import molecule

    atoms = Atoms(name, positions=[[0.0, 0.0, 0.0]]) if is_atom(name) else molecule(name)
    atoms.set_cell([box_A] * 3)
    atoms.center()
    atoms.pbc = False
    atoms.info.update(config_type="gas", gas_reference=name)
    return atoms


def composition(name: str) -> dict[str, int]:
    """Element counts of a gas reference; ValueError if it is neither an element nor an ASE molecule."""
    try:
        atoms = gas_atoms(name, 10.0)
    except KeyError:
        raise ValueError(f"field 'gas_references': {name!r} is neither an element nor an ase.build.molecule "
                         "name (g2: e.g. 'H2', 'H2O', 'CO2', 'N2', 'NH3', 'CH4')") from None
    return dict(Counter(atoms.get_chemical_symbols()))


def default_references(elements: Iterable[str]) -> list[str]:
    """The molecules that fix μ of `elements`: each element's DEFAULT_MOLECULE, and those of the other
    elements in it (C -> CO2 needs O -> H2O needs H -> H2), in the order they can be solved."""
    wanted, out = sorted(set(elements)), []

    def add(el: str) -> None:
        name = DEFAULT_MOLECULE.get(el, el)
        if name in out:
            return
        for other in sorted(composition(name)):
            if other != el:
                add(other)
        out.append(name)

    for el in wanted:
        add(el)
    return out


def _matrix(names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    comps = {n: composition(n) for n in names}
    elements = sorted({el for c in comps.values() for el in c})
    return elements, np.array([[comps[n].get(el, 0) for el in elements] for n in names], dtype=float)


def check_references(names: Sequence[str], adsorbate_elements: Iterable[str]) -> None:
    """ValueError unless the molecules fix μ of every adsorbate element exactly: one molecule per
    element they contain, linearly independent (fewer leaves a μ free; more over-determines them, and
    which energy gives way would be arbitrary)."""
    if len(set(names)) != len(names):
        raise ValueError(f"field 'gas_references': {list(names)} names a molecule twice")
    elements, A = _matrix(names)
    missing = sorted(set(adsorbate_elements) - set(elements))
    if missing:
        raise ValueError(f"field 'gas_references': no molecule contains {', '.join(missing)} (adsorbate "
                         f"element(s)); e.g. {', '.join(DEFAULT_MOLECULE.get(el, el) for el in missing)}")
    if len(names) != len(elements) or np.linalg.matrix_rank(A) < len(elements):
        raise ValueError(f"field 'gas_references': {list(names)} do not fix the chemical potentials of "
                         f"{', '.join(elements)} exactly: give {len(elements)} molecule(s) whose compositions "
                         "are independent (e.g. H2, H2O, CO2 for H, O, C)")


def chemical_potentials(energies_eV: Mapping[str, float]) -> dict[str, float]:
    """μ per element from the molecules' energies: the linear system Σ_el n_el(m) μ_el = E(m)."""
    names = list(energies_eV)
    elements, A = _matrix(names)
    if len(names) != len(elements) or np.linalg.matrix_rank(A) < len(elements):
        check_references(names, elements)  # raises, naming what is wrong
    mu = np.linalg.solve(A, np.array([energies_eV[n] for n in names], dtype=float))
    return {el: float(m) for el, m in zip(elements, mu)}


def adsorption_energy(total_eV: float, site_eV: float, adsorbate: Mapping[str, int],
                      mu_eV: Mapping[str, float]) -> float:
    return float(total_eV - site_eV - sum(n * mu_eV[el] for el, n in adsorbate.items()))


def adsorption_rows(adsorbates: Mapping[str, Mapping[str, int]], mlff_eV: Mapping[str, float | None],
                    reference_eV: Mapping[str, float | None], site: tuple[float | None, float | None],
                    mu_eV: Mapping[str, float]) -> dict[str, dict]:
    """Per intermediate: its E_ads with the MLFF and the reference, and error_eV = MLFF − reference.

    adsorbates: the adsorbate's element counts per intermediate; mlff_eV / reference_eV: total energies
    of each minimum (missing or None: a breached optimisation, a failed label); site: the bare site
    slab's (MLFF, reference) energies; mu_eV: the chemical potentials, the same for both."""
    rows = {}
    for name, comp in adsorbates.items():
        values = []
        for totals, e_site in ((mlff_eV, site[0]), (reference_eV, site[1])):
            e = totals.get(name)
            values.append(None if e is None or e_site is None else adsorption_energy(e, e_site, comp, mu_eV))
        ml, ref = values
        rows[name] = {"mlff_eV": ml, "reference_eV": ref,
                      "error_eV": None if ml is None or ref is None else ml - ref}
    return rows


def mean_absolute_error(rows: Mapping[str, Mapping]) -> float | None:
    """Mean |error_eV| over the intermediates that have both energies (thesis: 82 -> 23 -> 12 meV)."""
    errors = [abs(r["error_eV"]) for r in rows.values() if r.get("error_eV") is not None]
    return float(np.mean(errors)) if errors else None


def mechanism_profile(reactions: Sequence[tuple[str, str, str]], rows: Mapping[str, Mapping],
                      barriers: Mapping[str, tuple[float | None, float | None]]) -> list[dict]:
    """The mechanism on one energy axis: each reaction's initial state, transition state and final state
    in protocol order, a state shared by consecutive reactions drawn once.

    Every intermediate sits at its E_ads: all are referred to the same site slab and gas molecules, so
    the chemical potentials chain the steps whatever each one adds or releases. A transition state sits
    at E_ads(initial) + barrier. reactions: (name, initial, final); rows: adsorption_rows; barriers:
    per reaction (MLFF, reference). Points: {label, kind ("intermediate" | "ts"), reaction, mlff_eV,
    reference_eV}; a None energy is a gap in that curve."""

    def level(name: str) -> dict:
        r = rows.get(name, {})
        return {"label": name, "kind": "intermediate", "reaction": None,
                "mlff_eV": r.get("mlff_eV"), "reference_eV": r.get("reference_eV")}

    points: list[dict] = []
    for rname, initial, final in reactions:
        if not points or points[-1]["label"] != initial or points[-1]["kind"] != "intermediate":
            points.append(level(initial))
        start, (b_ml, b_ref) = points[-1], barriers.get(rname, (None, None))
        points.append({"label": f"TS {rname}", "kind": "ts", "reaction": rname,
                       "mlff_eV": None if start["mlff_eV"] is None or b_ml is None else start["mlff_eV"] + b_ml,
                       "reference_eV": None if start["reference_eV"] is None or b_ref is None
                       else start["reference_eV"] + b_ref})
        points.append(level(final))
    return points
