"""Exceptions that name the problem the user must fix."""


class TfclusterError(Exception):
    """Base class of every error raised on bad input or failed training."""


class InputError(TfclusterError, ValueError):
    """Bad user input: unknown name, wrong shape/dtype/channels, empty data."""


class NonFiniteLossError(TfclusterError, FloatingPointError):
    """A training loss became NaN or infinite; the last good checkpoint is kept."""
