"""Exceptions that name the problem the user must fix."""


class TfclusterError(Exception):
    """Base class of every error raised on bad input or failed training."""


class InputError(TfclusterError, ValueError):
    """Bad user input: unknown name, wrong shape/dtype/channels, empty data."""


class NonFiniteLossError(TfclusterError, FloatingPointError):
    """A training loss became NaN or infinite; the last good checkpoint is kept."""


class WorkdirInUseError(TfclusterError):
    """Another live process holds the work directory's lock."""


class StorageError(TfclusterError, OSError):
    """A checkpoint or export could not be written (full disk, permissions); earlier ones are intact."""


class TrainingInterrupted(TfclusterError):
    """SIGINT / SIGTERM stopped training at a step boundary, after saving a checkpoint to resume from.

    Attributes:
      signal_number: the signal that stopped it (the binaries exit with 128 + it).
    """

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number
