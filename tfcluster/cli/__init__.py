r"""The `tfcluster` console command: `tfcluster SUBCOMMAND [--flags]`.

  tfcluster cluster my_images/ --num_clusters=10 --output=my_clusters/
  tfcluster train --method=dac --preset=cpu --dataset=mnist5k --workdir=runs/dac
  tfcluster evaluate --model=runs/dac/export --dataset=mnist5k
  tfcluster predict --model=runs/dac/export --input=my_images/ --output=out/
  tfcluster choose_k --dataset=folder:my_images --k_range=2:15 --workdir=runs/choose_k
  tfcluster transfer --model=runs/dac/export --dataset=fashion_mnist

Each subcommand is an absl binary (tfcluster/cli/<name>.py; experiments/<name>.py
are aliases) with its own flags. `tfcluster --help` lists the subcommands,
`tfcluster SUBCOMMAND --help` a subcommand's flags; both exit with status 0.
Arguments are checked before TensorFlow is imported, so a mistake is reported
in about a second; TensorFlow's C++ log lines are kept off stderr
(cli.logs) unless `--tf_logs` is given.
"""

from __future__ import annotations

import errno
import functools
import importlib
import os
import sys

from absl import flags

flags.DEFINE_bool("tf_logs", False, "show TensorFlow's C++ log lines (hidden by default)")

SUBCOMMANDS = {
    "cluster": "cluster a folder of images in one step: assignments, a folder per cluster, a contact sheet",
    "train": "train a method on a dataset; print metrics; export a SavedModel",
    "evaluate": "ACC / NMI / ARI of an exported model on a labelled dataset",
    "predict": "assign exported-model clusters to new images (assignments.csv, one folder per cluster)",
    "choose_k": "rank a range of K by label-free criteria on learned features (a heuristic)",
    "transfer": "transfer evaluation (DCCM section 4.1): an MLP trained with labels on an export's frozen features",
}
HELP = ("-h", "--help", "-help", "--helpfull", "help")
# errno values of a failed write that no code path answers itself: said in one line, not a traceback.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO, errno.EACCES, errno.EPERM}


def reports_errors(main):
    """Decorates a subcommand's absl `main`: a TfclusterError exits with "error: ..." (status 1);
    TrainingInterrupted (a checkpoint was saved) with its message and status 128 + the signal."""

    @functools.wraps(main)
    def wrapped(argv):
        from tfcluster.errors import TfclusterError, TrainingInterrupted

        try:
            return main(argv)
        except TrainingInterrupted as e:
            print(e, file=sys.stderr)
            raise SystemExit(128 + e.signal_number) from e
        except TfclusterError as e:
            raise SystemExit(f"error: {e}") from e
        except OSError as e:
            if e.errno not in STORAGE_ERRNOS:
                raise
            where = f" {e.filename}" if e.filename else ""
            raise SystemExit(f"error: could not write{where} ({e.strerror}): free space or fix the directory's "
                             "permissions, then re-run the same command (checkpoints already written are "
                             "intact)") from e

    return wrapped


def usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["usage: tfcluster SUBCOMMAND [--flag=value ...]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "tfcluster SUBCOMMAND --help lists its flags (methods, presets and dataset specs for train)."]
    return "\n".join(lines)


def subcommand_help(name: str, module) -> str:
    from absl import flags

    doc = (module.__doc__ or "").strip()
    return f"{doc}\n\nflags:\n{flags.FLAGS.module_help(module.__name__)}"


def wants_tf_logs(args) -> bool:
    """Whether the arguments ask for TensorFlow's C++ logs (--tf_logs, --tf_logs=true)."""
    for arg in args:
        name, sep, value = arg.lstrip("-").partition("=")
        if name == "tf_logs" and (not sep or value.lower() in ("1", "true", "t", "yes")):
            return True
    return False


def main(argv: list[str] | None = None, *, hide_native_logs: bool = False) -> int:
    """Dispatches `argv` (default sys.argv) to a subcommand. Returns the exit status.

    `hide_native_logs` (the console command and the aliases): without --tf_logs,
    TensorFlow's C++ log lines are filtered out of stderr (cli.logs).
    """
    argv = list(sys.argv if argv is None else argv)
    args = argv[1:]
    if hide_native_logs and not wants_tf_logs(args):
        from tfcluster.cli import logs

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        logs.filter_native_logs()
    if not args or args[0] in HELP:
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"tfcluster: unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)}\n\n{usage()}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"tfcluster.cli.{name}")
    if any(a in HELP for a in rest):
        print(subcommand_help(name, module))
        return 0
    module.run([f"tfcluster {name}"] + rest)
    return 0


def console() -> None:
    """The console-script entry point (setup.py)."""
    sys.exit(main(hide_native_logs=True))
