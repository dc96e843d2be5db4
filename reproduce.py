"""Run a grid of DVAE configurations and publish their results: tables, a CSV and plots.

    python reproduce.py --grid=grids/mnist_1layer_lin.json [--workers=2] [--log_dir=runs]
                        [--results_dir=results] [--data_dir=DIR] [--reuse_csv=CSV]
                        [--dry_run | --collect_only]

Run it from the repository root (relative paths, such as `--data_dir`, are the trainer's).

A grid file is JSON:

    {"name": "mnist_1layer_lin",                      # names the results files and the log folder
     "description": "...",                            # optional; heads the table
     "base": {"dataset": "binarized_mnist", "num_train_iter": 4000, ...},
     "grid": {"baseline": ["dvaes_power", ...], "k": [1, 5]},
     "seeds": [0, 1, 2],                              # optional; else "seed" in base or grid
     "claims": [{"claim": "DVAE# power beats DVAE++ power",           # optional
                 "a": {"baseline": "dvaes_power"}, "b": {"baseline": "dvaepp_power"}}],
     "proxy_data": false}                             # optional; true: no paper column

"grid" is one object of lists or a list of them: every run is one point of the cartesian product
of an object's lists (in file order) merged over "base", and a list of objects is the union of
their products (a point in two is run once). With "seeds" every point runs once per seed, seed
by seed. Any hparam of run_training.py may be in "base" or "grid", but not in both. Every run
must fix dataset, struct, baseline, k, sampler and seed. A value of null leaves that hparam at
the trainer's default. `--data_dir` is given to every run (the trainer's own flag), so grid files
and result pages name no folder of one machine.

Each run is `python run_training.py --<hparam>=<value> ... --log_dir=<cell log dir>` in its own
process; `run_directories` says where: the cell log dir is `<log_dir>/<name>/<sampler>/seed<seed>`
followed by one `<hparam>=<value>` folder for each other grid hparam outside the trainer's own run
directory, and the trainer then works in its run directory under it
(`dvae.runs.run_directory`). The harness appends the run's output to `reproduce.log` there.

A run whose results.json exists is skipped, and so is a run that `--reuse_csv` gives a row for
(an earlier publication of the same grid, whose run directories may be gone; the page marks its
rows "reused"); any other run is started, and the trainer resumes it
from its latest checkpoint, so re-running an interrupted grid finishes it. A results.json made
with other hparams than the grid now asks for is reported, never overwritten. A failed run does
not stop the others; the exit status is 1 if any run failed.

Afterwards (or with `--collect_only`) every results.json of the grid goes into
`<results_dir>/<name>.md`, `.csv` and `.png`. The page gives, per setting (a run's hparams but
its seed), the mean test NLL over the seeds with its standard error and 95% Student-t interval,
beside the paper's NLL where SPEC §8 has the same dataset, K and baseline (dvae/paper.py; not
for proxy data); then each claim as paired differences: for every finished run that matches
"a", the run with the same hparams but "b"'s values gives Δ = NLL(a) − NLL(b) for that seed, and
the mean Δ over seeds with its 95% interval decides the verdict: "holds" (interval below 0),
"reversed" (above 0) or "not resolved at this budget". One claim gives one line per setting of
the other grid hparams (e.g. per K). The plot shows the means with their intervals, the paper's
values, the validation learning curves averaged over seeds, and (`<name>_claims.png`) the
claims' intervals. The harness itself never imports TensorFlow.
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
import statistics
import subprocess
import sys
import threading
import time

from scipy import stats

from dvae import config, paper, runs

REPO = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TRAINER = shlex.join([sys.executable, os.path.join(REPO, "run_training.py")])

# The trainer's run directory spells these (and the seed, and a digest of the rest).
RUN_DIRECTORY_KEYS = ("dataset", "struct", "baseline", "k")
# Two runs that differ only here share a run directory, so they get their own log_dir.
LOG_DIR_KEYS = ("sampler", "seed")
IDENTITY_KEYS = RUN_DIRECTORY_KEYS + LOG_DIR_KEYS
# Hparams the harness sets itself.
RESERVED_KEYS = ("log_dir", "data_dir")
GRID_FILE_KEYS = ("name", "description", "base", "grid", "seeds", "claims", "proxy_data")

RUN_LOG = "reproduce.log"
RESULTS = "results.json"
HISTORY = "eval_history.jsonl"

# How result pages show the folders of the machine that made them.
LOG_DIR_PLACEHOLDER = "<log_dir>"
DATA_DIR_PLACEHOLDER = "<data_dir>"

# Two-sided level of every interval on the pages.
CONFIDENCE = 0.95

CAVEAT = (
    "The paper's rows were trained for 1e6 steps with population annealing, and the poster does "
    "not name their structure (values this low belong to its hierarchical nonlinear structures). "
    "The paper column is therefore the paper's best setting for the same dataset, K and "
    "baseline, not the same cell. Compare the ordering of the baselines, not absolute values.")
PROXY_CAVEAT = (
    "The data is a proxy for the named data set, so no value of the paper is quoted: the paper's "
    "NLLs are not comparable with these.")


class GridError(ValueError):
  """A grid file that cannot be run as written."""


@dataclasses.dataclass(frozen=True)
class Claim:
  """"a has a lower test NLL than b": a and b give other values to the same hparams."""
  text: str
  a: dict
  b: dict


@dataclasses.dataclass(frozen=True)
class Grid:
  name: str
  description: str
  base: dict
  products: tuple  # of dicts {hparam: [values]}; the grid is the union of their products
  seeds: tuple  # () when the seed is in base or grid
  claims: tuple = ()
  proxy_data: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class Cell:
  """One run of a grid: its hparams (log_dir aside) and where it lives."""
  hparams: dict
  log_dir: str  # the trainer's --log_dir
  run_dir: str  # where the trainer writes, `dvae.training.run_directory`
  root: str  # the harness's --log_dir
  extra_keys: tuple  # grid hparams that are neither identity keys nor shared by every run

  @property
  def label(self):
    return " ".join(f"{key}={self.hparams.get(key)}" for key in IDENTITY_KEYS + self.extra_keys)

  def trainer_args(self, shown=False):
    """The trainer's flags: every hparam with a value, then the cell's log_dir.

    With `shown`, the folders of this machine are placeholders, as result pages print them.
    """
    hparams = dict(self.hparams)
    log_dir = self.log_dir
    if shown:
      if hparams.get("data_dir") is not None:
        hparams["data_dir"] = DATA_DIR_PLACEHOLDER
      log_dir = os.path.join(LOG_DIR_PLACEHOLDER, os.path.relpath(self.log_dir, self.root))
    args = [f"--{key}={_flag_value(value)}" for key, value in hparams.items()
            if value is not None]
    return args + [f"--log_dir={log_dir}"]


def _flag_value(value):
  return str(value).lower() if isinstance(value, bool) else str(value)


_SCALAR = (str, int, float, bool, type(None))


def _check_product(path, axes):
  if not isinstance(axes, dict):
    raise GridError(f"grid file {path}: 'grid' must be a JSON object or a list of them")
  for key, values in axes.items():
    if (not isinstance(values, list) or not values
        or not all(isinstance(v, _SCALAR) for v in values)):
      raise GridError(f"grid file {path}: grid hparam {key} must be a non-empty list of "
                      f"strings, numbers, booleans or nulls, not {values!r}")
    if len({json.dumps(v) for v in values}) != len(values):
      raise GridError(f"grid file {path}: grid hparam {key} repeats a value: {values}")


def _check_claims(path, claims):
  if not isinstance(claims, list):
    raise GridError(f"grid file {path}: 'claims' must be a list")
  result = []
  for claim in claims:
    if (not isinstance(claim, dict) or set(claim) != {"claim", "a", "b"}
        or not isinstance(claim["claim"], str)
        or not all(isinstance(claim[side], dict) and claim[side] for side in "ab")
        or set(claim["a"]) != set(claim["b"]) or "seed" in claim["a"]
        or not all(isinstance(v, _SCALAR) for side in "ab" for v in claim[side].values())):
      raise GridError(f"grid file {path}: each claim must be {{'claim': text, 'a': {{...}}, "
                      f"'b': {{...}}}}, a and b giving other values to the same hparams (not "
                      f"the seed), not {claim!r}")
    result.append(Claim(text=claim["claim"], a=claim["a"], b=claim["b"]))
  return tuple(result)


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
  if not isinstance(base, dict):
    raise GridError(f"grid file {path}: 'base' must be a JSON object")
  products = axes if isinstance(axes, list) else [axes]
  if not products:
    raise GridError(f"grid file {path}: 'grid' must not be an empty list")
  for key, value in base.items():
    if not isinstance(value, _SCALAR):
      raise GridError(f"grid file {path}: base hparam {key} must be a string, number, boolean "
                      f"or null, not {value!r}")
  for product in products:
    _check_product(path, product)
  gridded = set().union(*products)
  both = sorted(set(base) & gridded)
  if both:
    raise GridError(f"grid file {path}: {both} in both 'base' and 'grid'; give each once")
  reserved = sorted(set(RESERVED_KEYS) & (set(base) | gridded))
  if reserved:
    raise GridError(f"grid file {path}: {reserved} is set by reproduce.py (use "
                    f"{', '.join('--' + key for key in reserved)})")
  seeds = content.get("seeds", [])
  if not isinstance(seeds, list) or not all(
      isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) or (
          len(set(seeds)) != len(seeds)):
    raise GridError(f"grid file {path}: 'seeds' must be a list of distinct non-negative "
                    f"integers, not {seeds!r}")
  if seeds and "seed" in set(base) | gridded:
    raise GridError(f"grid file {path}: seed in 'seeds' and in 'base' or 'grid'; give it once")
  fixed = set(base) | ({"seed"} if seeds else set())
  for product in products:
    missing = [key for key in IDENTITY_KEYS
               if key not in product and (key not in fixed or base.get(key, 0) is None)]
    if missing or any(None in product.get(key, []) for key in IDENTITY_KEYS):
      raise GridError(f"grid file {path}: every run must fix {IDENTITY_KEYS} (they place the "
                      f"run and label its row); missing: {missing or 'a null value in grid'}")
  proxy_data = content.get("proxy_data", False)
  if not isinstance(proxy_data, bool):
    raise GridError(f"grid file {path}: 'proxy_data' must be true or false")
  return Grid(name=name, description=content.get("description", ""), base=base,
              products=tuple(products), seeds=tuple(seeds),
              claims=_check_claims(path, content.get("claims", [])), proxy_data=proxy_data)


def run_directories(root, grid_name, hparams, extra_keys):
  """(the trainer's --log_dir, its run directory `dvae.runs.run_directory`) of one run of a grid
  under `root`; GridError when the trainer would refuse the run's hparams."""
  log_dir = os.path.join(root, grid_name, str(hparams["sampler"]), f"seed{hparams['seed']}",
                         *(f"{key}={hparams.get(key)}" for key in extra_keys))
  values = {key: value for key, value in hparams.items() if value is not None}
  try:
    resolved, _ = config.load_hparams(None, {**values, "log_dir": log_dir})
  except config.ConfigError as e:
    raise GridError(f"run {' '.join(f'{k}={v}' for k, v in values.items())}: {e}") from None
  return log_dir, runs.run_directory(resolved)


def cells(grid, log_dir, data_dir=None):
  """The runs of `grid`: seed by seed, the union of its products in order."""
  extra_keys = tuple(dict.fromkeys(key for product in grid.products for key in product
                                   if key not in IDENTITY_KEYS))
  extra = {"data_dir": data_dir} if data_dir is not None else {}
  result, seen = [], set()
  for seed in grid.seeds or (None,):
    for product in grid.products:
      for values in itertools.product(*product.values()):
        hparams = {**grid.base, **dict(zip(product, values)), **extra}
        if seed is not None:
          hparams["seed"] = seed
        key = json.dumps(hparams, sort_keys=True)
        if key in seen:
          continue
        seen.add(key)
        cell_log_dir, run_dir = run_directories(log_dir, grid.name, hparams, extra_keys)
        result.append(Cell(hparams=hparams, log_dir=cell_log_dir, run_dir=run_dir, root=log_dir,
                           extra_keys=extra_keys))
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
  reused: bool = False  # a row of an earlier publication (--reuse_csv), not a run directory

  def value(self, key):
    return self.cell.hparams.get(key)

  @property
  def paper_nll(self):
    return paper.paper_nll(self.value("dataset"), self.value("k"), self.value("baseline"))


@dataclasses.dataclass(frozen=True)
class Estimate:
  """The mean of n values, its standard error and its Student-t interval at CONFIDENCE.

  With x̄ the mean and s the sample standard deviation, the standard error is s/√n and the
  interval x̄ ± t_{n−1}((1 + CONFIDENCE)/2) · s/√n; both are None for fewer than 2 values.
  """
  n: int
  mean: float
  stderr: float | None = None
  low: float | None = None
  high: float | None = None


def estimate(values):
  values = [float(v) for v in values]
  mean = statistics.fmean(values)
  if len(values) < 2:
    return Estimate(len(values), mean)
  stderr = statistics.stdev(values) / math.sqrt(len(values))
  half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) * stderr
  return Estimate(len(values), mean, stderr, mean - half, mean + half)


