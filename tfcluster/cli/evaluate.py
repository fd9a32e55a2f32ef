r"""Evaluates an exported model on a labelled dataset; prints metrics as JSON.

  tfcluster evaluate --model=runs/dac/export --dataset=mnist5k
"""

import json

from absl import app, flags

from tfcluster.cli import reports_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "export directory (a version dir or the export base)", required=True)
flags.DEFINE_string("dataset", "mnist5k", "labelled dataset spec")
flags.DEFINE_enum("nmi_average", "geometric", ["geometric", "arithmetic", "max", "min"], "NMI normalisation")


@reports_errors
def main(argv):
    del argv
    from tfcluster.export import use

    result = use.evaluate(FLAGS.model, FLAGS.dataset, FLAGS.nmi_average)
    print(json.dumps(result, indent=2))


def run(argv=None):
    """Parses the flags (sys.argv by default) and runs `main`."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
