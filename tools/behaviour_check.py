r"""Records, or compares against a record, short deterministic runs of every method.

  python tools/behaviour_check.py --record=/tmp/before.json     # before a refactor
  python tools/behaviour_check.py --compare=/tmp/before.json    # after it: exit 1 on any difference

Each method trains with `--deterministic` for about two epochs on 1,000 MNIST
images (the tests' `mnist_small` subset: mnist5k, permutation of seed 0),
logging every step. A record holds, per method: ACC/NMI/ARI and the other
final metrics, every TensorBoard value written (train losses per step,
eval scalars, histograms and images as SHA-256 of their tensors) and the
SHA-256 of the final probabilities. `--compare` reports every value that is
not bit-identical. Timing scalars (`*per_second*`) are left out.

Run it from a clone, not the tree being edited (AutoGraph re-reads sources):
  git clone -q . /tmp/tfc && PYTHONPATH=/tmp/tfc python /tmp/tfc/tools/behaviour_check.py --record=...
"""

import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("record", "", "write the runs' values to this JSON file")
flags.DEFINE_string("compare", "", "compare the runs' values with this JSON file")
flags.DEFINE_list("methods", [], "methods to run (default: all of RUNS)")
flags.DEFINE_string("workroot", "", "where the runs go (default: a temporary directory, removed after)")
flags.DEFINE_bool("ignore_steps", False, "compare each TensorBoard tag's values in order, not the steps they "
                  "were written at (a change that only moves a log to another step passes; it is listed)")

# method -> overrides of its cpu preset: about two epochs on 1,000 images, every step logged.
RUNS = {
    "kmeans": ("n_init=2",),
    "dac": ("epochs=2", "log_every=1", "calibration_samples=500", "eval_every=1"),
    "dccm": ("epochs=2", "log_every=1", "calibration_samples=500", "report_samples=500", "eval_every=1"),
    "gatcluster": ("epochs=2", "log_every=1", "large_batch=500", "target_batch=250", "repeats=2",
                   "calibration_samples=500", "eval_every=1"),
    "precise_gan": ("generator_iterations=40", "eval_every_iterations=20", "log_every=1", "holdout=100",
                    "eval_fakes=200"),
    "dbc": ("ae_epochs=2", "epochs=2", "log_every=1", "kmeans_n_init=2", "tol=0"),
}


def _subset():
    import numpy as np

    from tfcluster.data import sources

    full = sources.load("mnist5k")
    idx = np.random.RandomState(0).permutation(len(full))[:1000]
    return sources.make_source("mnist1k", full.x[idx], full.y[idx], num_classes=10)


def _digest(array) -> str:
    import numpy as np

    a = np.asarray(array)
    if a.dtype == object:  # strings (encoded PNGs): their bytes, not the object pointers
        data = b"".join(len(v).to_bytes(8, "little") + bytes(v) for v in a.reshape(-1))
    else:
        data = np.ascontiguousarray(a).tobytes()
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + data).hexdigest()[:24]


def _events(directory: str) -> dict:
    """{tag: [[step, value or digest], ...]} of every summary written under `directory`."""
    import tensorflow as tf

    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "**", "events.*"), recursive=True)):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if "per_second" in value.tag:
                    continue
                tensor = tf.make_ndarray(value.tensor)
                shown = repr(float(tensor)) if tensor.ndim == 0 and tensor.dtype.kind == "f" else _digest(tensor)
                out.setdefault(value.tag, []).append([int(event.step), shown])
    return out


def run_one(method: str, workroot: str, source) -> dict:
    import numpy as np

    from tfcluster import run

    workdir = os.path.join(workroot, method)
    shutil.rmtree(workdir, ignore_errors=True)
    options = run.RunOptions(method=method, dataset="mnist1k", workdir=workdir, preset="cpu",
                             overrides=RUNS[method], deterministic=True, progress=False, export=False)
    m = run.train(options, log=lambda s: None, source=source)
    keep = {k: m[k] for k in ("acc", "nmi", "ari", "steps", "epochs_run")}
    keep["extra"] = {k: repr(v) for k, v in sorted(m["extra"].items())}
    keep["probabilities"] = _digest(np.load(os.path.join(workdir, "probabilities.npy")))
    keep["events"] = _events(os.path.join(workdir, "tensorboard"))
    return keep


def _values(series):
    return [value for _, value in series]


def moved_steps(old: dict, new: dict) -> list[str]:
    """Tags whose values are the same but were written at other steps."""
    lines = []
    for method in sorted(set(old) & set(new)):
        a, b = old[method]["events"], new[method]["events"]
        for tag in sorted(set(a) & set(b)):
            if a[tag] != b[tag] and _values(a[tag]) == _values(b[tag]):
                lines.append(f"/{method}/events/{tag}: steps {[s for s, _ in a[tag]]} -> {[s for s, _ in b[tag]]}")
    return lines


def compare(old: dict, new: dict, path: str = "", ignore_steps: bool = False) -> list[str]:
    """Differences between two records, as lines."""
    if ignore_steps and path.endswith("/events"):
        old = {tag: _values(series) for tag, series in old.items()}
        new = {tag: _values(series) for tag, series in new.items()}
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new)):
            if key not in new:
                lines.append(f"{path}/{key}: missing now")
            elif key not in old:
                lines.append(f"{path}/{key}: new")
            else:
                lines += compare(old[key], new[key], f"{path}/{key}", ignore_steps)
        return lines
    if old != new:
        a, b = json.dumps(old), json.dumps(new)
        return [f"{path}: {a[:200]} -> {b[:200]}"]
    return []


def main(argv):
    del argv
    if not (FLAGS.record or FLAGS.compare):
        raise SystemExit("pass --record=FILE or --compare=FILE")
    workroot = FLAGS.workroot or tempfile.mkdtemp(prefix="behaviour-")
    source = _subset()
    methods = FLAGS.methods or list(RUNS)
    results = {}
    for method in methods:
        results[method] = run_one(method, workroot, source)
        print(f"{method}: acc {results[method]['acc']:.4f} nmi {results[method]['nmi']:.4f} "
              f"ari {results[method]['ari']:.4f}, {sum(len(v) for v in results[method]['events'].values())} values",
              flush=True)
    if not FLAGS.workroot:
        shutil.rmtree(workroot, ignore_errors=True)
    if FLAGS.record:
        with open(FLAGS.record, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        print(f"recorded {len(results)} methods in {FLAGS.record}")
    if FLAGS.compare:
        with open(FLAGS.compare, encoding="utf-8") as f:
            old = json.load(f)
        old = {m: old[m] for m in methods if m in old}
        lines = compare(old, results, ignore_steps=FLAGS.ignore_steps)
        for line in lines[:200]:
            print(line)
        if FLAGS.ignore_steps:
            for line in moved_steps(old, results):
                print("same values, other steps:", line)
        if lines:
            print(f"{len(lines)} difference(s) from {FLAGS.compare}")
            sys.exit(1)
        print(f"bit-identical to {FLAGS.compare}: {', '.join(methods)}")


if __name__ == "__main__":
    app.run(main)
