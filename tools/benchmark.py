r"""Benchmark: methods x datasets x seeds within a time budget -> docs/RESULTS.md.

  python tools/benchmark.py --methods=dac,kmeans --datasets=mnist5k,fashion_mnist --seeds=0,1,2 \
      --preset=cpu --budget_minutes=120

Each run goes to WORKROOT/<run name>-<config digest>/, where the run name is
<method>-<dataset>-<preset>[-<overrides>]-seed<k> (re-running resumes
an unfinished run); a run already in --json with the same resolved config is not
run again, one measured with another config is replaced. The table (ACC/NMI/ARI min/median/max over seeds,
median wall time and training images/second) replaces the block between the
markers in --results (default docs/RESULTS.md); raw rows go to --json.

Benchmarks run in parallel should write their own --json/--results; then
  python tools/benchmark.py --merge=/tmp/a.json,/tmp/b.json
adds their rows to --json (a row replaces the one of the same run name) and rewrites the table,
without running anything. Finished `tfcluster train` runs become rows too:
  python tools/benchmark.py --preset=cpu --import_runs=runs/a,runs/b
takes each work directory whose resolved config (config.json) is exactly what --preset and --set
resolve to for its method and dataset (others are refused, naming the fields that differ), with
the `tfcluster train` command that made it as the row's command.
"""

import json
import sys
import os
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["dac", "kmeans"], "methods to run")
flags.DEFINE_list("datasets", ["mnist5k", "fashion_mnist"], "dataset specs")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
flags.DEFINE_string("preset", "cpu", "preset for every run")
flags.DEFINE_multi_string("set", [], "config overrides for every run")
flags.DEFINE_enum("precision", "float32", ["auto", "float32", "bfloat16"],
                  "--precision of every run (a bfloat16 row's name and preset label say so)")
flags.DEFINE_float("budget_minutes", 120.0, "stop starting new runs after this much time")
flags.DEFINE_string("workroot", "runs/benchmark", "where the runs' work directories go")
flags.DEFINE_string("results", "docs/RESULTS.md", "markdown file whose benchmark block is replaced")
flags.DEFINE_string("json", "docs/benchmark.json", "raw results (appended/merged by run name)")
# --drop, --import_runs and --merge edit the rows without running anything (in that order when given together),
# rewrite the table and stop.
flags.DEFINE_list("merge", [], "merge the rows of these --json files of other invocations into --json")
flags.DEFINE_list("drop", [], "remove these rows (by name: measured with a preset that has changed since)")
flags.DEFINE_list("import_runs", [], "finished `tfcluster train` work directories to add as rows of --preset "
                  "(their resolved config must be the preset's)")

BEGIN, END = "<!-- benchmark:begin -->", "<!-- benchmark:end -->"


def _stats(values):
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return "n/a"
    return f"{v.min():.3f} / {np.median(v):.3f} / {v.max():.3f}"


def _steps_per_second(rows) -> str:
    """Median training steps per second (a GAN's generator iterations/s); n/a for rows measured before it was kept."""
    v = [r["train_steps_per_second"] for r in rows if r.get("train_steps_per_second") is not None]
    return f"{np.median(v):.2f}" if v else "n/a"


def run_name(method: str, dataset: str, preset: str, seed, overrides=(), precision: str = "float32") -> str:
    """A row's name: one per (method, dataset, preset, overrides, precision, seed); overrides in the order given."""
    name = f"{method}-{dataset.replace(':', '_').replace('/', '_')}-{preset}"
    if overrides:
        name += "-" + ",".join(str(o).replace("/", "_") for o in overrides)
    if precision != "float32":
        name += f"-{precision}"
    return f"{name}-seed{seed}"


def _preset_label(row) -> str:
    """The table's preset column: the preset, then any overrides (`cpu; lr=1e-3`), then bfloat16 if so."""
    precision = [] if row.get("precision", "float32") == "float32" else [row["precision"]]
    return "; ".join([row["preset"], *row.get("overrides", []), *precision])