def verdict(difference):
  """The verdict on "a beats b" from the interval of Δ = NLL(a) − NLL(b)."""
  if difference is None or difference.low is None:
    return "not resolved (fewer than 2 paired seeds)"
  if difference.high < 0:
    return "holds"
  if difference.low > 0:
    return "reversed"
  return "not resolved at this budget"


def _key(hparams, without=()):
  return json.dumps({k: v for k, v in hparams.items() if k not in without}, sort_keys=True)


def settings(rows):
  """The finished runs grouped by their hparams but the seed, in the grid's order."""
  groups = {}
  for row in rows:
    groups.setdefault(_key(row.cell.hparams, without=("seed",)), []).append(row)
  return list(groups.values())


def _varying(hparams, keys):
  """The keys among `keys` whose value differs between the dicts in `hparams`."""
  return [key for key in keys if len({str(h.get(key)) for h in hparams}) > 1]


@dataclasses.dataclass(frozen=True)
class ClaimLine:
  """One claim at one setting of the other grid hparams: its paired differences over seeds."""
  claim: Claim
  context: dict
  seeds: tuple
  difference: Estimate | None

  @property
  def verdict(self):
    return verdict(self.difference)


def test_claims(claims, all_cells, rows):
  """Each claim's paired differences: for a finished run matching `a`, the finished run with the
  same hparams but `b`'s values gives Δ = NLL(a) − NLL(b) for that seed; one line per setting of
  the other varying hparams, one line with no pairs for a claim whose runs have not finished."""
  by_hparams = {_key(row.cell.hparams): row for row in rows}
  keys = list(dict.fromkeys(key for cell in all_cells for key in cell.hparams))
  varying = _varying([cell.hparams for cell in all_cells], keys)
  lines = []
  for claim in claims:
    groups = {}
    for row in rows:
      hparams = row.cell.hparams
      if any(hparams.get(key) != value for key, value in claim.a.items()):
        continue
      partner = by_hparams.get(_key({**hparams, **claim.b}))
      if partner is None:
        continue
      context = {key: hparams.get(key) for key in varying
                 if key not in claim.a and key != "seed"}
      groups.setdefault(_key(context), (context, []))[1].append(
          (hparams["seed"], row.results["test_nll"] - partner.results["test_nll"]))
    for context, pairs in groups.values():
      lines.append(ClaimLine(claim, context, tuple(seed for seed, _ in pairs),
                             estimate([difference for _, difference in pairs])))
    if not groups:
      lines.append(ClaimLine(claim, {}, (), None))
  return lines


