"""Run a grid of DVAE configurations and publish their results: tables, a CSV and plots.

    python reproduce.py --grid=grids/mnist_1layer_lin.json [--workers=2] [--log_dir=runs]
                        [--results_dir=results] [--data_dir=DIR] [--reuse_csv=CSV]
                        [--dry_run | --collect_only]

Run it from the repository root (relative paths, such as `--data_dir`, are the trainer's).

The harness lives in `dvae/reproduction/`: the grid file format and where each run lives
(`grids`), running the runs (`running`), the statistics of the page (`estimates`), the page, CSV
and plots (`publishing`), and this command line (`cli`).
"""

import sys

from dvae.reproduction import cli

if __name__ == "__main__":
  sys.exit(cli.main())
