"""Grid files, and the runs (cells) they ask for.

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
(`dvae.runs.run_directory`).
"""

import dataclasses
import hashlib
import itertools
import json
import os
import re

from dvae import config, runs

# The trainer's run directory spells these (and the seed, and a digest of the rest).
RUN_DIRECTORY_KEYS = ("dataset", "struct", "baseline", "k")
# Two runs that differ only here share a run directory, so they get their own log_dir.
LOG_DIR_KEYS = ("sampler", "seed")
IDENTITY_KEYS = RUN_DIRECTORY_KEYS + LOG_DIR_KEYS
# Hparams the harness sets itself.
RESERVED_KEYS = ("log_dir", "data_dir")
GRID_FILE_KEYS = ("name", "description", "base", "grid", "seeds", "claims", "proxy_data")

# How result pages show the folders of the machine that made them.
LOG_DIR_PLACEHOLDER = "<log_dir>"
DATA_DIR_PLACEHOLDER = "<data_dir>"


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
  except (ValueError, RecursionError) as e:
    # ValueError: invalid JSON, or an integer of more digits than Python converts.
    raise GridError(f"grid file {path} is not valid JSON: {str(e) or type(e).__name__}") from None
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


def folder_name(key, value):
  """`key=value` as one folder name: characters other than letters, digits and `_.,=+-` become
  `_`, a name of dots alone is prefixed, and a changed or overlong name gets 8 hex digits of its
  value's SHA-256, so that grid values never leave the log root or meet each other."""
  text = f"{key}={value}" if key else str(value)
  safe = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)[:100]
  if safe.strip(".") == "":
    safe = f"_{safe}"
  if safe != text:
    safe += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
  return safe


def run_directories(root, grid_name, hparams, extra_keys):
  """(the trainer's --log_dir, its run directory `dvae.runs.run_directory`) of one run of a grid
  under `root`; GridError when the trainer would refuse the run's hparams."""
  log_dir = os.path.join(root, grid_name, folder_name("", hparams["sampler"]),
                         f"seed{hparams['seed']}",
                         *(folder_name(key, hparams.get(key)) for key in extra_keys))
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
