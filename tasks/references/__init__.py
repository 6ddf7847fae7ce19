"""Reference (labelling) calculators, one module per code, chosen from a table by the spec's type:

xtb       GFN2-xTB through tblite, in process (the embedded default)
emt       ASE's EMT (fcc metals: protocols on metal surfaces in seconds, and tests)
espresso  Quantum ESPRESSO pw.x through ASE's Espresso, launched with the site's prefix
castep    CASTEP through ASE's Castep (the binary exists only on sites)
launch    running an external code and classifying how it failed (shared by espresso, castep, nmrshielding)
kpoints   k-point grids (spacings in Å⁻¹ with the 2π included) and cell geometry

Each code module has `calculator(ref, atoms, ctx, fallback, timeout_s)`, `label(ref)`, `scf_failed(workdir)`
(an unconverged SCF recorded in the code's output) and `classify(ref, workdir, exc)` (its own failure
rules, or None). `make_calculator(reference, atoms, ctx, fallback)` builds the ASE calculator of one
reference spec; with `fallback=True` the spec's SCFFallback settings replace the SCF ones (engine failure
class `scf`).
"""
from __future__ import annotations

from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from reactforge.schemas.tasks import CastepReference, EMTReference, EspressoReference, XTBReference

from ..context import TaskContext
from ..errors import ReferenceFailed, ReferenceSetupError, SCFNotConverged, TaskError
from . import castep, emt, espresso, xtb
from .castep import LaunchedCastep, castep_scf_failed, read_castep_output
from .espresso import LaunchedEspressoProfile
from .kpoints import is_periodic_3d, kpoint_grid, vacuum_directions
from .launch import classify_exception, classify_launch_failure, required_binaries, run_command

__all__ = [
    "ReferenceFailed", "ReferenceSetupError", "SCFFallbackCalculator", "LaunchedCastep", "LaunchedEspressoProfile",
    "castep_scf_failed", "classify_failure", "classify_launch_failure", "is_periodic_3d", "kpoint_grid",
    "make_calculator", "read_castep_output", "reference_label", "required_binaries", "run_command",
    "scf_record_failed", "vacuum_directions",
]

CODES = {XTBReference: xtb, EMTReference: emt, EspressoReference: espresso, CastepReference: castep}


def _code(reference):
    """The module of a reference spec, None for an unknown spec type."""
    return next((module for spec, module in CODES.items() if isinstance(reference, spec)), None)


def make_calculator(reference, atoms: Atoms, ctx: TaskContext, fallback: bool = False, timeout_s: float | None = None):
    """The ASE calculator of `reference` for `atoms`, working in ctx.workdir. The wall-clock limit of one
    run of the code: `timeout_s` (the task spec's), else the reference's own, else the site's."""
    code = _code(reference)
    if code is None:
        raise TypeError(f"unknown reference spec {type(reference).__name__}")
    for limit in (getattr(reference, "timeout_s", None), getattr(ctx, "reference_timeout_s", None)):
        timeout_s = timeout_s if timeout_s is not None else limit
    return code.calculator(reference, atoms, ctx, fallback, timeout_s)


def reference_label(reference) -> str:
    """'code:method' as stored with every label."""
    code = _code(reference)
    return code.label(reference) if code is not None else reference.code


def scf_record_failed(reference, workdir: Path) -> bool:
    """Does the code's output in workdir record an unconverged SCF? A run can end 'successfully'
    unconverged (CASTEP single points; pw.x with scf_must_converge=.false.)."""
    code = _code(reference)
    return code is not None and code.scf_failed(Path(workdir))


def classify_failure(ref, workdir: Path, exc: Exception) -> TaskError:
    """The engine's failure class of an exception a reference calculation raised in `workdir`: SCF,
    transient launcher/node trouble, set-up error or a failure of the code itself."""
    code = _code(ref)
    error = code.classify(ref, Path(workdir), exc) if code is not None else None
    return error if error is not None else classify_exception(ref.code, exc)


class SCFFallbackCalculator(Calculator):
    """The reference calculator of a multi-step reference task (NEB, optimisation): a calculation whose
    SCF does not converge is redone once with the spec's SCFFallback settings, as the engine does for a
    single point. Otherwise one image's SCF would end a whole reference NEB (a direct GFN2-xTB NEB of
    the quickstart stopped that way). `fallback_calls` counts the redone calculations.

    Every calculation starts from the code's own initial guess, as a labelling single point does, so an
    energy depends on the geometry alone. tblite otherwise restarts from the previous call's charges:
    along a direct GFN2-xTB NEB of the quickstart, an image whose fresh SCF does not converge was
    "converged" from that restart onto a spurious solution, and the following restarts walked it to
    20 eV below the fresh energy, where the band followed. Only when both fresh attempts fail does an
    xTB image continue from its own last converged SCF (what a DFT user restarting from the previous
    step's wavefunction does); the next calculation starts fresh again, so such a result cannot seed
    a chain. `continued_calls` counts them (they are also in `fallback_calls`)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, reference, atoms: Atoms, ctx: TaskContext):
        super().__init__()
        self.reference, self.ctx = reference, ctx
        self.fallback_calls = self.continued_calls = 0
        self._last = None  # the calculator of this image's last converged SCF

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        attempts = [lambda: make_calculator(self.reference, self.atoms, self.ctx),
                    lambda: make_calculator(self.reference, self.atoms, self.ctx, fallback=True)]
        if isinstance(self.reference, XTBReference) and self._last is not None:
            attempts.append(lambda last=self._last: last)
        for k, attempt in enumerate(attempts):
            calc = attempt()
            try:
                self.results = _evaluate(calc, self.atoms, properties)
            except Exception as exc:
                error = classify_failure(self.reference, Path(self.ctx.workdir), exc)
                if not isinstance(error, SCFNotConverged):  # a killed or timed-out code is transient here too
                    raise error from exc
                if k == len(attempts) - 1:  # classified, so the engine records an `scf` failure (final)
                    raise error from exc
                self.fallback_calls += 1
                continue
            if k == 2:  # the third attempt: this image's own last converged SCF
                self.continued_calls += 1
            self._last = calc
            return


def _evaluate(calc, atoms: Atoms, properties) -> dict:
    a = atoms.copy()
    a.calc = calc
    energy = a.get_potential_energy()
    out = {"energy": energy, "free_energy": energy, "forces": a.get_forces(apply_constraint=False)}
    if "stress" in properties:
        out["stress"] = a.get_stress()
    return out
