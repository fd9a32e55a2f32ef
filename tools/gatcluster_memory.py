"""Peak memory of GATCluster's two-step algorithm for several large-batch sizes M.

Each configuration runs in its own process: one epoch of GATCluster on the
same synthetic dataset (N random 96x96 grayscale images, STL10's input size),
with the large batch M, target sub-batch m1 and training mini-batch m2 given.
The process's peak resident memory (ru_maxrss) is read after the epoch and
compared with its resident memory just before training (data loaded, model
built), so both runs pay the same TensorFlow start-up and data costs.

The paper's claim: m1 and m2 bound the activations, so the peak does not grow
with M beyond the M x K label features (and, here, a copy of the round's M raw
images for the input pipeline). The last default configuration computes the
targets in sub-batches ten times larger, to show what m1 controls.

  python tools/gatcluster_memory.py                         # M = 1000, 4000 at m1 = 100, m2 = 32
  python tools/gatcluster_memory.py --configs=1000:100,4000:100,4000:1000 --json=/tmp/mem.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

_CONFIGS = flags.DEFINE_string("configs", "1000:100,4000:100,4000:1000", "M:m1 pairs, comma-separated")
_BATCH = flags.DEFINE_integer("m2", 32, "training mini-batch m2")
_SAMPLES = flags.DEFINE_integer("samples", 4000, "synthetic images N (at least the largest M)")
_SIZE = flags.DEFINE_integer("size", 96, "image side")
_WIDTH = flags.DEFINE_float("width", 0.25, "network width multiplier")
_JSON = flags.DEFINE_string("json", "", "also write the rows here")
_CHILD = flags.DEFINE_string("child", "", "internal: run one configuration M:m1 and print JSON")


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(spec: str) -> dict:
    import time

    import numpy as np

    from tfcluster import run
    from tfcluster.data import sources
    from tfcluster.training.loop import Trainer

    m, m1 = (int(v) for v in spec.split(":"))
    rng = np.random.RandomState(0)
    n, size = _SAMPLES.value, _SIZE.value
    source = sources.make_source("synthetic", (rng.rand(n, size, size, 1) * 255).astype(np.uint8),
                                 rng.randint(0, 10, n), num_classes=10)
    options = run.RunOptions(method="gatcluster", dataset="synthetic", preset="cpu", progress=False, export=False,
                             workdir=f"/tmp/gatcluster_memory_{m}_{m1}_{os.getpid()}",
                             overrides=(f"large_batch={m}", f"target_batch={m1}", f"batch_size={_BATCH.value}",
                                        "repeats=1", "epochs=1", f"width={_WIDTH.value}", "eval_batch_size=100"))
    method, source, preprocessor, _ = run.build(options, source)
    trainer = Trainer(method, source, options.workdir, progress=False, log=lambda s: None)
    before = _current_rss_mib()
    t0 = time.perf_counter()
    trainer.run()
    return {"M": m, "m1": m1, "m2": _BATCH.value, "N": n, "image": f"{size}x{size}x1", "width": _WIDTH.value,
            "rss_before_training_mib": round(before, 1), "peak_rss_mib": round(_peak_rss_mib(), 1),
            "peak_minus_before_mib": round(_peak_rss_mib() - before, 1),
            "targets_mib": round(2 * m * 10 * 4 / 2**20 + m * 4 / 2**20, 3),
            "round_images_mib": round(m * size * size / 2**20, 1), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv):
    del argv
    if _CHILD.value:
        print("RESULT " + json.dumps(_child(_CHILD.value)))
        return
    rows = []
    for spec in _CONFIGS.value.split(","):
        cmd = [sys.executable, __file__, f"--child={spec}", f"--m2={_BATCH.value}", f"--samples={_SAMPLES.value}",
               f"--size={_SIZE.value}", f"--width={_WIDTH.value}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            raise SystemExit(f"{spec} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(line[-1][len("RESULT "):]))
        print(rows[-1], flush=True)
    print("\n| M | m1 | m2 | RSS before training (MiB) | peak RSS (MiB) | peak - before (MiB) | "
          "M x K targets (MiB) | round's raw images (MiB) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['M']} | {r['m1']} | {r['m2']} | {r['rss_before_training_mib']} | {r['peak_rss_mib']} | "
              f"{r['peak_minus_before_mib']} | {r['targets_mib']} | {r['round_images_mib']} | {r['seconds']} |")
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    app.run(main)
