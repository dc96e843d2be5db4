"""Run a grid of DVAE configurations and publish their results: a table, a CSV and plots.

    python reproduce.py --grid=grids/mnist_1layer_lin.json [--workers=2] [--log_dir=runs]
                        [--results_dir=results] [--dry_run | --collect_only]

Run it from the repository root (relative paths in a grid, such as `data_dir`, are the trainer's).

A grid file is JSON:

    {"name": "mnist_1layer_lin",                      # names the results files and the log folder
     "description": "...",                            # optional; heads the table
     "base": {"dataset": "binarized_mnist", "num_train_iter": 4000, ...},
     "grid": {"baseline": ["dvaes_power", ...], "k": [1, 5]}}

Every run is one point of the cartesian product of the "grid" lists (in file order) merged over
"base"; any hparam of run_training.py may be in either, but not in both. Every run must fix
dataset, struct, baseline, k, sampler and seed. A value of null leaves that hparam at the
trainer's default.

Each run is `python run_training.py --<hparam>=<value> ... --log_dir=<cell log dir>` in its own
process, where the cell log dir is `<log_dir>/<name>/<sampler>/seed<seed>` followed by one
`<hparam>=<value>` folder for each other grid hparam outside the trainer's own run directory;
the trainer then works in `<cell log dir>/<dataset>/<struct>/<baseline>/<k>/`
(`dvae.training.run_directory`). The harness appends the run's output to `reproduce.log` there.

A run whose results.json exists is skipped; any other run is started, and the trainer resumes it
from its latest checkpoint, so re-running an interrupted grid finishes it. A results.json made
with other hparams than the grid now asks for is reported, never overwritten. A failed run does
not stop the others; the exit status is 1 if any run failed.

Afterwards (or with `--collect_only`) every results.json of the grid goes into
`<results_dir>/<name>.md` and `.csv` (one row per run, beside the paper's NLL where SPEC §8 has
the same dataset, K and baseline; see dvae/paper.py) and `<results_dir>/<name>.png` (NLL per
baseline against the paper's; learning curves of validation NLL from each run's
eval_history.jsonl). The harness itself never imports TensorFlow.
"""

import argparse
import concurrent.futures
import csv
import dataclasses
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import threading
import time

from dvae import paper

REPO = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TRAINER = shlex.join([sys.executable, os.path.join(REPO, "run_training.py")])

# The trainer's run directory is <log_dir>/<dataset>/<struct>/<baseline>/<k>.
RUN_DIRECTORY_KEYS = ("dataset", "struct", "baseline", "k")
# Two runs that differ only here share a run directory, so they get their own log_dir.
LOG_DIR_KEYS = ("sampler", "seed")
IDENTITY_KEYS = RUN_DIRECTORY_KEYS + LOG_DIR_KEYS
# Hparams the harness sets itself.
RESERVED_KEYS = ("log_dir",)
GRID_FILE_KEYS = ("name", "description", "base", "grid")

RUN_LOG = "reproduce.log"
RESULTS = "results.json"
HISTORY = "eval_history.jsonl"

CAVEAT = (
    "The paper's rows were trained for 1e6 steps with population annealing, and the poster does "
    "not name their structure (values this low belong to its hierarchical nonlinear structures). "
    "The paper column is therefore the paper's best setting for the same dataset, K and "
    "baseline, not the same cell. Compare the ordering of the baselines, not absolute values.")


class GridError(ValueError):
  """A grid file that cannot be run as written."""


@dataclasses.dataclass(frozen=True)
class Grid:
  name: str
  description: str
  base: dict
  axes: dict


