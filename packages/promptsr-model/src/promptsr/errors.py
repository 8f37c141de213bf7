"""promptsr's own error type, apart from any one module: the trainer, its data and its checkpoints all
raise it (each an `sr_degrade.errors.SrDegradeError`, which the command lines print as one `error:` line)."""

from sr_degrade.errors import SrDegradeError


class TrainingError(SrDegradeError):
    """A run cannot start or continue; the message names the problem."""
