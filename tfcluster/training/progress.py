"""One progress line for a whole training run.

  epoch 3/16 | train 45/78 | loss 0.412 | 512 img/s | run 19% | 0:41 elapsed, ETA 2:55

The line covers everything a run spends time on: a stage's eager work (targets,
k-means, BatchNorm calibration: "<stage> (prepare)" or the eager stage's name),
its steps, evaluation and checkpoints. The ETA extrapolates the wall time
since this process started training over the fraction of the run's epochs done,
so eager work is priced in. On a terminal the line is redrawn in place (at most
every `min_interval` seconds); otherwise one line per epoch is written.
`seconds` adds up the wall time of each activity (numbers dropped from stage
names: "chunk 3 (prepare)" counts as "chunk (prepare)"), so a run can say where
its time went.
"""

from __future__ import annotations

import re
import sys
import time


def clock(seconds: float) -> str:
    """Seconds -> "M:SS" or "H:MM:SS"."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunProgress:
    """Args:
      num_epochs: the run's epochs; start_epoch: where this process starts (a resumed run).
      enabled: False writes nothing.
      stream: where the line goes (default sys.stdout); redrawn in place when it is a terminal.
      min_interval: seconds between redraws on a terminal.
      now: the clock (tests pass a fake one).
    """

    def __init__(self, num_epochs: int, start_epoch: int = 0, enabled: bool = True, stream=None,
                 min_interval: float = 0.2, now=time.perf_counter):
        self.num_epochs = max(int(num_epochs), 1)
        self.start_epoch = int(start_epoch)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = min_interval
        self.now = now
        self.t0 = now()
        self.epoch = self.start_epoch
        self.activity, self.counting = "starting", False
        self.steps_done = self.steps_total = 0
        self.loss = None
        self.rate = None
        self._drawn = 0.0
        self._width = 0
        # wall seconds per activity; the one running since `_since` is `_bucket`
        self.seconds: dict[str, float] = {}
        self._bucket, self._since = "starting", self.t0

    # -- state -----------------------------------------------------------------------------------
    def _account(self, bucket: str | None) -> None:
        """Closes the running activity's time; `bucket` runs from now."""
        t = self.now()
        self.seconds[self._bucket] = self.seconds.get(self._bucket, 0.0) + (t - self._since)
        self._bucket, self._since = (re.sub(r"\s*\d+", "", bucket) if bucket else "other"), t

    def begin_epoch(self, epoch: int, steps_total: int) -> None:
        self._account("plan")
        self.epoch, self.steps_done, self.steps_total = int(epoch), 0, int(steps_total)
        self.draw(force=True)

    def phase(self, activity: str, steps: bool = False) -> None:
        """What runs now: a stage's name, "<stage> (prepare)", "evaluate", "checkpoint";
        `steps`: the activity is the stage's steps (the line counts them)."""
        self._account(activity + (" (steps)" if steps else ""))
        self.activity, self.counting = activity, steps
        self.draw(force=True)

    def step(self, steps_done: int, loss: float | None = None, images_per_second: float | None = None) -> None:
        self.steps_done = int(steps_done)
        self.loss = loss if loss is not None else self.loss
        self.rate = images_per_second if images_per_second is not None else self.rate
        self.draw()

    def end_epoch(self, epoch: int) -> None:
        """After epoch `epoch` (0-based) finished, evaluation included."""
        self._account(None)
        self.epoch, self.steps_done, self.steps_total = int(epoch) + 1, 0, 0
        if self.enabled and not self.interactive:
            self._write(self.line(head=f"epoch {int(epoch) + 1}/{self.num_epochs} done") + "\n")
        else:
            self.draw(force=True)

    # -- text ------------------------------------------------------------------------------------
    def fraction(self) -> float:
        """Share of this process's epochs done, the current epoch's steps counted."""
        todo = self.num_epochs - self.start_epoch
        within = self.steps_done / self.steps_total if self.steps_total else 0.0
        done = min(self.epoch - self.start_epoch + (within if self.epoch < self.num_epochs else 0.0), todo)
        return max(done, 0.0) / todo if todo > 0 else 1.0

    def eta(self) -> float | None:
        f = self.fraction()
        return (self.now() - self.t0) * (1.0 - f) / f if f > 0 else None

    def line(self, head: str | None = None) -> str:
        """The progress text; `head` replaces "epoch k/n <activity>" (an epoch's closing line)."""
        shown = min(self.epoch + 1, self.num_epochs)
        parts = [head or f"epoch {shown}/{self.num_epochs}"]
        activity = self.activity
        if head:
            activity = ""
        elif self.steps_total and self.counting:
            activity += f" {self.steps_done}/{self.steps_total}"
        if activity:
            parts.append(activity)
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.rate:
            parts.append(f"{self.rate:,.0f} img/s")
        eta = self.eta()
        parts.append(f"run {100 * self.fraction():.0f}%")
        parts.append(f"{clock(self.now() - self.t0)} elapsed" + (f", ETA {clock(eta)}" if eta is not None else ""))
        return " | ".join(parts)

    # -- output ----------------------------------------------------------------------------------
    def draw(self, force: bool = False) -> None:
        if not (self.enabled and self.interactive):
            return
        t = self.now()
        if not force and t - self._drawn < self.min_interval:
            return
        self._drawn = t
        text = self.line()
        self._write("\r" + text + " " * max(0, self._width - len(text)))
        self._width = len(text)

    def message(self, text: str, log=print) -> None:
        """Shows `text` (through `log`) on its own line, then redraws the progress line below it."""
        if self.enabled and self.interactive and self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0
        log(text)
        self.draw(force=True)

    def close(self) -> None:
        self._account(None)
        self.seconds = {k: v for k, v in self.seconds.items() if v > 0}
        if self.enabled and self.interactive and self._width:
            self._write("\n")
            self._width = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