@dataclasses.dataclass(frozen=True, eq=False)
class Cell:
  """One run of a grid: its hparams (log_dir aside) and where it lives."""
  hparams: dict
  log_dir: str
  extra_keys: tuple  # grid hparams that are neither identity keys nor shared by every run

  @property
  def run_dir(self):
    """`dvae.training.run_directory` of these hparams."""
    return os.path.join(self.log_dir, *(str(self.hparams[key]) for key in RUN_DIRECTORY_KEYS))

  @property
  def label(self):
    return " ".join(f"{key}={self.hparams[key]}" for key in IDENTITY_KEYS + self.extra_keys)

  def trainer_args(self):
    """The trainer's flags: every hparam with a value, then the cell's log_dir."""
    args = [f"--{key}={_flag_value(value)}" for key, value in self.hparams.items()
            if value is not None]
    return args + [f"--log_dir={self.log_dir}"]


def _flag_value(value):
  return str(value).lower() if isinstance(value, bool) else str(value)


def load_grid(path):
  """Reads and checks a grid file; raises GridError naming what is wrong."""
  try:
    with open(path) as f:
      content = json.load(f)
  except OSError as e:
    raise GridError(f"cannot read grid file {path}: {e.strerror}") from e
  except json.JSONDecodeError as e:
    raise GridError(f"grid file {path} is not valid JSON: {e}") from e
  if not isinstance(content, dict):
    raise GridError(f"grid file {path} must hold a JSON object with keys {GRID_FILE_KEYS}")
  unknown = sorted(set(content) - set(GRID_FILE_KEYS))
  if unknown:
    raise GridError(f"grid file {path}: unknown keys {unknown}; allowed: {GRID_FILE_KEYS}")
  name = content.get("name")
  if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
    raise GridError(f"grid file {path}: 'name' must be a string of letters, digits, '_', '.', "
                    f"'-' (it names files), not {name!r}")
  base, axes = content.get("base", {}), content.get("grid", {})
  if not isinstance(base, dict) or not isinstance(axes, dict):
    raise GridError(f"grid file {path}: 'base' and 'grid' must be JSON objects")
  scalar = (str, int, float, bool, type(None))
  for key, value in base.items():
    if not isinstance(value, scalar):
      raise GridError(f"grid file {path}: base hparam {key} must be a string, number, boolean "
                      f"or null, not {value!r}")
  for key, values in axes.items():
    if (not isinstance(values, list) or not values
        or not all(isinstance(v, scalar) for v in values)):
      raise GridError(f"grid file {path}: grid hparam {key} must be a non-empty list of "
                      f"strings, numbers, booleans or nulls, not {values!r}")
    if len({json.dumps(v) for v in values}) != len(values):
      raise GridError(f"grid file {path}: grid hparam {key} repeats a value: {values}")
  both = sorted(set(base) & set(axes))
  if both:
    raise GridError(f"grid file {path}: {both} in both 'base' and 'grid'; give each once")
  reserved = sorted(set(RESERVED_KEYS) & (set(base) | set(axes)))
  if reserved:
    raise GridError(f"grid file {path}: {reserved} is set by reproduce.py (use --log_dir)")
  missing = [key for key in IDENTITY_KEYS
             if key not in axes and base.get(key) is None]
  if missing or any(None in axes.get(key, []) for key in IDENTITY_KEYS):
    raise GridError(f"grid file {path}: every run must fix {IDENTITY_KEYS} (they place the run "
                    f"and label its row); missing: {missing or 'a null value in grid'}")
  return Grid(name=name, description=content.get("description", ""), base=base, axes=axes)


def cells(grid, log_dir):
  """The runs of `grid`, in the order of the cartesian product of its lists."""
  extra_keys = tuple(key for key in grid.axes if key not in IDENTITY_KEYS)
  result = []
  for values in itertools.product(*grid.axes.values()):
    hparams = {**grid.base, **dict(zip(grid.axes, values))}
    cell_log_dir = os.path.join(
        log_dir, grid.name, str(hparams["sampler"]), f"seed{hparams['seed']}",
        *(f"{key}={hparams[key]}" for key in extra_keys))
    result.append(Cell(hparams=hparams, log_dir=cell_log_dir, extra_keys=extra_keys))
  return result