def _shown_value(key, value):
  if key == "baseline":
    return paper.BASELINE_TITLES.get(value, value)
  return value


def _describe(hparams):
  """`K=5, DVAE# power`: hparams as a reader names them."""
  names = {"k": "K", "baseline": None}
  return ", ".join(str(_shown_value(key, value)) if names.get(key, key) is None
                   else f"{names.get(key, key)}={value}" for key, value in hparams.items()) or "—"


def _plus_minus(e):
  if e is None:
    return "—"
  return _number(e.mean) + ("" if e.stderr is None else f" ± {_number(e.stderr)}")


def _interval(e):
  return "—" if e is None or e.low is None else f"[{_number(e.low)}, {_number(e.high)}]"


CSV_COLUMNS = ("dataset", "struct", "baseline", "k", "sampler", "seed", "steps", "best_step",
               "test_nll", "val_nll", "paper_nll_best_structure_1e6_steps", "test_iw_samples",
               "val_iw_samples", "wall_seconds", "steps_per_second", "log_z", "log_z_stderr",
               "run_dir_under_log_dir", "reused")


# Numbers an earlier publication's CSV gives for a run, and their types.
PUBLISHED_NUMBERS = {"steps": int, "best_step": int, "test_nll": float, "val_nll": float,
                     "test_iw_samples": int, "val_iw_samples": int, "wall_seconds": float,
                     "steps_per_second": float, "log_z": float, "log_z_stderr": float}


