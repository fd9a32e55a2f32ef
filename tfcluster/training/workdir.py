"""One writer per work directory: an advisory lock held for the whole run.

`WorkdirLock` takes an exclusive `fcntl.flock` on WORKDIR/.lock and writes its
holder (pid, host, start time) into it. The operating system releases the lock
when its process ends, however it ends, so a lock left by a killed process is
stale by construction: the next run takes it and says so. A second live
process on the same directory is refused at once, naming the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from tfcluster.errors import StorageError, WorkdirInUseError

LOCK_FILE = ".lock"


class WorkdirLock:
    """Context manager: the exclusive lock of a work directory (created if missing).

    Attributes after entering:
      stale_holder: the holder record (dict) a process that ended without
        releasing left behind, or None.
    Raises WorkdirInUseError when a live process holds the lock.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self.stale_holder = None
        self._fd = None

    def _holder(self, fd) -> dict | None:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        try:
            return json.loads(text) if text else None
        except ValueError:
            return {"unparsed": text[:200]}

    def acquire(self) -> "WorkdirLock":
        try:
            os.makedirs(self.workdir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"could not create the lock file {self.path} ({e.strerror or e}): check that the "
                               "work directory can be written (space, permissions) or pass another "
                               "--workdir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd) or {}
            os.close(fd)
            who = (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, running since "
                   f"{holder.get('started', '?')}" if "pid" in holder else "another process")
            raise WorkdirInUseError(
                f"the work directory {self.workdir} is in use by {who}; wait for it to finish, stop it, "
                "or pass another --workdir") from None
        self.stale_holder = self._holder(fd)  # what a holder that never released left
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode())
            os.fsync(fd)
        except OSError as e:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise StorageError(f"could not write the lock file {self.path} ({e.strerror or e}): free space in "
                               "the work directory's file system, or pass another --workdir") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file: released cleanly
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
