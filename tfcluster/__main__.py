"""`python -m tfcluster SUBCOMMAND ...`: the `tfcluster` console command."""

import sys

from tfcluster.cli import main

sys.exit(main(hide_native_logs=True))