def read_published(path, all_cells):
  """{cell: results} from an earlier publication's CSV of the same grid: a row stands for the cell
  with the same values in the CSV's hparam columns (the identity and extra grid hparams)."""
  with open(path, newline="") as f:
    records = list(csv.DictReader(f))
  published = {}
  for cell in all_cells:
    for record in records:
      if all(record.get(key) == str(cell.hparams.get(key))
             for key in IDENTITY_KEYS + cell.extra_keys):
        published[cell] = {key: None if record.get(key) in (None, "") else kind(float(record[key]))
                           for key, kind in PUBLISHED_NUMBERS.items()}
  return published


def csv_record(row):
  r = row.results
  record = {key: row.value(key) for key in IDENTITY_KEYS + row.cell.extra_keys}
  record.update(
      steps=r["steps"], best_step=r.get("best_step"), test_nll=r["test_nll"],
      val_nll=r["val_nll"], paper_nll_best_structure_1e6_steps=row.paper_nll,
      test_iw_samples=r.get("test_iw_samples"), val_iw_samples=r.get("val_iw_samples"),
      wall_seconds=r.get("wall_seconds"), steps_per_second=r.get("steps_per_second"),
      log_z=r.get("log_z"), log_z_stderr=r.get("log_z_stderr"),
      run_dir_under_log_dir=None if row.reused else os.path.relpath(row.cell.run_dir,
                                                                    row.cell.root),
      reused="yes" if row.reused else None)
  return record


