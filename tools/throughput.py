r"""Training throughput per method and precision: the bare step, the loop, the whole run.

  python tools/throughput.py --methods=dac,dccm --precisions=float32,bfloat16 --json=/tmp/throughput.json

For each method (its `cpu` preset on --dataset, seed 0) and precision:
  bare   images/s of the traced global step on one resident batch (the first
         stage of epoch 0 after its begin), `--steps` calls after 3 warm-up calls,
         each call's outputs read back as the loop reads them; timed before and
         again after the short run (this kind of machine drifts: the mean of the
         two is the reference, and both are kept);
  loop   images/s in the stages' steps of a short run (overrides below), input
         pipelines and the loop's host work included: the median over the
         run's epochs after the first (which also traces the steps and builds
         oneDNN's kernels) that run the same stages as the bare step's epoch;
  run    images trained / wall seconds of that run (targets, calibration,
         evaluation, checkpoints and export included);
  loop / bare, and the run's CPU use (process CPU seconds / wall seconds).
`--ops` instead profiles the bare step (tf.profiler) and prints the host self time per
TensorFlow op type, ms per step: where a precision's speed-up comes from.
Prints a markdown table with the CPU model and its bf16 flags; --json keeps the rows.
Run it from a clone (AutoGraph re-reads sources), on otherwise idle cores.
"""

import json
import os
import resource
import tempfile
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["dac", "dccm", "gatcluster", "precise_gan", "dbc"], "methods")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "precisions")
flags.DEFINE_string("dataset", "mnist5k", "dataset spec")
flags.DEFINE_integer("steps", 30, "timed calls of the bare step")
flags.DEFINE_string("json", "", "write the rows here")
flags.DEFINE_string("workroot", "", "where the short runs go (default: a temporary directory)")
flags.DEFINE_bool("ops", False, "instead: profile the bare step (--steps calls) and print the host self "
                                 "time per TensorFlow op type, ms per step, for each method and precision")
flags.DEFINE_multi_string("set", [], "config overrides added to the short runs' (e.g. steps_per_call=8); "
                                     "the bare step stays one step a call")

# Short runs for the loop and whole-run figures: the cpu preset cut to a few minutes; and the
# epochs (start, stop) whose per-epoch images/s give "loop": after the first, in the bare step's phase.
SHORT = {
    "dac": (("epochs=3",), (1, None)),
    "dccm": (("epochs=3",), (1, None)),
    "gatcluster": (("epochs=2",), (1, None)),
    "precise_gan": (("generator_iterations=600", "eval_every_iterations=300"), (1, None)),
    "dbc": (("ae_epochs=3", "epochs=1", "tol=0"), (1, 3)),
}


def epoch_rates(workdir: str) -> list[float]:
    """The run's per-epoch train/images_per_second, in epoch order (from its TensorBoard events)."""
    import glob

    import tensorflow as tf

    rates = []
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "train/images_per_second":
                    rates.append((event.step, float(tf.make_ndarray(value.tensor))))
    return [r for _, r in sorted(rates)]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def first_step(method_name: str, precision: str, dataset: str):
    """The method's first stage with steps (epoch 0, after its begin): (traced global step, one resident
    global batch, the stage's batch size)."""
    from tfcluster import run
    from tfcluster.data import pipeline
    from tfcluster.training.loop import Trainer, distribute_batches

    options = run.RunOptions(method=method_name, dataset=dataset, preset="cpu", precision=precision,
                             progress=False, export=False, workdir=tempfile.mkdtemp(prefix="throughput-"))
    method, source, _, _ = run.build(options)
    trainer = Trainer(method, source, options.workdir, progress=False, log=lambda s: None)
    for stage in method.epoch_plan(0, trainer.predict_all).stages:  # up to the first with steps
        if stage.begin is not None:
            stage.begin()
        if stage.steps:
            break
    dataset_ = pipeline.stage_dataset(source, method.preprocessor, method.config.augment, stage, method.seed, 0)
    batch = next(iter(distribute_batches(method.strategy, dataset_.take(1))))
    return trainer._distributed_step(stage.step), batch, stage.batch_size


def _call(step, batch, times: int) -> None:
    """`times` calls of the traced step, each call's outputs read back as the loop reads them."""
    for _ in range(times):
        {k: float(v) for k, v in step(batch).items()}


