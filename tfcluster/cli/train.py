r"""Trains a clustering method, prints ACC/NMI/ARI, exports a SavedModel.

  tfcluster train --method=dac --preset=cpu --dataset=mnist5k --workdir=runs/dac

Re-running with the same --workdir resumes from the latest checkpoint.
Override any config field with --set, e.g. --set=epochs=5 --set=augment.rotation=15;
--print_config shows the resolved config (every field --set takes) without training.
"""

import os

from absl import app, flags

from tfcluster.cli import reports_errors

from tfcluster import configs, methods
from tfcluster.data import sources

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
flags.DEFINE_bool("print_config", False, "print the resolved config for this method, preset and dataset; do not train")


def check_arguments() -> None:
    """The checks that need no TensorFlow: method, preset, --set fields and values, dataset spec."""
    configs.check(FLAGS.method, FLAGS.preset, FLAGS.set)
    sources.check_spec(FLAGS.dataset)


def print_config() -> None:
    source = sources.load(FLAGS.dataset)
    cfg = configs.resolve(FLAGS.method, FLAGS.preset, source.info, FLAGS.set)
    print(f"method {FLAGS.method}, preset {FLAGS.preset}, dataset {FLAGS.dataset} "
          f"({source.info.num_samples} samples of shape {source.info.image_shape}), precision {FLAGS.precision}")
    print("\n".join(configs.describe(cfg)))


@reports_errors
def main(argv):
    del argv
    check_arguments()
    if FLAGS.print_config:
        return print_config()
    if FLAGS.cpu_replicas:
        from tfcluster.training.strategy import split_cpu

        split_cpu(FLAGS.cpu_replicas)
    from tfcluster import run

    options = run.RunOptions(method=FLAGS.method, dataset=FLAGS.dataset, workdir=FLAGS.workdir, preset=FLAGS.preset,
                             num_clusters=FLAGS.num_clusters, seed=FLAGS.seed, strategy=FLAGS.strategy,
                             overrides=tuple(FLAGS.set), deterministic=FLAGS.deterministic,
                             progress=FLAGS.progress, circle_plot=FLAGS.circle_plot, precision=FLAGS.precision)
    metrics = run.train(options)
    print(summary(metrics))


def summary(metrics: dict) -> str:
    """The end of a run for a person: scores rounded alike, cluster sizes, times, where the outputs are."""
    lines = []
    if metrics.get("acc") is not None:
        lines.append(" | ".join(f"{k.upper()} {metrics[k]:.4f}" for k in ("acc", "nmi", "ari"))
                     + "   (against the dataset's labels, used for nothing else)")
    else:
        lines.append("no labels: ACC / NMI / ARI not computed")
    sizes = sorted(metrics.get("cluster_sizes", []), reverse=True)
    if sizes:
        empty = sum(1 for s in sizes if s == 0)
        lines.append(f"{len(sizes)} clusters ({empty} empty), sizes largest first: " + " ".join(map(str, sizes)))
    from tfcluster.training.progress import clock

    lines.append(f"{metrics['method']} on {metrics['dataset']} ({metrics['num_samples']} samples, "
                 f"{metrics['precision']}): {clock(metrics['wall_seconds'])} in all, "
                 f"{clock(metrics['train_seconds'])} in training steps")
    workdir = metrics["workdir"]
    outputs = [("metrics", os.path.join(workdir, "metrics.json")),
               ("assignments", os.path.join(workdir, "probabilities.npy") + "  (probabilities [N, K])")]
    if metrics.get("export"):
        outputs.append(("SavedModel", f"{metrics['export']}  (tfcluster predict --model=... --input=DIR)"))
    if metrics.get("circle_plot"):
        outputs.append(("circle map", metrics["circle_plot"]))
    outputs.append(("TensorBoard", f"tensorboard --logdir {os.path.join(workdir, 'tensorboard')}"))
    width = max(len(name) for name, _ in outputs)
    lines += ["outputs:"] + [f"  {name:<{width}}  {where}" for name, where in outputs]
    return "\n".join(lines)

def run(argv=None):
    """Parses the flags (sys.argv by default) and runs `main`."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
