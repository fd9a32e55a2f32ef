r"""Trains a clustering method, prints ACC/NMI/ARI, exports a SavedModel.

  python experiments/train.py --method=dac --preset=cpu --dataset=mnist5k --workdir=runs/dac

Re-running with the same --workdir resumes from the latest checkpoint.
Override any config field with --set, e.g. --set=epochs=5 --set=augment.rotation=15.
"""

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "dac", "dac | dccm | gatcluster | precise_gan | dbc | fcae_kms | kmeans")
flags.DEFINE_string("dataset", "mnist5k", "dataset spec: mnist5k, digits, fashion_mnist, mnist, cifar10, "
                    "cifar100_20, stl10, artifact_mnist, colored_mnist, class_reduced, gaussians8, npz:PATH, "
                    "folder:PATH (options after ?)")
flags.DEFINE_string("workdir", "runs/default", "output directory (re-use it to resume)")
flags.DEFINE_string("preset", "cpu", "config preset: paper | cpu, or a method's own (dccm: m1-m4; gatcluster: color, no_ti, no_sm, "
                  "no_am; precise_gan: noise0, noise1, noise2, noise3, noise4, noise8)")
flags.DEFINE_integer("num_clusters", 0, "number of clusters K (0: the dataset's number of classes)")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_enum("strategy", "mirrored", ["mirrored", "one_device", "multi_worker"], "tf.distribute strategy")
flags.DEFINE_multi_string("set", [], "config override field=value (repeatable), e.g. --set=epochs=5")
flags.DEFINE_bool("deterministic", False, "enable TF op determinism (identical re-runs)")
flags.DEFINE_bool("progress", True, "show a progress bar")
flags.DEFINE_integer("cpu_replicas", 0, "split the CPU into this many logical devices (replicas) for testing")
flags.DEFINE_bool("circle_plot", True, "save the label-feature circle map (DAC supplement eq. 1) as circle_map.png")


def main(argv):
    del argv
    if FLAGS.cpu_replicas:
        from tfcluster.training.strategy import split_cpu

        split_cpu(FLAGS.cpu_replicas)
    from tfcluster import run
    from tfcluster.errors import TfclusterError

    options = run.RunOptions(method=FLAGS.method, dataset=FLAGS.dataset, workdir=FLAGS.workdir, preset=FLAGS.preset,
                             num_clusters=FLAGS.num_clusters, seed=FLAGS.seed, strategy=FLAGS.strategy,
                             overrides=tuple(FLAGS.set), deterministic=FLAGS.deterministic,
                             progress=FLAGS.progress, circle_plot=FLAGS.circle_plot)
    try:
        metrics = run.train(options)
    except TfclusterError as e:
        raise SystemExit(f"error: {e}") from e
    print(json.dumps({k: metrics[k] for k in ("acc", "nmi", "ari", "num_samples", "method", "dataset", "seed",
                                              "wall_seconds")}, indent=2))
    print(f"exported SavedModel: {metrics['export']}\nmetrics: {os.path.join(metrics['workdir'], 'metrics.json')}")


if __name__ == "__main__":
    app.run(main)
