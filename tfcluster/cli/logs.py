"""Keeps TensorFlow's C++ log lines off a person's terminal.

TensorFlow 2.21 writes its start-up lines ("oneDNN custom operations are on",
"Could not find cuda drivers", "failed call to cuInit", CPU feature notices)
and some later ones ("Sharding callback duration") from C++ straight to file
descriptor 2, before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL does
not hide them. `filter_native_logs` routes descriptor 2 through a small child
process that drops those lines and copies everything else -- Python tracebacks
and warnings, fatal (F) lines, the binaries' own messages -- to the real stderr
at once. The child outlives a crash of the parent, so nothing written before a
crash is lost; `tfcluster ... --tf_logs` leaves stderr alone.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys

# A line TensorFlow's C++ code logs below FATAL (glog format: severity, MMDD, time, thread, file.cc:line]),
# an INFO or WARNING line its Python code logs through absl in the same format ("Using MirroredStrategy",
# "Sharding callback duration", "Assets written to"), and the two start-up notices without that prefix.
NATIVE_LOG = re.compile(rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+\.(?:cc|h|cpp):\d+\] "
                        rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+\.py:\d+\] "
                        rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                        rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler"
                        rb")")
# Beginnings of the notices: a partial line that cannot become a NATIVE_LOG line is passed on at once.
_PREFIXES = (b"WARNING: All log messages", b"To enable the following")


def could_become_native_log(partial: bytes) -> bool:
    """Whether a line's first bytes (no newline yet) may still turn into a NATIVE_LOG line."""
    if any(p[:len(partial)] == partial[:len(p)] for p in _PREFIXES):
        return True
    # glog: one of I/W/E, four digits (MMDD), a space, then the time's first digit.
    digits = b"0123456789"
    template = (b"IWE", digits, digits, digits, digits, b" ", digits)
    return all(byte in allowed for byte, allowed in zip(partial, template))


def drop_native_logs(source: int, sink: int) -> None:
    """Copies descriptor `source` to `sink` until EOF, without NATIVE_LOG lines (the child's loop)."""
    pending = b""
    while True:
        chunk = os.read(source, 65536)
        if not chunk:
            break
        pending += chunk
        out = []
        *lines, pending = re.split(rb"(?<=[\n\r])", pending)
        for line in lines:
            if not NATIVE_LOG.match(line):
                out.append(line)
        if pending and not could_become_native_log(pending):
            out.append(pending)
            pending = b""
        if out:
            os.write(sink, b"".join(out))
    if pending and not NATIVE_LOG.match(pending):
        os.write(sink, pending)


_CHILD = ("import sys; sys.path[:0] = {path!r}; from tfcluster.cli.logs import drop_native_logs; "
          "drop_native_logs(0, 1)")


def filter_native_logs() -> None:
    """Routes this process's descriptor 2 through the filter child (once per process)."""
    if getattr(filter_native_logs, "child", None) is not None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(path=[package_root])], stdin=subprocess.PIPE,
                             stdout=saved, stderr=saved, close_fds=True)
    os.dup2(child.stdin.fileno(), 2)
    filter_native_logs.child = child

    @atexit.register
    def _restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        child.stdin.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