def read_results(cell):
  """The run's results.json as a dict, or None when the run has not finished."""
  try:
    with open(os.path.join(cell.run_dir, RESULTS)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except json.JSONDecodeError:
    # Not a finished run: the trainer, started again, resumes at its last step and rewrites it.
    return None


def mismatch(cell, results):
  """Hparams of the grid that a finished run was not trained with, as 'key: ran X, grid Y'."""
  trained = results.get("hparams", {})
  return [f"{key}: ran {trained[key]!r}, grid {value!r}" for key, value in cell.hparams.items()
          if value is not None and key in trained and trained[key] != value]


def read_history(cell):
  """[(step, val_nll)] of the run's periodic evaluations; a re-evaluated step keeps its last."""
  by_step = {}
  try:
    with open(os.path.join(cell.run_dir, HISTORY)) as f:
      for line in f:
        try:
          record = json.loads(line)
          by_step[int(record["step"])] = float(record["val_nll"])
        except (ValueError, KeyError, TypeError):
          continue  # the last line of a killed run may be cut short
  except FileNotFoundError:
    pass
  return sorted(by_step.items())


class Runner:
  """Runs cells as trainer subprocesses, a few at a time, and reports each as it ends."""

  def __init__(self, trainer, total):
    self.trainer = shlex.split(trainer)
    self.total = total
    self.lock = threading.Lock()
    self.finished = 0

  def say(self, message, error=False):
    with self.lock:
      print(message, file=sys.stderr if error else sys.stdout, flush=True)

  def run(self, cell):
    """Runs one cell to completion; returns None on success, else the reason it failed."""
    os.makedirs(cell.run_dir, exist_ok=True)
    command = self.trainer + cell.trainer_args()
    log_path = os.path.join(cell.run_dir, RUN_LOG)
    self.say(f"start  {cell.label}")
    began = time.monotonic()
    reason = None
    with open(log_path, "a") as log:
      log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
      log.flush()
      try:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
        if status:
          reason = f"exit status {status}"
      except OSError as e:
        reason = f"could not start the trainer: {e}"
        log.write(reason + "\n")
    minutes = (time.monotonic() - began) / 60
    with self.lock:
      self.finished += 1
      progress = f"[{self.finished}/{self.total}]"
    results = None if reason else read_results(cell)
    if results is not None:
      self.say(f"done   {progress} {cell.label}: test NLL {results['test_nll']:.2f} "
               f"({minutes:.1f} min)")
      return None
    reason = reason or f"exit status 0 but no {RESULTS}"
    self.say(f"FAILED {progress} {cell.label}: {reason}; log {log_path}\n"
             + "".join(f"    {line}" for line in _tail(log_path, 5)), error=True)
    return reason

  def run_all(self, pending, workers):
    """Runs `pending` cells with `workers` at once; returns the labels of the failed ones."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      futures = [(pool.submit(self.run, cell), cell) for cell in pending]
      try:
        return [cell.label for future, cell in futures if future.result() is not None]
      except KeyboardInterrupt:
        # The trainers got the same interrupt and save their state; start no new ones.
        pool.shutdown(wait=True, cancel_futures=True)
        raise


def _tail(path, lines):
  with open(path, errors="replace") as f:
    return f.readlines()[-lines:]


# ---------------------------------------------------------------- collecting the results

@dataclasses.dataclass
class Row:
  cell: Cell
  results: dict

  def value(self, key):
    return self.cell.hparams[key]

  @property
  def paper_nll(self):
    return paper.paper_nll(self.value("dataset"), self.value("k"), self.value("baseline"))


CSV_COLUMNS = ("dataset", "struct", "baseline", "k", "sampler", "seed", "steps", "best_step",
               "test_nll", "val_nll", "paper_nll_best_structure_1e6_steps", "test_iw_samples",
               "val_iw_samples", "wall_seconds", "steps_per_second", "log_z", "log_z_stderr",
               "run_dir")


def csv_record(row):
  r = row.results
  record = {key: row.value(key) for key in IDENTITY_KEYS + row.cell.extra_keys}
  record.update(
      steps=r["steps"], best_step=r.get("best_step"), test_nll=r["test_nll"],
      val_nll=r["val_nll"], paper_nll_best_structure_1e6_steps=row.paper_nll,
      test_iw_samples=r.get("test_iw_samples"), val_iw_samples=r.get("val_iw_samples"),
      wall_seconds=r.get("wall_seconds"), steps_per_second=r.get("steps_per_second"),
      log_z=r.get("log_z"), log_z_stderr=r.get("log_z_stderr"), run_dir=row.cell.run_dir)
  return record


def write_csv(path, rows, extra_keys):
  columns = CSV_COLUMNS[:6] + extra_keys + CSV_COLUMNS[6:]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if v is None else v for k, v in csv_record(row).items()})


def _number(value, digits=2):
  return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _values(items, get):
  """The distinct values of `get(item)`, sorted; None left out."""
  values = {get(item) for item in items} - {None}
  try:
    return sorted(values)
  except TypeError:  # a grid may mix types in one hparam
    return sorted(values, key=str)


def _joined(values):
  return ", ".join(str(v) for v in values) if values else "—"


def markdown(grid, all_cells, rows, command, png_name):
  """The results page: budget and caveat, the exact command, the table, the plot."""
  done = {row.cell for row in rows}
  steps = _values(rows, lambda row: row.results["steps"])
  budget = _values(all_cells, lambda cell: cell.hparams.get("num_train_iter"))
  structs = _values(all_cells, lambda cell: cell.hparams["struct"])
  lines = [f"# {grid.name}", ""]
  if grid.description:
    lines += [grid.description, ""]
  fraction = (f"{_joined([f'{100 * b / 1e6:.2g}%' for b in budget])} of the paper's 1e6"
              if budget else "against the paper's 1e6")
  lines += [
      f"Budget: {_joined(budget) if budget else 'the trainer default'} training steps per run "
      f"(`num_train_iter`; runs reached {_joined(steps)}), {fraction}, with the "
      f"{_joined(structs)} structure.",
      "",
      f"**Caveat.** {CAVEAT}",
      "",
      "Test NLL is the importance-weighted bound of the best-validation checkpoint with "
      f"{_joined(_values(rows, lambda row: row.results.get('test_iw_samples')))} samples "
      f"(validation: {_joined(_values(rows, lambda row: row.results.get('val_iw_samples')))}); "
      "wall time covers training and evaluation, steps/s training alone; log Z is the AIS "
      "estimate used for the final evaluation.",
      "",
      "Command (from the repository root):",
      "",
      f"    {command}",
      "",
  ]
  extra = all_cells[0].extra_keys if all_cells else ()
  header = (["dataset", "struct", "baseline", "K", "sampler", "seed", *extra, "steps",
             "test NLL", "val NLL", paper.SETTING, "wall time", "steps/s", "log Z ± stderr"])
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    r = row.results
    wall = r.get("wall_seconds")
    cells_text = [row.value("dataset"), row.value("struct"),
                  paper.BASELINE_TITLES.get(row.value("baseline"), row.value("baseline")),
                  row.value("k"), row.value("sampler"), row.value("seed"),
                  *(row.value(key) for key in extra), r["steps"], _number(r["test_nll"]),
                  _number(r["val_nll"]), _number(row.paper_nll),
                  "—" if wall is None else f"{wall / 60:.1f} min",
                  _number(r.get("steps_per_second"), 1),
                  f"{_number(r.get('log_z'))} ± {_number(r.get('log_z_stderr'))}"]
    lines.append("| " + " | ".join(str(c) for c in cells_text) + " |")
  missing = [cell for cell in all_cells if cell not in done]
  if missing:
    lines += ["", f"Not finished ({len(missing)} of {len(all_cells)} runs):", ""]
    lines += [f"- {cell.label}" + ("" if read_results(cell) is None else
                                   f" (its {RESULTS} was made with other hparams)")
              for cell in missing]
  if png_name:
    lines += ["", f"![NLL per baseline and validation learning curves]({png_name})"]
  lines += ["", "<details><summary>The trainer command of each run</summary>", ""]
  lines += [f"    python run_training.py {shlex.join(cell.trainer_args())}" for cell in all_cells]
  lines += ["", "</details>", ""]
  return "\n".join(lines)


def _varying(hparams, keys):
  """The keys among `keys` whose value differs between the dicts in `hparams`."""
  return [key for key in keys if len({str(h[key]) for h in hparams}) > 1]


def plot(path, rows, curves):
  """Per dataset: our test NLL per baseline beside the paper's, and validation NLL curves.

  Args:
    path: the PNG to write.
    rows: finished runs.
    curves: [(cell, [(step, val_nll)])] for every run with a learning curve so far.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  datasets = list(dict.fromkeys([row.value("dataset") for row in rows]
                                + [cell.hparams["dataset"] for cell, _ in curves]))
  figure, axes = plt.subplots(len(datasets), 2, figsize=(14, 4.8 * len(datasets)), squeeze=False)
  colors = plt.get_cmap("tab10").colors
  styles = ("-", "--", ":", "-.")
  for (nll_axes, curve_axes), dataset in zip(axes, datasets):
    mine = [row for row in rows if row.value("dataset") == dataset]
    traced = [(cell, history) for cell, history in curves if cell.hparams["dataset"] == dataset]
    # Settings besides K and the baseline that differ between runs go into every label.
    extra_keys = (mine[0].cell.extra_keys if mine else traced[0][0].extra_keys)
    varying = _varying([row.cell.hparams for row in mine] + [cell.hparams for cell, _ in traced],
                       ("struct", "sampler", "seed") + extra_keys)

    def setting(hparams, varying=varying):
      return (hparams["k"], *(hparams[key] for key in varying))

    def describe(key, varying=varying):
      return ", ".join([f"K={key[0]}"] + [f"{name}={v}" for name, v in zip(varying, key[1:])])

    baselines = [b for b in paper.BASELINES if any(r.value("baseline") == b for r in mine)]
    baselines += sorted({r.value("baseline") for r in mine} - set(baselines))
    series = list(dict.fromkeys(setting(row.cell.hparams) for row in mine))
    width = 0.8 / max(len(series), 1)
    for s, key in enumerate(series):
      members = [row for row in mine if setting(row.cell.hparams) == key]
      color = colors[s % len(colors)]
      # Series sit side by side around each baseline's tick.
      x = [baselines.index(row.value("baseline")) - 0.4 + width * (s + 0.5) for row in members]
      nll_axes.plot(x, [row.results["test_nll"] for row in members], "o", color=color,
                    label=f"ours, {describe(key)}")
      quoted = [(xi, row.paper_nll) for xi, row in zip(x, members) if row.paper_nll is not None]
      if quoted:
        nll_axes.plot(*zip(*quoted), "D", mfc="none", color=color,
                      label=f"{paper.SETTING}, K={key[0]}")
    nll_axes.set_xticks(range(len(baselines)))
    nll_axes.set_xticklabels([paper.BASELINE_TITLES.get(b, b) for b in baselines], rotation=30,
                             ha="right")
    nll_axes.set_ylabel("test NLL (nats)")
    nll_axes.set_title(f"{dataset}: NLL per baseline (lower is better)")
    nll_axes.grid(axis="y", alpha=0.3)
    if series:
      nll_axes.legend(fontsize="small")

    # Colour: the baseline; line style: K and the other varying settings.
    settings = list(dict.fromkeys(setting(cell.hparams) for cell, _ in traced))
    for cell, history in traced:
      baseline = cell.hparams["baseline"]
      index = paper.BASELINES.index(baseline) if baseline in paper.BASELINES else -1
      curve_axes.plot(*zip(*history), styles[settings.index(setting(cell.hparams)) % len(styles)],
                      color=colors[index % len(colors)], marker=".",
                      label=f"{paper.BASELINE_TITLES.get(baseline, baseline)}, "
                            f"{describe(setting(cell.hparams))}")
    curve_axes.set_xlabel("training step")
    curve_axes.set_ylabel("validation NLL (nats)")
    curve_axes.set_title(f"{dataset}: validation NLL during training")
    curve_axes.grid(alpha=0.3)
    if traced:
      curve_axes.legend(fontsize="x-small", ncol=2)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def collect(grid, all_cells, results_dir, command):
  """Writes <results_dir>/<name>.md, .csv and .png from the runs that finished."""
  rows, curves = [], []
  for cell in all_cells:
    results = read_results(cell)
    if results is not None and mismatch(cell, results):
      continue  # another configuration's run; main() has reported it
    if results is not None:
      rows.append(Row(cell, results))
    history = read_history(cell)
    if history:
      curves.append((cell, history))
  os.makedirs(results_dir, exist_ok=True)
  stem = os.path.join(results_dir, grid.name)
  png_name = None
  if rows or curves:
    plot(f"{stem}.png", rows, curves)
    png_name = f"{grid.name}.png"
  write_csv(f"{stem}.csv", rows, all_cells[0].extra_keys if all_cells else ())
  with open(f"{stem}.md", "w") as f:
    f.write(markdown(grid, all_cells, rows, command, png_name))
  print(f"collected {len(rows)} of {len(all_cells)} runs into {stem}.md, .csv"
        + (", .png" if png_name else ""), flush=True)


# ---------------------------------------------------------------- command line

def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="reproduce.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--grid", required=True, help="grid JSON file (see grids/)")
  parser.add_argument("--workers", type=int, default=1, help="runs at once")
  parser.add_argument("--log_dir", default="runs", help="where the runs live")
  parser.add_argument("--results_dir", default="results", help="where the table and plots go")
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


