"""Load a trained MLFF (GAP, MACE committee, MFN) as an ASE calculator that also reports per-atom σ.

After any energy/forces evaluation, `calc.results["sigma_per_atom"]` holds σ in eV (shape N):
- GAP: sqrt of quippy's `local_gap_variance` (the sparse GP's predicted variance of each local energy);
- MACE committee: std over members of each atom's local energy (or of its force vector, if the model
  reference says `uncertainty="forces"`; then σ is the RMS of the 3 component stds, in eV/Å).
The thesis's σ_thr = 50 meV refers to the local *energy* uncertainty (§3.2).
"""
from __future__ import annotations

import re
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from reactforge.schemas.tasks import ModelRef


_SPARSE_FILE = re.compile(r'sparseX_filename="([^"]+)"')


@contextmanager
def _resolved_sparse_files(xml: Path):
    """The xml itself, or (when it names separate sparse-point files) a temporary copy naming them by
    absolute path beside the xml: quippy opens them relative to the process's working directory, and
    changing that is not safe while other tasks run in threads."""
    text = xml.read_text()
    if not _SPARSE_FILE.search(text):
        yield xml
        return
    here = xml.resolve().parent
    text = _SPARSE_FILE.sub(lambda m: f'sparseX_filename="{here / Path(m.group(1)).name}"', text)
    with tempfile.TemporaryDirectory(prefix="gap-") as tmp:
        copy = Path(tmp) / xml.name
        copy.write_text(text)
        yield copy


class _SharedOrExclusive:
    """A lock held by many at once (`shared`) or by one alone (`exclusive`); a waiting exclusive holder goes
    before new shared ones, so a load is not starved by MD steps in other threads."""

    def __init__(self):
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


# Unpickling a MACE model re-traces its torch.fx GraphModules (the einsum contractions), and while torch.fx
# traces, torch.nn.Module.__call__ is patched for the whole process: a model evaluated in another thread of
# the same process then fails ("module is not installed as a submodule"). Tasks run as threads on the local
# site, so loading a model excludes evaluations; evaluations run side by side.
MODEL_LOADING = _SharedOrExclusive()


class GAPCalculator(Calculator):
    """quippy Potential with per-atom GAP variance."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "sigma_per_atom"]

    def __init__(self, xml_path: str, **kwargs):
        super().__init__(**kwargs)
        from quippy.potential import Potential

        with _resolved_sparse_files(Path(xml_path)) as xml:
            # The word after local_gap_variance= names the output array (DESIGN: measured with quippy 0.10.3).
            self.pot = Potential(param_filename=str(xml), calc_args="local_gap_variance=local_gap_variance")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        props = ["energy", "forces", "energies"]
        # the virial only when asked for: NEB, MD and relaxations at fixed cell never read it, and it
        # costs ~15 % of a call on the quickstart's slab (energies and forces are the same either way)
        if "stress" in properties and a.cell.rank == 3 and a.pbc.all():
            props.append("stress")
        # one quippy call for everything, so the variance belongs to this very evaluation
        self.pot.calculate(a, props, all_changes)
        r = self.pot.results
        self.results = {
            "energy": float(r["energy"]),
            "free_energy": float(r["energy"]),
            "forces": np.array(r["forces"]),
            "energies": np.array(r["energies"]),
        }
        if "stress" in props:
            self.results["stress"] = np.array(r["stress"])
        var = np.asarray(self.pot.extra_results["atoms"]["local_gap_variance"], dtype=float).reshape(-1)
        # quippy gives the predictive variance of each local energy in eV²
        self.results["sigma_per_atom"] = np.sqrt(np.clip(var, 0.0, None))


class CommitteeCalculator(Calculator):
    """Mean of K single-model calculators; σ from their spread (one evaluation per member).

    Members must report per-atom energies as results["energies"], summing to the total energy (mace
    0.3.16's MACECalculator does; its "node_energy" has the E0s subtracted, so it would miss E0
    differences between members).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "sigma_per_atom"]

    def __init__(self, members: list[Calculator], uncertainty: str = "energy", **kwargs):
        super().__init__(**kwargs)
        self.members = members
        self.uncertainty = uncertainty

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        with MODEL_LOADING.shared():
            self._evaluate()

    def _evaluate(self):
        energies, forces, local, stresses = [], [], [], []
        periodic = self.atoms.pbc.all() and self.atoms.cell.rank == 3
        for member in self.members:
            a = self.atoms.copy()
            a.calc = member
            energies.append(a.get_potential_energy())
            forces.append(a.get_forces())
            local.append(np.asarray(member.results["energies"], dtype=float))
            if periodic:
                stresses.append(a.get_stress())
        forces = np.array(forces)
        local = np.array(local)
        self.results = {
            "energy": float(np.mean(energies)),
            "free_energy": float(np.mean(energies)),
            "forces": forces.mean(axis=0),
            "energies": local.mean(axis=0),
        }
        if stresses:
            self.results["stress"] = np.mean(stresses, axis=0)
        if len(self.members) == 1:
            self.results["sigma_per_atom"] = np.zeros(len(self.atoms))
        elif self.uncertainty == "forces":
            self.results["sigma_per_atom"] = np.sqrt(forces.var(axis=0).mean(axis=1))
        else:
            self.results["sigma_per_atom"] = local.std(axis=0)


def load_mlff(ref: ModelRef, device: str = "cpu") -> Calculator:
    """The ASE calculator of a trained model reference."""
    if ref.model == "gap":
        return GAPCalculator(ref.paths[0])
    if ref.model == "mace":
        from mace.calculators import MACECalculator

        with MODEL_LOADING.exclusive():
            members = [MACECalculator(model_paths=p, device=device, default_dtype="float64") for p in ref.paths]
        return CommitteeCalculator(members, ref.uncertainty)
    if ref.model == "mfn":
        from reactforge.models.mfn.calculator import MFNCalculator

        with MODEL_LOADING.exclusive():
            members = [MFNCalculator(p, device=device) for p in ref.paths]
        return CommitteeCalculator(members, ref.uncertainty)
    raise ValueError(f"unknown model kind {ref.model!r}")


def sigma_per_atom(calc: Calculator, atoms) -> np.ndarray:
    """Per-atom σ (eV) of `atoms` under an MLFF calculator from `load_mlff`."""
    a = atoms.copy()
    a.calc = calc
    a.get_potential_energy()
    return np.asarray(calc.results["sigma_per_atom"], dtype=float)


def current_sigma(atoms) -> np.ndarray:
    """Per-atom σ (eV) the MLFF calculator attached to `atoms` computed for their current positions."""
    atoms.get_forces()  # a no-op when the calculator's results are current
    return np.asarray(atoms.calc.results["sigma_per_atom"], dtype=float)
