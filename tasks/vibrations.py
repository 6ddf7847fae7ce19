"""Harmonic normal modes of one structure with the MLFF (ase.vibrations.Vibrations, finite differences).

The displacements' forces are cached by ASE in the task's own work folder (one per task key), so a
retried task picks up where the last attempt stopped. Frequencies come from tasks.nmr.rates, the same
code the rates of §5.3.2 are computed with.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms

from reactforge.schemas.results import VibrationsResult
from reactforge.schemas.tasks import VibrationsSpec

from .context import TaskContext
from .mlff import load_mlff
from .nmr.rates import vibrational_frequencies_Hz


def run(spec: VibrationsSpec, structures: list[Atoms], ctx: TaskContext) -> VibrationsResult:
    if len(structures) != 1:
        raise ValueError(f"vibrations takes exactly one input structure, got {len(structures)}")
    atoms = structures[0]
    indices = list(range(len(atoms))) if spec.indices is None else list(spec.indices)
    bad = [i for i in indices if not 0 <= i < len(atoms)]
    if bad:
        raise ValueError(f"vibrations: indices {bad} out of range for {len(atoms)} atoms")
    calc = load_mlff(spec.model, ctx.device)
    a = atoms.copy()
    a.calc = calc
    energy = float(a.get_potential_energy())
    freqs = np.asarray(vibrational_frequencies_Hz(atoms, calc, ctx.workdir, indices, spec.delta_A, spec.nfree),
                       dtype=complex)
    return VibrationsResult(energy_eV=energy, frequencies_Hz=freqs.real.tolist(),
                            frequencies_imag_Hz=freqs.imag.tolist(), indices=indices)
