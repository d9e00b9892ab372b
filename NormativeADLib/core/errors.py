"""Errors the user can act on. Each carries an exit code the command line returns."""


class NormativeADError(Exception):
    """Base class: the message says what is wrong and what to do."""

    exit_code = 1


class InputError(NormativeADError):
    """The scan, mask or reference cannot be used as given."""

    exit_code = 2


class ModelError(NormativeADError):
    """A model is unknown, its weights are missing, or they do not match their card."""

    exit_code = 3


class OutputError(NormativeADError):
    """Outputs cannot be written where asked."""

    exit_code = 4


class Cancelled(NormativeADError):
    """The run was cancelled by its caller (Ctrl-C, SIGTERM, the Slicer module); nothing was written,
    unless the cancel came as finished outputs were moved into place: then outputs names their folder."""

    exit_code = 130

    def __init__(self, message: str = "run cancelled", outputs=None):
        super().__init__(message)
        self.outputs = outputs
