r"""Transfer evaluation: an MLP (200 hidden units) trained with labels on a frozen export's features.

  tfcluster transfer --model=runs/dccm/export --dataset=fashion_mnist

trains on `DATASET?split=train` and reports top-1 accuracy on `DATASET?split=test`
(DCCM section 4.1); prints JSON.
"""

import json

from absl import app, flags

from tfcluster.cli import reports_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "export directory (a version dir or the export base)", required=True)
flags.DEFINE_string("dataset", "fashion_mnist", "labelled dataset spec with train and test splits")
flags.DEFINE_integer("hidden", 200, "hidden units of the MLP")
flags.DEFINE_integer("seed", 0, "MLP initialisation seed")
flags.DEFINE_integer("max_iter", 200, "MLP training epochs at most (early stopping on 10% of the train split)")


@reports_errors
def main(argv):
    del argv
    from tfcluster.export import transfer

    result = transfer.transfer(FLAGS.model, transfer.with_split(FLAGS.dataset, "train"),
                               transfer.with_split(FLAGS.dataset, "test"), FLAGS.hidden, FLAGS.seed,
                               FLAGS.max_iter)
    print(json.dumps(result, indent=2))


def run(argv=None):
    """Parses the flags (sys.argv by default) and runs `main`."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