def harness_command(args):
  """The command that reproduces the results, as the results page quotes it."""
  parts = ["python", "reproduce.py", f"--grid={args.grid}", f"--log_dir={args.log_dir}",
           f"--results_dir={args.results_dir}"]
  if args.trainer != DEFAULT_TRAINER:
    parts.append(f"--trainer={args.trainer}")
  return shlex.join(parts)


def main(argv=None):
  """Returns the exit status: 0 when every run finished, 1 when any failed, 2 on a bad grid."""
  args = parse_args(argv)
  try:
    grid = load_grid(args.grid)
  except GridError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  all_cells = cells(grid, args.log_dir)
  runs = {}
  for cell in all_cells:
    if cell.run_dir in runs:
      print(f"error: runs {runs[cell.run_dir].label} and {cell.label} share {cell.run_dir}",
            file=sys.stderr)
      return 2
    runs[cell.run_dir] = cell

  pending, stale = [], []
  for cell in all_cells:
    results = read_results(cell)
    if results is None:
      pending.append(cell)
    elif mismatch(cell, results):
      stale.append(cell)
      print(f"STALE  {cell.label}: {cell.run_dir}/{RESULTS} was made with other hparams "
            f"({'; '.join(mismatch(cell, results))}); move that directory away or use another "
            "--log_dir", file=sys.stderr)
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
    runner = Runner(args.trainer, len(pending))
    try:
      failed = runner.run_all(pending, args.workers)
    except KeyboardInterrupt:
      print("interrupted; run the same command again to resume", file=sys.stderr)
      return 130
  collect(grid, all_cells, args.results_dir, harness_command(args))
  if failed or stale:
    print(f"{len(failed)} runs failed, {len(stale)} stale: " + "; ".join(
        failed + [cell.label for cell in stale]), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
