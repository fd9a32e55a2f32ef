r"""Trains a clustering method, prints ACC/NMI/ARI, exports a SavedModel.

  tfcluster train --method=dac --preset=cpu --dataset=mnist5k --workdir=runs/dac

Re-running with the same --workdir resumes from the latest checkpoint.
Override any config field with --set, e.g. --set=epochs=5 --set=augment.rotation=15.
"""

import json
import os

from absl import app, flags

from tfcluster.cli import reports_errors

from tfcluster import methods  # noqa: E402  (the registries name the choices in --help)
from tfcluster.data import sources  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "dac", " | ".join(methods.names()))
flags.DEFINE_string("dataset", "mnist5k", "dataset spec (options after ?): " + ", ".join(sources.names()))
flags.DEFINE_string("workdir", "runs/default", "output directory (re-use it to resume)")
flags.DEFINE_string("preset", "cpu", "config preset; per method: "
                    + "; ".join(f"{m}: {', '.join(methods.presets(m))}" for m in methods.names()))
flags.DEFINE_integer("num_clusters", 0, "number of clusters K (0: the dataset's number of classes)")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_enum("strategy", "mirrored", ["mirrored", "one_device", "multi_worker"], "tf.distribute strategy")
flags.DEFINE_multi_string("set", [], "config override field=value (repeatable), e.g. --set=epochs=5")
flags.DEFINE_bool("deterministic", False, "enable TF op determinism (identical re-runs)")
flags.DEFINE_bool("progress", True, "show a progress bar")
flags.DEFINE_integer("cpu_replicas", 0, "split the CPU into this many logical devices (replicas) for testing")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "bfloat16"],
                  "network compute precision: bfloat16 = Keras mixed precision (float32 variables, losses and "
                  "outputs); auto = bfloat16 where the CPU/GPU has bf16 units and the method was measured no worse")
flags.DEFINE_bool("circle_plot", True, "save the label-feature circle map (DAC supplement eq. 1) as circle_map.png")


@reports_errors
def main(argv):
    del argv
    if FLAGS.cpu_replicas:
        from tfcluster.training.strategy import split_cpu

        split_cpu(FLAGS.cpu_replicas)
    from tfcluster import run

    options = run.RunOptions(method=FLAGS.method, dataset=FLAGS.dataset, workdir=FLAGS.workdir, preset=FLAGS.preset,
                             num_clusters=FLAGS.num_clusters, seed=FLAGS.seed, strategy=FLAGS.strategy,
                             overrides=tuple(FLAGS.set), deterministic=FLAGS.deterministic,
                             progress=FLAGS.progress, circle_plot=FLAGS.circle_plot, precision=FLAGS.precision)
    metrics = run.train(options)
    print(json.dumps({k: metrics[k] for k in ("acc", "nmi", "ari", "num_samples", "method", "dataset", "seed",
                                              "precision", "wall_seconds")}, indent=2))
    print(f"exported SavedModel: {metrics['export']}\nmetrics: {os.path.join(metrics['workdir'], 'metrics.json')}")


def run(argv=None):
    """Parses the flags (sys.argv by default) and runs `main`."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