def write_csv(path, rows, extra_keys, proxy_data):
  columns = [column for column in CSV_COLUMNS[:6] + extra_keys + CSV_COLUMNS[6:]
             if not (proxy_data and column == "paper_nll_best_structure_1e6_steps")]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
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


def _table(header, lines):
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(str(c) for c in line) + " |" for line in lines])


def markdown(grid, all_cells, rows, claim_lines, command, trainer, png_names, reused_from=None):
  """The results page: budget and caveat, the command, the claims, the tables, the plots."""
  done = {row.cell for row in rows}
  steps = _values(rows, lambda row: row.results["steps"])
  budget = _values(all_cells, lambda cell: cell.hparams.get("num_train_iter"))
  structs = _values(all_cells, lambda cell: cell.hparams["struct"])
  seeds = _values(all_cells, lambda cell: cell.hparams["seed"])
  quote_paper = not grid.proxy_data
  lines = [f"# {grid.name}", ""]
  if grid.description:
    lines += [grid.description, ""]
  fraction = (f"{_joined([f'{100 * b / 1e6:.2g}%' for b in budget])} of the paper's 1e6"
              if budget else "against the paper's 1e6")
  lines += [
      f"Budget: {_joined(budget) if budget else 'the trainer default'} training steps per run "
      f"(`num_train_iter`; runs reached {_joined(steps)}), {fraction}, with the "
      f"{_joined(structs)} structure. Seeds: {_joined(seeds)}; a setting's test NLL is the mean "
      f"over its seeds ± its standard error, with the {CONFIDENCE:.0%} Student-t interval.",
      "",
      f"**Caveat.** {CAVEAT if quote_paper else PROXY_CAVEAT}",
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
  if trainer:
    lines += [f"`<trainer>` was {trainer}.", ""]
  if any(row.reused for row in rows):
    lines += [f"Runs marked *reused* were not trained for this page: their numbers are rows of "
              f"`{reused_from}`, an earlier publication of this grid with the same hparams "
              "(`--reuse_csv`; without it the command trains them).", ""]
  if claim_lines:
    lines += ["## Claims", "",
              "Δ = test NLL(a) − test NLL(b) of runs that differ only in the claim's hparams, "
              "paired by seed; a negative Δ favours the claim. Verdict from the "
              f"{CONFIDENCE:.0%} interval of the mean Δ: *holds* (below 0), *reversed* "
              "(above 0), *not resolved at this budget* (contains 0).", ""]
    lines += _table(
        ["claim", "a", "b", "setting", "seeds", "Δ (a − b) ± s.e.",
         f"{CONFIDENCE:.0%} interval", "verdict"],
        [[line.claim.text, _describe(line.claim.a), _describe(line.claim.b),
          _describe(line.context), _joined(line.seeds), _plus_minus(line.difference),
          _interval(line.difference), line.verdict] for line in claim_lines])
    if "claims" in png_names:
      lines += ["", f"![Paired differences of the claims]({png_names['claims']})"]
    lines.append("")
  extra = all_cells[0].extra_keys if all_cells else ()
  lines += ["## Per setting", ""]
  lines += _table(
      ["dataset", "struct", "baseline", "K", "sampler", *extra, "seeds",
       "test NLL ± s.e.", f"{CONFIDENCE:.0%} interval"]
      + ([paper.SETTING] if quote_paper else [])
      + ["val NLL", "wall time per run", "steps/s"],
      [[first.value("dataset"), first.value("struct"),
        _shown_value("baseline", first.value("baseline")), first.value("k"),
        first.value("sampler"), *(first.value(key) for key in extra),
        _joined([row.value("seed") for row in group]), _plus_minus(test), _interval(test)]
       + ([_number(first.paper_nll)] if quote_paper else [])
       + [_number(statistics.fmean(row.results["val_nll"] for row in group)),
          _minutes([row.results.get("wall_seconds") for row in group]),
          _number(_mean_of_known([row.results.get("steps_per_second") for row in group]), 1)]
       for group in settings(rows)
       for first, test in [(group[0], estimate([row.results["test_nll"] for row in group]))]])
  if "nll" in png_names:
    lines += ["", f"![NLL per baseline and validation learning curves]({png_names['nll']})"]
  missing = [cell for cell in all_cells if cell not in done]
  if missing:
    lines += ["", f"Not finished ({len(missing)} of {len(all_cells)} runs):", ""]
    lines += [f"- {cell.label}" + ("" if read_results(cell) is None else
                                   f" (its {RESULTS} was made with other hparams)")
              for cell in missing]
  lines += ["", "<details><summary>Every run</summary>", ""]
  lines += _table(
      ["baseline", "K", "sampler", *extra, "seed", "run", "steps", "test NLL", "val NLL",
       "wall time", "steps/s", "log Z ± stderr"],
      [[_shown_value("baseline", row.value("baseline")), row.value("k"), row.value("sampler"),
        *(row.value(key) for key in extra), row.value("seed"),
        "reused" if row.reused else "here", row.results["steps"],
        _number(row.results["test_nll"]), _number(row.results["val_nll"]),
        _minutes([row.results.get("wall_seconds")]),
        _number(row.results.get("steps_per_second"), 1),
        f"{_number(row.results.get('log_z'))} ± {_number(row.results.get('log_z_stderr'))}"]
       for row in rows])
  lines += ["", "</details>", "", "<details><summary>The trainer command of each run</summary>",
            ""]
  lines += [f"    python run_training.py {' '.join(cell.trainer_args(shown=True))}"
            for cell in all_cells]
  lines += ["", "</details>", ""]
  return "\n".join(lines)


def _mean_of_known(values):
  known = [v for v in values if v is not None]
  return statistics.fmean(known) if known else None


def _minutes(seconds):
  mean = _mean_of_known(seconds)
  return "—" if mean is None else f"{mean / 60:.1f} min"


def _mean_curve(histories):
  """[(step, mean val NLL)] over the steps every history reached."""
  steps = set.intersection(*(set(dict(history)) for history in histories))
  return [(step, statistics.fmean(dict(history)[step] for history in histories))
          for step in sorted(steps)]


def plot(path, rows, curves, quote_paper):
  """Per dataset: mean test NLL per baseline with its interval (beside the paper's), and the
  validation NLL curves averaged over seeds.

  Args:
    path: the PNG to write.
    rows: finished runs.
    curves: [(cell, [(step, val_nll)])] for every run with a learning curve so far.
    quote_paper: whether to draw the paper's values.
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
                       ("struct", "sampler") + extra_keys)

    def setting(hparams, varying=varying):
      return (hparams["k"], *(hparams.get(key) for key in varying))

    def describe(key, varying=varying):
      return ", ".join([f"K={key[0]}"] + [f"{name}={v}" for name, v in zip(varying, key[1:])])

    baselines = [b for b in paper.BASELINES if any(r.value("baseline") == b for r in mine)]
    baselines += sorted({r.value("baseline") for r in mine} - set(baselines))
    groups = settings(mine)
    series = list(dict.fromkeys(setting(group[0].cell.hparams) for group in groups))
    width = 0.8 / max(len(series), 1)
    for s, key in enumerate(series):
      members = [group for group in groups if setting(group[0].cell.hparams) == key]
      color = colors[s % len(colors)]
      # Series sit side by side around each baseline's tick.
      x = [baselines.index(group[0].value("baseline")) - 0.4 + width * (s + 0.5)
           for group in members]
      means = [estimate([row.results["test_nll"] for row in group]) for group in members]
      nll_axes.errorbar(x, [e.mean for e in means],
                        yerr=[0 if e.low is None else e.high - e.mean for e in means],
                        fmt="o", capsize=3, color=color,
                        label=f"ours, {describe(key)} (mean, {CONFIDENCE:.0%} interval)")
      quoted = [(xi, group[0].paper_nll) for xi, group in zip(x, members)
                if quote_paper and group[0].paper_nll is not None]
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
    averaged = {}
    for cell, history in traced:
      averaged.setdefault(_key(cell.hparams, without=("seed",)), (cell, []))[1].append(history)
    settings_seen = list(dict.fromkeys(setting(cell.hparams) for cell, _ in averaged.values()))
    for cell, histories in averaged.values():
      curve = _mean_curve(histories)
      if not curve:
        continue
      baseline = cell.hparams["baseline"]
      index = paper.BASELINES.index(baseline) if baseline in paper.BASELINES else -1
      curve_axes.plot(*zip(*curve),
                      styles[settings_seen.index(setting(cell.hparams)) % len(styles)],
                      color=colors[index % len(colors)], marker=".",
                      label=f"{paper.BASELINE_TITLES.get(baseline, baseline)}, "
                            f"{describe(setting(cell.hparams))}")
    curve_axes.set_xlabel("training step")
    curve_axes.set_ylabel("validation NLL (nats), mean over seeds")
    curve_axes.set_title(f"{dataset}: validation NLL during training")
    curve_axes.grid(alpha=0.3)
    if traced:
      curve_axes.legend(fontsize="x-small", ncol=2)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_claims(path, claim_lines):
  """Each claim line's mean paired difference with its interval; left of 0 favours the claim."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  shown = [line for line in claim_lines if line.difference is not None]
  figure, axes = plt.subplots(figsize=(10, 1.2 + 0.45 * len(shown)))
  y = list(range(len(shown)))[::-1]
  for yi, line in zip(y, shown):
    e = line.difference
    half = 0 if e.low is None else e.high - e.mean
    axes.errorbar([e.mean], [yi], xerr=[half], fmt="o", capsize=3,
                  color={"holds": "tab:green", "reversed": "tab:red"}.get(line.verdict, "0.4"))
  axes.axvline(0, color="black", linewidth=0.8)
  axes.set_yticks(y)
  axes.set_yticklabels([f"{line.claim.text} ({_describe(line.context)})" for line in shown],
                       fontsize="small")
  axes.set_xlabel(f"Δ test NLL (a − b), nats: mean over seeds, {CONFIDENCE:.0%} interval\n"
                  "green: holds, red: reversed, grey: not resolved")
  axes.grid(axis="x", alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def collect(grid, all_cells, results_dir, command, trainer=None, published=None,
            reused_from=None):
  """Writes <results_dir>/<name>.md, .csv and .png (and _claims.png) from the finished runs, and
  from `published` rows ({cell: results}, see `read_published`) for cells with no results.json."""
  rows, curves = [], []
  for cell in all_cells:
    results = read_results(cell)
    if results is not None and mismatch(cell, results):
      continue  # another configuration's run; main() has reported it
    if results is not None:
      rows.append(Row(cell, results))
    elif cell in (published or {}):
      rows.append(Row(cell, published[cell], reused=True))
    history = read_history(cell)
    if history:
      curves.append((cell, history))
  os.makedirs(results_dir, exist_ok=True)
  stem = os.path.join(results_dir, grid.name)
  claim_lines = test_claims(grid.claims, all_cells, rows)
  png_names = {}
  if rows or curves:
    plot(f"{stem}.png", rows, curves, quote_paper=not grid.proxy_data)
    png_names["nll"] = f"{grid.name}.png"
  if any(line.difference is not None for line in claim_lines):
    plot_claims(f"{stem}_claims.png", claim_lines)
    png_names["claims"] = f"{grid.name}_claims.png"
  write_csv(f"{stem}.csv", rows, all_cells[0].extra_keys if all_cells else (), grid.proxy_data)
  with open(f"{stem}.md", "w") as f:
    f.write(markdown(grid, all_cells, rows, claim_lines, command, trainer, png_names,
                     reused_from))
  print(f"collected {len(rows)} of {len(all_cells)} runs into {stem}.md, .csv"
        + "".join(f", {name}" for name in png_names.values()), flush=True)


# ---------------------------------------------------------------- command line

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
           f"--log_dir={_shown_path(args.log_dir, LOG_DIR_PLACEHOLDER)}",
           f"--results_dir={_shown_path(args.results_dir, '<results_dir>')}"]
  if args.data_dir is not None:
    parts.append(f"--data_dir={DATA_DIR_PLACEHOLDER}")
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
    grid = load_grid(args.grid)
    all_cells = cells(grid, args.log_dir, args.data_dir)
  except GridError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  published = {}
  if args.reuse_csv is not None:
    try:
      published = read_published(args.reuse_csv, all_cells)
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
    results = read_results(cell)
    if results is None:
      if cell not in published:
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
  collect(grid, all_cells, args.results_dir, harness_command(args),
          describe_trainer(args.trainer), published,
          args.reuse_csv and _shown_path(args.reuse_csv, "<reuse_csv>"))
  if failed or stale:
    print(f"{len(failed)} runs failed, {len(stale)} stale: " + "; ".join(
        failed + [cell.label for cell in stale]), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
