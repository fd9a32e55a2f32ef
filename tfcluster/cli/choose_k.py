r"""Helps choose the number of clusters: ranks a range of K by label-free criteria (a heuristic).

  tfcluster choose_k --dataset=folder:my_images --k_range=2:15 --workdir=runs/choose_k

Features come from DBC's auto-encoder trained without K (--features=fcae, a few
minutes on 5,000 images), from the pixels (--features=pixels), or from an
exported model's directory. k-means for every K of the range is scored by
silhouette, Calinski-Harabasz, Davies-Bouldin and split-half stability; each
criterion votes for its best K and the most voted K is suggested
(tfcluster.evaluation.choose_k). Writes choose_k.json and choose_k.png into
--workdir; prints the scores. `tfcluster cluster DIR --num_clusters=auto` runs
this first. docs/RESULTS.md says how often it finds the classes' count.
"""

import os

from absl import app, flags

from tfcluster.cli import reports_errors
from tfcluster.data import sources

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist5k", "dataset spec (options after ?): " + ", ".join(sources.names()))
flags.DEFINE_string("k_range", "2:15", "the K to score: LO:HI or K1,K2,...")
flags.DEFINE_string("features", "fcae", "fcae (auto-encoder trained here) | pixels | an exported model's directory")
flags.DEFINE_string("workdir", "runs/choose_k", "output directory (re-use it to resume)")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "bfloat16"], "network compute precision (fcae)")
flags.DEFINE_bool("progress", True, "show a progress bar")


def table(result: dict) -> str:
    """The scores as aligned text, the suggested K marked."""
    names = [n for n in ("silhouette", "calinski_harabasz", "davies_bouldin", "stability")
             if all(n in r for r in result["scores"])]
    lines = ["   K  " + "  ".join(f"{n:>17}" for n in names)]
    for r in result["scores"]:
        mark = " <" if r["k"] == result["suggested_k"] else ""
        lines.append(f"{r['k']:>4}  " + "  ".join(f"{r[n]:>17.4f}" for n in names) + mark)
    votes = ", ".join(f"{n}: {k}" for n, k in result["votes"].items())
    lines.append(f"suggested K = {result['suggested_k']} (votes: {votes})")
    if "num_classes" in result:
        lines.append(f"the dataset's labels have {result['num_classes']} classes (not used above)")
    return "\n".join(lines)


@reports_errors
def main(argv):
    del argv
    from tfcluster.evaluation import choose_k as choose_k_lib

    ks = choose_k_lib.parse_range(FLAGS.k_range)
    sources.check_spec(FLAGS.dataset)  # before TensorFlow: mistakes answer at once
    from tfcluster import choose

    result = choose.choose_k(sources.load(FLAGS.dataset), ks, FLAGS.workdir, features=FLAGS.features,
                             seed=FLAGS.seed, progress=FLAGS.progress, precision=FLAGS.precision)
    print(table(result))
    print(f"written: {os.path.join(FLAGS.workdir, choose.RESULT_FILE)}, {result['plot']}")


def run(argv=None):
    """Parses the flags (sys.argv by default) and runs `main`."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
