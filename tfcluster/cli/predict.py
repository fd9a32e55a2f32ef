r"""Assigns clusters to new images with an exported model.

  tfcluster predict --model=runs/dac/export --input=my_images/ --output=out/ --copy_images

Writes OUTPUT/assignments.csv (item, cluster, confidence) and, with
--copy_images, one sub-folder of images per cluster (cluster_00, ...).
--input is an image folder or an .npz file (array x [N,H,W,C] uint8).
"""

from absl import app, flags

from tfcluster.cli import reports_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "export directory (a version dir or the export base)", required=True)
flags.DEFINE_string("input", None, "image folder or .npz file", required=True)
flags.DEFINE_string("output", None, "output directory", required=True)
flags.DEFINE_bool("copy_images", False, "also write one sub-folder of images per cluster")
flags.DEFINE_integer("batch_size", 256, "inference batch size")


@reports_errors
def main(argv):
    del argv
    from tfcluster.export import use

    path, counts = use.predict(FLAGS.model, FLAGS.input, FLAGS.output, FLAGS.copy_images,
                                           FLAGS.batch_size)
    print(f"wrote {path}; cluster sizes: {counts}")


def run(argv=None):
    """Parses the flags (sys.argv by default) and runs `main`."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
