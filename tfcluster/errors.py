"""Exceptions that name the problem the user must fix."""


import re


def short_reason(error: BaseException, limit: int = 200) -> str:
    """The cause of an I/O error in a few words: an OSError's strerror, or a TensorFlow error's message
    without its graph-node prefix, op suffix and temporary-file path ("No space left on device")."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(getattr(error, "message", "") or error)
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", text).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    text = text.rsplit("; ", 1)[-1].strip() or text
    return text[:limit]


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
