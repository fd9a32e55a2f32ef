r"""Assigns clusters to new images with an exported model.

  tfcluster predict --model=runs/dac/export --input=my_images/ --output=out/ --copy_images

Writes OUTPUT/assignments.csv (item, cluster, confidence), OUTPUT/unreadable.csv
(path, reason: the files skipped) and, with --copy_images, one sub-folder of
copies per cluster (cluster_00, ...). --input is an image folder or an .npz file
(array x [N,H,W,C] uint8). --output must lie outside the input and the model and
be new, empty or a previous predict's output (--overwrite: write among other
files; only files of predict's names are replaced).
"""

from absl import app, flags

from tfcluster.cli import reports_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "export directory (a version dir or the export base)", required=True)
flags.DEFINE_string("input", None, "image folder or .npz file", required=True)
flags.DEFINE_string("output", None, "output directory", required=True)
flags.DEFINE_bool("copy_images", False, "also write one sub-folder of images per cluster")
flags.DEFINE_integer("batch_size", 256, "inference batch size")
flags.DEFINE_bool("overwrite", False, "write into an --output holding files tfcluster did not write (files of "
                  "predict's names are replaced; nothing else is touched)")


@reports_errors
def main(argv):
    del argv
    from tfcluster.export import use

    result = use.predict(FLAGS.model, FLAGS.input, FLAGS.output, FLAGS.copy_images, FLAGS.batch_size,
                         overwrite=FLAGS.overwrite)
    print(f"wrote {result.assignments}; cluster sizes: {result.cluster_sizes}")
    reasons = "; ".join(f"{n} {reason}" for reason, n in result.skipped_reasons.items())
    print(f"{result.skipped} unreadable files skipped" + (f" ({reasons}), listed in {result.unreadable}"
                                                           if result.skipped else ""))
    if result.folders:
        print(f"cluster folders in {result.folders}")


def run(argv=None):
    """Parses the flags (sys.argv by default) and runs `main`."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
