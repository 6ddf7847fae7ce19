"""Failure classes the engine acts on (DESIGN: a failed reference call is never a label)."""


class TaskError(Exception):
    """Base of classified task failures."""

    failure_class = "error"


class TransientError(TaskError):
    """Node loss, walltime, launcher error: worth retrying unchanged."""

    failure_class = "transient"


class SCFNotConverged(TaskError):
    """The reference SCF did not converge: retried once with the spec's fallback settings."""

    failure_class = "scf"


class UnphysicalResult(TaskError):
    """NaN/inf, forces above the spec's bound, atoms lost: recorded and discarded, never retried."""

    failure_class = "unphysical"


class ReferenceSetupError(TaskError):
    """The reference cannot run here (binary or pseudopotential missing, bad input): retrying cannot help."""

    failure_class = "error"


class ReferenceFailed(TaskError):
    """The reference code stopped with an error of its own (not SCF, not the launcher)."""

    failure_class = "error"
