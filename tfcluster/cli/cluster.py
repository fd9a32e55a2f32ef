r"""Clusters a folder of images in one step: trains, assigns, writes folders, a contact sheet and a web page.

  tfcluster cluster my_images/ --num_clusters=10 --output=my_clusters/

Writes under --output: assignments.csv (path, cluster, confidence) for every
readable image, clusters/cluster_KK/ (links to the images, most confident
first; --copy_images copies), overview.png (per cluster its size and most
confident images), index.html, unreadable.csv (path, reason: the files
skipped), summary.json and run/ (the training run: checkpoints, TensorBoard,
the SavedModel in run/export for `tfcluster predict`). Re-running the same
command resumes. --output must lie outside the image folder and not contain
it, and be new, empty or an earlier `cluster` output: tfcluster lists what it
writes (OUT/.tfcluster-manifest.json) and replaces or deletes nothing else
(--overwrite: write among other files, replacing only files of its names). Sub-folders are
just where images are found; --labels_from_subfolders takes their names as
classes and scores the clusters against them. --num_clusters=auto
first runs `tfcluster choose_k` on the folder (into choose_k/) and trains with
the K it suggests: a heuristic (docs/RESULTS.md). The default method,
GATCluster, scored best of the cpu presets on Fashion-MNIST (docs/RESULTS.md).
"""

from absl import app, flags

from tfcluster.cli import reports_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("num_clusters", None, "number of clusters K (>= 2), or 'auto' (chosen by `tfcluster choose_k` "
                    "among --k_range: a heuristic)", required=True)
flags.DEFINE_string("k_range", "2:15", "with --num_clusters=auto: the K to consider (LO:HI or K1,K2,...)")
flags.DEFINE_string("k_features", "fcae", "with --num_clusters=auto: features K is chosen on: fcae (an auto-encoder "
                    "trained first) | pixels | an exported model's directory")
flags.DEFINE_string("output", None, "output directory (outside the image folder)", required=True)
flags.DEFINE_string("method", "gatcluster", "clustering method (tfcluster train --help lists them)")
flags.DEFINE_string("preset", "cpu", "config preset")
flags.DEFINE_string("size", "32", "resize every image to H or HxW pixels ('' = the first image's size)")
flags.DEFINE_integer("channels", 0, "1 (grayscale) or 3 (RGB); 0 = from the first image")
flags.DEFINE_bool("copy_images", False, "copy the images into the cluster folders instead of linking them")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_multi_string("set", [], "config override field=value (repeatable)")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "bfloat16"], "network compute precision")
flags.DEFINE_bool("labels_from_subfolders", False, "the sub-folders' names are the classes (every image in one): "
                  "score the clusters against them (ACC, NMI, ARI) while training and in the summary")
flags.DEFINE_bool("progress", True, "show a progress bar")
flags.DEFINE_bool("overwrite", False, "write into an --output holding files tfcluster did not write (files of "
                  "tfcluster's names are replaced; nothing else is touched)")


@reports_errors
def main(argv):
    if len(argv) != 2:
        raise app.UsageError("give one image folder: tfcluster cluster DIR --num_clusters=K --output=OUT")
    from tfcluster import configs
    from tfcluster.data import sources
    from tfcluster.export.output_dir import OutputDir

    configs.check(FLAGS.method, FLAGS.preset, FLAGS.set)  # before TensorFlow: mistakes answer at once
    sources.list_image_files(argv[1])
    if FLAGS.num_clusters.strip().lower() == "auto":
        from tfcluster.evaluation import choose_k

        choose_k.parse_range(FLAGS.k_range)
    elif not FLAGS.num_clusters.strip().isdigit() or int(FLAGS.num_clusters) < 2:
        from tfcluster.errors import InputError

        raise InputError(f"--num_clusters must be an integer of at least 2 or 'auto', got {FLAGS.num_clusters!r}")
    OutputDir.claim(FLAGS.output, "cluster", inputs=[argv[1]], overwrite=FLAGS.overwrite)
    from tfcluster import cluster

    summary = cluster.cluster_folder(argv[1], FLAGS.output, FLAGS.num_clusters, method=FLAGS.method,
                                 preset=FLAGS.preset, size=FLAGS.size, channels=FLAGS.channels, seed=FLAGS.seed,
                                 overrides=tuple(FLAGS.set), copy_images=FLAGS.copy_images,
                                 precision=FLAGS.precision, progress=FLAGS.progress,
                                 k_range=FLAGS.k_range, k_features=FLAGS.k_features,
                                 labels_from_subfolders=FLAGS.labels_from_subfolders, overwrite=FLAGS.overwrite)
    print(summary_text(summary))


def summary_text(summary: dict) -> str:
    """The end of `tfcluster cluster` for a person: counts, cluster sizes, time, where the outputs are."""
    from tfcluster.training.progress import clock

    sizes = sorted(summary["cluster_sizes"], reverse=True)
    lines = [f"{summary['images']} images in {summary['num_clusters']} clusters by {summary['method']} "
             f"(preset {summary['preset']}), mean confidence {summary['mean_confidence']:.3f}; "
             f"{summary['unreadable']} unreadable files skipped"
             + (" (" + "; ".join(f"{n} {why}" for why, n in summary.get("unreadable_reasons", {}).items()) + ")"
                if summary["unreadable"] else "") + f"; {clock(summary['wall_seconds'])} in training",
             f"cluster sizes, largest first: {' '.join(map(str, sizes))}"]
    if "scores_against_subfolders" in summary:
        scores = summary["scores_against_subfolders"]
        lines.append("against the sub-folders' names: " + (" ".join(f"{k.upper()} {v:.4f}" for k, v in scores.items())
                                                           if scores else "not scored (not every image is in a "
                                                           "sub-folder, or only one sub-folder)"))
    if "choose_k" in summary:
        chosen = summary["choose_k"]
        votes = ", ".join(f"{n}: {k}" for n, k in chosen["votes"].items())
        lines.append(f"K = {chosen['suggested_k']} chosen by choose_k among {chosen['k_range'][0]}.."
                     f"{chosen['k_range'][-1]} (votes: {votes}; {chosen['plot']})")
    outputs = [("assignments", summary["assignments"]), ("clusters", summary["clusters"]),
               ("overview", summary["overview"]), ("web page", summary["index"]),
               ("unreadable", summary["unreadable_list"])]
    if summary.get("export"):
        outputs.append(("SavedModel", f"{summary['export']}  (tfcluster predict --model=... --input=DIR)"))
    outputs.append(("summary", summary["summary"]))
    width = max(len(name) for name, _ in outputs)
    return "\n".join(lines + ["outputs:"] + [f"  {name:<{width}}  {where}" for name, where in outputs])


def run(argv=None):
    """Parses the flags (sys.argv by default) and runs `main`."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
