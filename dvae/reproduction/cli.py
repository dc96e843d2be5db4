"""Run a grid of DVAE configurations and publish their results: tables, a CSV and plots.

The command line of `reproduce.py`: reads the grid (`grids`), runs the cells that have not
finished (`running`), and publishes every finished one (`publishing`). A run whose results.json
exists is skipped, and so is a run that `--reuse_csv` gives a row for; a results.json made with
other hparams than the grid now asks for is reported, never overwritten. The exit status is 1 if
any run failed. The harness itself never imports TensorFlow.
"""

import argparse
import csv
import os
import shlex
import subprocess
import sys

from dvae.reproduction import grids, publishing, running

# The checkout this package lies in: the default trainer is its run_training.py, and pages
# quote paths inside it relative to it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TRAINER = shlex.join([sys.executable, os.path.join(REPO, "run_training.py")])


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="reproduce.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--grid", required=True, help="grid JSON file (see grids/)")
  parser.add_argument("--workers", type=int, default=1, help="runs at once")
  parser.add_argument("--log_dir", default="runs", help="where the runs live")
  parser.add_argument("--results_dir", default="results", help="where the table and plots go")
  parser.add_argument("--data_dir", default=None,
                      help="the trainer's --data_dir for every run (default: the trainer's)")
  parser.add_argument("--reuse_csv", default=None,
                      help="CSV of an earlier publication of this grid whose rows stand for runs "
                           "that have no results.json (marked 'reused' on the page); not run")
  parser.add_argument("--trainer", default=DEFAULT_TRAINER,
                      help="command that trains one run, given hparam flags and --log_dir")
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--dry_run", action="store_true",
                    help="print each run's state and command; run and write nothing")
  mode.add_argument("--collect_only", action="store_true",
                    help="rebuild the table and plots from the runs there are; run nothing")
  args = parser.parse_args(argv)
  if args.workers < 1:
    parser.error(f"--workers must be 1 or more, not {args.workers}")
  return args


def _shown_path(path, placeholder):
  """`path` relative to the repository when it lies inside it, else the placeholder."""
  relative = os.path.relpath(os.path.abspath(path), REPO)
  return placeholder if relative.startswith(os.pardir) else relative


def harness_command(args):
  """The command that reproduces the results, as the results page quotes it: paths inside the
  repository relative to it, the folders of the machine that ran it as placeholders."""
  parts = ["python", "reproduce.py", f"--grid={_shown_path(args.grid, '<grid>')}",
           f"--log_dir={_shown_path(args.log_dir, grids.LOG_DIR_PLACEHOLDER)}",
           f"--results_dir={_shown_path(args.results_dir, '<results_dir>')}"]
  if args.data_dir is not None:
    parts.append(f"--data_dir={grids.DATA_DIR_PLACEHOLDER}")
  if args.reuse_csv is not None:
    parts.append(f"--reuse_csv={_shown_path(args.reuse_csv, '<reuse_csv>')}")
  if args.trainer != DEFAULT_TRAINER:
    parts.append("--trainer=<trainer>")
  return " ".join(parts)


def describe_trainer(trainer):
  """What a non-default trainer command was, without the machine's folders: its script's name
  and, when the script lies in a git checkout, that checkout's commit."""
  if trainer == DEFAULT_TRAINER:
    return None
  scripts = [token for token in shlex.split(trainer) if os.path.isfile(token)
             and token.endswith(".py")]
  if not scripts:
    return "a command other than this repository's `python run_training.py`"
  try:
    commit = subprocess.run(
        ["git", "-C", os.path.dirname(os.path.abspath(scripts[-1])), "rev-parse", "--short",
         "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    changed = subprocess.run(
        ["git", "-C", os.path.dirname(os.path.abspath(scripts[-1])), "status", "--porcelain",
         "--untracked-files=no"], capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return f"`python {os.path.basename(scripts[-1])}` outside a git checkout"
  return (f"`python {os.path.basename(scripts[-1])}` of a checkout at commit {commit}"
          + (" with uncommitted changes" if changed else ""))


def main(argv=None):
  """Returns the exit status: 0 when every run finished, 1 when any failed, 2 on a bad grid."""
  args = parse_args(argv)
  try:
    grid = grids.load_grid(args.grid)
    all_cells = grids.cells(grid, args.log_dir, args.data_dir)
  except grids.GridError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  published = {}
  if args.reuse_csv is not None:
    try:
      published = publishing.read_published(args.reuse_csv, all_cells)
    except (OSError, csv.Error, ValueError) as e:
      print(f"error: cannot read --reuse_csv {args.reuse_csv}: {e}", file=sys.stderr)
      return 2
  runs = {}
  for cell in all_cells:
    if cell.run_dir in runs:
      print(f"error: runs {runs[cell.run_dir].label} and {cell.label} share {cell.run_dir}",
            file=sys.stderr)
      return 2
    runs[cell.run_dir] = cell

  pending, stale = [], []
  for cell in all_cells:
    results = running.read_results(cell)
    if results is None:
      if cell not in published:
        pending.append(cell)
    elif running.mismatch(cell, results):
      stale.append(cell)
      print(f"STALE  {cell.label}: {cell.run_dir}/{running.RESULTS} was made with other "
            f"hparams ({'; '.join(running.mismatch(cell, results))}); move that directory away "
            "or use another --log_dir", file=sys.stderr)
  print(f"{grid.name}: {len(all_cells)} runs, {len(all_cells) - len(pending) - len(stale)} "
        f"finished, {len(pending)} to run", flush=True)

  if args.dry_run:
    trainer = shlex.split(args.trainer)
    for cell in all_cells:
      state = "to run" if cell in pending else "stale" if cell in stale else "finished"
      print(f"{state:8} {shlex.join(trainer + cell.trainer_args())}")
    return 1 if stale else 0

  failed = []
  if not args.collect_only and pending:
    runner = running.Runner(args.trainer, len(pending))
    try:
      failed = runner.run_all(pending, args.workers)
    except KeyboardInterrupt:
      print("interrupted; run the same command again to resume", file=sys.stderr)
      return 130
  publishing.collect(grid, all_cells, args.results_dir, harness_command(args),
          describe_trainer(args.trainer), published,
          args.reuse_csv and _shown_path(args.reuse_csv, "<reuse_csv>"))
  if failed or stale:
    print(f"{len(failed)} runs failed, {len(stale)} stale: " + "; ".join(
        failed + [cell.label for cell in stale]), file=sys.stderr)
    return 1
  return 0