def table(rows) -> str:
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["dataset"], _preset_label(r)), []).append(r)
    lines = ["| method | dataset | preset | seeds | ACC min/med/max | NMI min/med/max | ARI min/med/max | "
             "wall s (median) | train img/s (median) | steps/s (median) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (method, dataset, preset), rs in sorted(groups.items()):
        lines.append(f"| {method} | {dataset} | {preset} | {len(rs)} | {_stats(r['acc'] for r in rs)} | "
                     f"{_stats(r['nmi'] for r in rs)} | {_stats(r['ari'] for r in rs)} | "
                     f"{np.median([r['wall_seconds'] for r in rs]):.0f} | "
                     f"{np.median([r['train_images_per_second'] for r in rs]):.0f} | {_steps_per_second(rs)} |")
    return "\n".join(lines)


def plot_learning_curves(rows, directory: str) -> list[str]:
    """Per dataset, ACC against training images of every method's rows (one line per seed, the
    cpu-preset float32 and bfloat16 rows alike; k-means as a level) -> directory/curves_<dataset>.png.
    Returns the files written (datasets without any curve get none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for dataset in sorted({r["dataset"] for r in rows}):
        rs = [r for r in rows if r["dataset"] == dataset]
        if not any(len(r.get("curve") or []) > 1 for r in rs):
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        labels = sorted({(r["method"], _preset_label(r)) for r in rs if r.get("curve")})
        for i, (method, preset) in enumerate(labels):
            for j, r in enumerate(x for x in rs if (x["method"], _preset_label(x)) == (method, preset)):
                curve = np.asarray(r["curve"], float)
                ax.plot(curve[:, 0], curve[:, 1], color=f"C{i}", lw=1, alpha=0.8, marker=".",
                        label=f"{method} ({preset})" if j == 0 else None)
        for r in rs:
            if r["method"] == "kmeans":
                ax.axhline(r["acc"], color="0.5", ls="--", lw=0.8)
        if any(r["method"] == "kmeans" for r in rs):
            ax.plot([], [], color="0.5", ls="--", lw=0.8, label="k-means on pixels")
        ax.set_xlabel("training images seen")
        ax.set_ylabel("ACC (Hungarian, all images)")
        ax.set_title(f"{dataset}: ACC during training (one line per seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        path = os.path.join(directory, f"curves_{dataset.replace(':', '_').replace('/', '_').replace('?', '_')}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def write_results(path, rows, command, verb="Generated by"):
    curves = plot_learning_curves(rows, os.path.dirname(os.path.abspath(path)))
    pictures = "".join(f"\n\n![learning curves]({os.path.basename(c)})" for c in curves)
    block = f"{BEGIN}\n{verb} `{command}` on {time.strftime('%Y-%m-%d')}.\n\n{table(rows)}{pictures}\n{END}"
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Results\n\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    from tfcluster.config import atomic_write_text

    atomic_write_text(path, text)


def config_digest(method: str, dataset: str, preset: str, overrides) -> str:
    """Short hash of the resolved config a run would use (presets change between versions)."""
    from tfcluster import config as config_lib
    from tfcluster import configs
    from tfcluster.data import sources

    info = sources.load(dataset).info
    return _digest_of(config_lib.to_dict(configs.resolve(method, preset, info, tuple(overrides))))


def _digest_of(config: dict) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def import_run(workdir: str, preset: str, overrides) -> dict:
    """A row from a finished run's config.json and metrics.json; ValueError unless its resolved
    config is what `preset` and `overrides` resolve to for its method and dataset."""
    from tfcluster import config as config_lib
    from tfcluster import configs
    from tfcluster.data import sources
    from tfcluster.training.summaries import learning_curve

    resolved = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))
    m = json.load(open(os.path.join(workdir, "metrics.json"), encoding="utf-8"))
    method, dataset = resolved["method"], resolved["dataset"]
    want = json.loads(json.dumps(config_lib.to_dict(configs.resolve(method, preset, sources.load(dataset).info,
                                                                   tuple(overrides))), default=str))
    if want != resolved["config"]:
        diff = sorted(k for k in set(want) | set(resolved["config"]) if want.get(k) != resolved["config"].get(k))
        raise ValueError(f"{workdir}: its config is not preset {preset!r} with {list(overrides)} "
                         f"({', '.join(diff)} differ)")
    command = (f"tfcluster train --method={method} --preset={resolved['preset']} --dataset={dataset} "
               f"--seed={resolved['seed']} --precision={resolved.get('precision_requested', 'float32')} "
               + " ".join(f"--set={o}" for o in resolved.get("overrides", [])) + f" --workdir={workdir}").strip()
    return {"name": run_name(method, dataset, preset, resolved["seed"], overrides, m["precision"]),
            **{k: m[k] for k in ("method", "dataset", "seed", "acc", "nmi", "ari", "wall_seconds", "train_seconds",
                                 "train_images_per_second", "train_steps_per_second", "num_samples", "precision")},
            "preset": preset, "overrides": list(overrides), "cpu": resolved.get("cpu", {}).get("model"),
            "config_digest": _digest_of(want), "command": command,
            "curve": learning_curve(os.path.join(workdir, "tensorboard"))}


def merge_rows(rows, incoming):
    """rows + incoming, where an incoming row replaces the row of the same name (order kept)."""
    by_name = {r["name"]: r for r in rows}
    by_name.update({r["name"]: r for r in incoming})
    return list(by_name.values())


def main(argv):
    from tfcluster import methods, run
    from tfcluster.config import write_json
    from tfcluster.precision import cpu_model
    from tfcluster.precision import resolve as resolve_precision

    start = time.time()
    rows = json.load(open(FLAGS.json)) if os.path.exists(FLAGS.json) else []
    # rows changed without running anything, in this order when several are given: --drop, --import_runs, --merge
    if FLAGS.drop or FLAGS.import_runs or FLAGS.merge:
        unknown = set(FLAGS.drop) - {r["name"] for r in rows}
        if unknown:
            raise SystemExit(f"no rows named {sorted(unknown)} in {FLAGS.json}")
        edited = [r for r in rows if r["name"] not in FLAGS.drop]
        if FLAGS.import_runs:
            edited = merge_rows(edited, [import_run(w, FLAGS.preset, FLAGS.set) for w in FLAGS.import_runs])
        for path in FLAGS.merge:
            edited = merge_rows(edited, json.load(open(path)))
        write_json(FLAGS.json, edited)
        write_results(FLAGS.results, edited, "python " + " ".join(sys.argv),
                      verb="Rows measured by several invocations (each row's `command` is in the JSON), last merged by")
        print(table(edited))
        return
    for dataset in FLAGS.datasets:
        for method in FLAGS.methods:
            digest = config_digest(method, dataset, FLAGS.preset, FLAGS.set)
            precision = resolve_precision(FLAGS.precision, methods.get(method).auto_bfloat16)
            for seed in FLAGS.seeds:
                name = run_name(method, dataset, FLAGS.preset, seed, FLAGS.set, precision)
                old = [r for r in rows if r["name"] == name]
                if old and all(r.get("config_digest") == digest for r in old):
                    continue  # measured with this very config
                if old:
                    print(f"{name}: the config changed since it was measured; running it again")
                    rows = [r for r in rows if r["name"] != name]
                if time.time() - start > FLAGS.budget_minutes * 60:
                    print(f"budget reached; not starting {name}")
                    continue
                options = run.RunOptions(method=method, dataset=dataset, workdir=os.path.join(FLAGS.workroot, f"{name}-{digest}"),
                                         preset=FLAGS.preset, seed=int(seed), overrides=tuple(FLAGS.set),
                                         progress=False, export=False, precision=precision)
                m = run.train(options)
                from tfcluster.training.summaries import learning_curve

                curve = learning_curve(os.path.join(m["workdir"], "tensorboard"))
                rows.append({"name": name, **{k: m[k] for k in ("method", "dataset", "preset", "seed", "acc", "nmi",
                                                                "ari", "wall_seconds", "train_seconds",
                                                                "train_images_per_second", "train_steps_per_second",
                                                                "num_samples", "precision")},
                             "overrides": list(FLAGS.set), "cpu": cpu_model(),
                             "config_digest": digest, "command": "python " + " ".join(sys.argv),
                             "curve": curve})
                print(json.dumps(rows[-1]))
                write_json(FLAGS.json, rows)
    write_results(FLAGS.results, rows, "python " + " ".join(sys.argv))
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
