"""The benchmark tool re-measures a run when its resolved config changed."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

import benchmark  # noqa: E402


def test_config_digest_tracks_the_resolved_config():
    a = benchmark.config_digest("dac", "digits", "cpu", [])
    assert a == benchmark.config_digest("dac", "digits", "cpu", [])
    assert a != benchmark.config_digest("dac", "digits", "cpu", ["epochs=3"])
    assert a != benchmark.config_digest("dac", "digits", "paper", [])


def test_table_reports_min_median_max():
    rows = [{"method": "m", "dataset": "d", "preset": "cpu", "acc": a, "nmi": 0.5, "ari": 0.1,
             "wall_seconds": 10.0, "train_images_per_second": 5.0} for a in (0.2, 0.4, 0.3)]
    line = benchmark.table(rows).splitlines()[-1]
    assert "| 3 | 0.200 / 0.300 / 0.400 |" in line and line.endswith("| n/a |")
    for r, s in zip(rows, (1.0, 3.0, 2.0)):
        r["train_steps_per_second"] = s  # generator iterations per second, for a GAN
    assert benchmark.table(rows).splitlines()[-1].endswith("| 2.00 |")


def test_merge_replaces_rows_by_name_and_keeps_the_others():
    old = [{"name": "a", "acc": 0.1}, {"name": "b", "acc": 0.2}]
    merged = benchmark.merge_rows(old, [{"name": "b", "acc": 0.3}, {"name": "c", "acc": 0.4}])
    assert merged == [{"name": "a", "acc": 0.1}, {"name": "b", "acc": 0.3}, {"name": "c", "acc": 0.4}]


def test_overrides_name_their_own_rows_and_table_group():
    plain = benchmark.run_name("dac", "mnist5k", "cpu", 0)
    assert plain == "dac-mnist5k-cpu-seed0"
    changed = benchmark.run_name("dac", "mnist5k", "cpu", 0, ["epochs=3", "lr=1e-3"])
    assert changed == "dac-mnist5k-cpu-epochs=3,lr=1e-3-seed0"
    # A run with overrides must not replace the plain run's row when merged.
    merged = benchmark.merge_rows([{"name": plain, "acc": 0.1}], [{"name": changed, "acc": 0.2}])
    assert [r["acc"] for r in merged] == [0.1, 0.2]
    rows = [{"method": "m", "dataset": "d", "preset": "cpu", "overrides": o, "acc": a, "nmi": 0.5, "ari": 0.1,
             "wall_seconds": 10.0, "train_images_per_second": 5.0} for o, a in (([], 0.2), (["x=1"], 0.9))]
    lines = benchmark.table(rows).splitlines()[2:]
    assert len(lines) == 2
    assert "| m | d | cpu | 1 | 0.200 / 0.200 / 0.200 |" in lines[0]
    assert "| m | d | cpu; x=1 | 1 | 0.900 / 0.900 / 0.900 |" in lines[1]


def test_a_finished_train_run_imports_as_a_row_of_the_preset_it_resolves_to(tmp_path):
    import pytest

    from tfcluster import run

    workdir = str(tmp_path / "run")
    run.train(run.RunOptions(method="dac", dataset="digits", preset="cpu", workdir=workdir, seed=3,
                             overrides=("epochs=2", "width=0.125"), progress=False, export=False,
                             circle_plot=False, precision="float32", strategy="one_device"), log=lambda m: None)
    row = benchmark.import_run(workdir, "cpu", ["epochs=2", "width=0.125"])
    m = __import__("json").load(open(os.path.join(workdir, "metrics.json")))
    assert row["name"] == "dac-digits-cpu-epochs=2,width=0.125-seed3" and row["acc"] == m["acc"]
    assert row["config_digest"] == benchmark.config_digest("dac", "digits", "cpu", ["epochs=2", "width=0.125"])
    assert "--seed=3" in row["command"] and "--set=width=0.125" in row["command"]
    assert len(row["curve"]) == 1 and row["curve"][0][0] == m["steps"] * 64  # evaluated once, at the end
    # metrics.json says where the wall time went; the parts add up to it (the restore before the epochs aside)
    spent = m["time_seconds"]
    assert {"setup", "chunk (prepare)", "chunk (steps)", "calibrate"} <= set(spent)
    assert sum(spent.values()) == pytest.approx(m["wall_seconds"], rel=0.05, abs=0.3)
    with pytest.raises(ValueError, match="width"):  # the run is not the plain preset
        benchmark.import_run(workdir, "cpu", ["epochs=2"])

    # one invocation drops a stale row and imports the run (--drop, then --import_runs)
    import json
    import subprocess

    table_json, results = tmp_path / "rows.json", tmp_path / "RESULTS.md"
    stale = dict(row, name="dac-digits-cpu-seed3", acc=0.0)
    table_json.write_text(json.dumps([stale]))
    results.write_text(f"# R\n{benchmark.BEGIN}\nold\n{benchmark.END}\n")
    tool = os.path.join(os.path.dirname(__file__), "..", "tools", "benchmark.py")
    proc = subprocess.run([sys.executable, tool, f"--json={table_json}", f"--results={results}", "--preset=cpu",
                           "--drop=dac-digits-cpu-seed3", f"--import_runs={workdir}", "--set=epochs=2",
                           "--set=width=0.125"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["name"] for r in json.loads(table_json.read_text())] == [row["name"]]
    assert "old" not in results.read_text() and "epochs=2" in results.read_text()



def test_throughput_op_profile_names_the_steps_ops(tmp_path):
    """tools/throughput.py --ops reads tf.profiler's per-op table (a private TensorFlow API: this guards it).
    A subprocess: the tool's absl flags share names with benchmark's."""
    import subprocess

    root = os.path.join(os.path.dirname(__file__), "..")
    proc = subprocess.run([sys.executable, os.path.join(root, "tools", "throughput.py"), "--ops", "--methods=dac",
                           "--precisions=float32", "--dataset=digits", "--steps=2"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": root})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout[proc.stdout.index("dac float32 on"):].splitlines()[1:]
    ops = [(float(line.split()[0]), line.split()[1]) for line in lines if line.strip()]
    assert any("Conv2DBackpropFilter" in op and ms > 0 for ms, op in ops)
    assert [ms for ms, _ in ops] == sorted((ms for ms, _ in ops), reverse=True)
