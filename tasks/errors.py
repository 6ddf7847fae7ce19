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