def bare_step(method_name: str, precision: str, dataset: str, steps: int) -> float:
    """Images/s of the method's first stage's traced step on one resident global batch."""
    step, batch, batch_size = first_step(method_name, precision, dataset)
    _call(step, batch, 3)
    t0 = time.perf_counter()
    _call(step, batch, steps)
    return steps * batch_size / (time.perf_counter() - t0)


def op_profile(method_name: str, precision: str, dataset: str, steps: int, logdir: str) -> list:
    """Host self time per TensorFlow op type, ms per bare step, largest first (tf.profiler over `steps`
    calls after 3 warm-up calls; "IDLE" is the threads' idle time)."""
    import collections
    import glob

    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    step, batch, _ = first_step(method_name, precision, dataset)
    _call(step, batch, 3)
    tf.profiler.experimental.start(logdir)
    _call(step, batch, steps)
    tf.profiler.experimental.stop()
    path = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    out = plugin.xspace_to_tools_data([path], "framework_op_stats", {})
    table = json.loads(out[0] if isinstance(out, tuple) else out)[0]
    cols = [c["id"] for c in table["cols"]]
    by_type = collections.Counter()
    for row in table["rows"]:
        r = dict(zip(cols, [c["v"] if c else None for c in row["c"]]))
        if r["host_or_device"] == "Host":
            by_type[r["type"]] += r["total_self_time"] / 1000.0 / steps  # us -> ms per step
    return by_type.most_common()


def short_run(method_name: str, precision: str, dataset: str, workroot: str, extra: tuple = ()) -> dict:
    from tfcluster import run

    overrides, (start, stop) = SHORT[method_name]
    options = run.RunOptions(method=method_name, dataset=dataset, preset="cpu", precision=precision,
                             overrides=overrides + tuple(extra), progress=False,
                             workdir=os.path.join(workroot, f"{method_name}-{precision}"))
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    m = run.train(options, log=lambda s: None)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    images = m["train_images_per_second"] * m["train_seconds"]
    steady = epoch_rates(options.workdir)[start:stop]
    if not steady:
        raise RuntimeError(f"{method_name}: the short run logged no epoch after its first to time the loop on")
    return {"loop": float(np.median(steady)), "run": images / wall, "train_seconds": m["train_seconds"],
            "wall_seconds": m["wall_seconds"], "cores_used": cpu / wall, "acc": m["acc"]}


def main(argv):
    del argv
    from tfcluster import precision as precision_lib

    workroot = FLAGS.workroot or tempfile.mkdtemp(prefix="throughput-runs-")
    flags_seen = sorted(f for f in precision_lib.BF16_CPU_FLAGS + ("avx512f",) if f in precision_lib.cpu_flags())
    cpu = f"{precision_lib.cpu_model()} ({os.cpu_count()} cores; flags: {', '.join(flags_seen) or 'no bf16 units'})"
    if FLAGS.ops:
        for name in FLAGS.methods:
            for p in FLAGS.precisions:
                ops = op_profile(name, p, FLAGS.dataset, FLAGS.steps, tempfile.mkdtemp(prefix="op-profile-"))
                print(f"\n{name} {p} on {cpu}: host self time per op type, ms per bare step "
                      f"(total {sum(t for _, t in ops):.1f}, threads summed)")
                for op_type, ms in ops[:15]:
                    print(f"  {ms:8.2f}  {op_type}")
        return
    rows = []
    for name in FLAGS.methods:
        for p in FLAGS.precisions:
            before = bare_step(name, p, FLAGS.dataset, FLAGS.steps)
            row = {"method": name, "precision": p, "bare_before": before}
            row.update(short_run(name, p, FLAGS.dataset, workroot, FLAGS.set))
            row["bare_after"] = bare_step(name, p, FLAGS.dataset, FLAGS.steps)
            row["bare"] = (row["bare_before"] + row["bare_after"]) / 2
            row["loop_over_bare"] = row["loop"] / row["bare"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{cpu}; dataset {FLAGS.dataset}, `cpu` presets with {({k: v[0] for k, v in SHORT.items()})}"
          + (f" and {FLAGS.set} in the short runs" if FLAGS.set else "") + "\n")
    print("| method | precision | bare step img/s (before / after the run) | loop img/s | loop / bare | "
          "whole run img/s | train s / wall s | cores used |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['precision']} | {r['bare_before']:.0f} / {r['bare_after']:.0f} | {r['loop']:.0f} | "
              f"{r['loop_over_bare']:.2f} | "
              f"{r['run']:.0f} | {r['train_seconds']:.0f} / {r['wall_seconds']:.0f} | {r['cores_used']:.2f} |")
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump({"cpu": cpu, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
