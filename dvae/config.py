"""The run configuration: one typed `HParams`, built from a JSON file plus flags and validated here.

Every other module reads a finished `HParams`; nothing downstream re-checks a value. The tables
of the paper that pick defaults live here too: the network structures (SPEC §4), the smoothing
β per dataset, structure and baseline (SPEC §6), and the evaluation split sizes (SPEC §5, §7).

    hparams, notes = load_hparams("omniglot", {"k": 5})   # hparams/omniglot.json, then a flag
    for note in notes:
      print(note)                                          # flag --k=5 overrides k=1 from ...
"""

import dataclasses
import difflib
import json
import math
import os
import typing

from dvae import bqm, graphs, optional

# The published data sets; `dataset` may also be a path to a user's `.npz` file (see `dvae.data`).
DATASETS = ("binarized_mnist", "omniglot", "dynamic_mnist")
BINARIZATIONS = ("none", "static", "dynamic")
# The binarization protocol each published data set is evaluated under in the literature.
DEFAULT_BINARIZATION = {"binarized_mnist": "none", "omniglot": "dynamic",
                        "dynamic_mnist": "dynamic"}
BASELINES = ("dvae_spike_exp", "dvaepp_exp", "dvaepp_power", "dvaes_gi", "dvaes_gauss",
             "dvaes_exp", "dvaes_unexp", "dvaes_power")
SAMPLERS = ("pcd", "pa", "dimod")
# The Boltzmann prior: the bipartite RBM, or a machine on a hardware graph (`dvae.graphs`).
PRIORS = ("rbm", "chimera", "pegasus", "zephyr")
DISTRIBUTE = ("none", "mirrored", "multi_worker")
# p(x|z) (`dvae.likelihoods`): 0/1 data, real values, integer levels 0 … K−1 (K from the data).
LIKELIHOODS = ("bernoulli", "gaussian", "categorical")

HIDDEN_UNITS = 200


@dataclasses.dataclass(frozen=True)
class Structure:
  """Latent layers × units per layer, and deterministic hidden layers per network (SPEC §4).

  `latent_units` is the paper's default width; the hparams `latent_units` and `hidden_units`
  override the widths while the structure keeps the depths.

  Attributes:
    num_latent_layers: latent layers, each with its own encoder network.
    latent_units: the paper's units per latent layer.
    num_hidden: deterministic hidden layers in every encoder and decoder MLP (0: linear).
  """
  num_latent_layers: int
  latent_units: int
  num_hidden: int


STRUCTURES = {
    "1-layer-lin": Structure(num_latent_layers=1, latent_units=200, num_hidden=0),
    "1-layer-nonlin": Structure(num_latent_layers=1, latent_units=200, num_hidden=2),
    "2-layer-nonlin": Structure(num_latent_layers=2, latent_units=200, num_hidden=2),
    "4-layer-nonlin": Structure(num_latent_layers=4, latent_units=100, num_hidden=2),
}

# SPEC §6: (dataset, structures sharing the row, β per baseline in the order of BASELINES).
_BETA_ROWS = (
    ("binarized_mnist", ("1-layer-lin",), (5, 12, 40, 40, 40, 12, 40, 40)),
    ("binarized_mnist", ("1-layer-nonlin",), (5, 14, 30, 30, 30, 12, 30, 40)),
    ("binarized_mnist", ("2-layer-nonlin", "4-layer-nonlin"), (4, 10, 30, 30, 25, 10, 16, 30)),
    ("omniglot", ("1-layer-lin",), (4, 14, 40, 40, 40, 12, 40, 40)),
    ("omniglot", ("1-layer-nonlin",), (4, 12, 40, 30, 25, 10, 16, 30)),
    ("omniglot", ("2-layer-nonlin", "4-layer-nonlin"), (4, 10, 30, 25, 25, 8, 16, 20)),
)
BETAS = {(dataset, struct, baseline): float(beta)
         for dataset, structs, row in _BETA_ROWS for struct in structs
         for baseline, beta in zip(BASELINES, row)}

# Evaluation batch of SPEC §5 (269 divides OMNIGLOT's 1345 and 8070 images). Any batch size is
# allowed: a split's last, shorter batch is evaluated too.
DEFAULT_EVAL_BATCH_SIZE = {"binarized_mnist": 1000, "omniglot": 269, "dynamic_mnist": 1000}
# Pixels one evaluation batch may hold: the default batch of a data set of D pixels per image
# is min(1000, EVAL_BATCH_PIXELS // D), the MNIST batch of 1000 for D ≤ 784.
EVAL_BATCH_PIXELS = 1000 * 784

HPARAMS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hparams")


class ConfigError(ValueError):
  """A configuration value that cannot be used; the message is one line for the user."""


def graph_prior_refusal(baseline: str, num_latent_layers: int) -> str | None:
  """Why `baseline` cannot train with a prior on a hardware graph, or None if it can.

  The prior terms that need only the energy, its pairwise part and block mean field work on any
  graph (`dvae.priors`); two are built on the RBM's bipartite split.

  Args:
    baseline: one of `BASELINES`.
    num_latent_layers: latent layers of the structure.

  Returns:
    One line for the user saying why not, or None when the combination can train.
  """
  if baseline == "dvaes_gi":
    return ("dvaes_gi (the Gaussian integral) is implemented for the bipartite RBM only: its λ "
            "and log det come from the singular values of W")
  if baseline == "dvae_spike_exp" and num_latent_layers > 1:
    return ("dvae_spike_exp with several latent layers trains with Rolfe's KL gradients, "
            "derived for the RBM's left/right split; use one latent layer or another baseline")
  return None


def default_beta(dataset: str, struct: str, baseline: str) -> float:
  """β of SPEC §6 for a dataset, structure and baseline (for dvaes_gi: the lower bound on λ).

  Args:
    dataset: a data set with a row in the table, "binarized_mnist" or "omniglot" (see
      `beta_table_dataset` for the others).
    struct: one of `STRUCTURES`.
    baseline: one of `BASELINES`.

  Returns:
    β from the table.

  Raises:
    ValueError: the table has no entry for the combination (the message lists what it has).
  """
  try:
    return BETAS[dataset, struct, baseline]
  except KeyError:
    raise ValueError(
        f"no default beta for ({dataset!r}, {struct!r}, {baseline!r}); datasets: "
        f"{', '.join(DATASETS)}; structures: {', '.join(STRUCTURES)}; "
        f"baselines: {', '.join(BASELINES)}") from None


@dataclasses.dataclass(frozen=True)
class HParams:
  """Everything a run depends on. Build it with `load_hparams`, which validates and resolves it.

  `dataset` is a published data set (`DATASETS`) or a path to a `.npz` file of the user's.
  `beta`, `eval_every`, `binarization` and `latent_units` are `None` only before resolution:
  `load_hparams` fills them from the β table, the schedule of SPEC §5 (every 20,000 steps, or
  10,000 when `num_train_iter` ≤ 100,000), the data set's protocol (`DEFAULT_BINARIZATION`;
  "none" for a file) and the structure. `eval_batch_size` is resolved too, except for a file,
  whose D is known only once it is loaded: `for_data` fills it then.
  `verify_data` checks data files against their published hashes (see `dvae.data`).
  With `sampler` "dimod", `dimod_sampler` is the import path of a dimod sampler class (made
  without arguments), `dimod_sampler_args` a JSON object of arguments to its `sample`, and
  `sampler_inverse_temperature` / `estimate_inverse_temperature` those of
  `dvae.samplers.DimodSampler`; they apply to no other sampler.
  `binarization`: "none" (the data must be 0/1), "static" (grey levels in [0, 1] binarized once
  with a fixed seed) or "dynamic" (training images binarized afresh in every batch, validation
  and test once with a fixed seed).
  `prior` "rbm" is the paper's bipartite RBM; "chimera", "pegasus" or "zephyr" puts the latent
  units on the first nodes of that hardware graph of size `graph_size` (`dvae.graphs`;
  resolved to the smallest size that holds them when not given).
  `steps_per_execution`: training steps that one call of `fit`'s compiled loop runs before
  Python sees them (`dvae.training.Run.fit`); it changes the speed, never the result. The
  hooks that act per call — time-based checkpoints, stopping on SIGTERM or SIGINT, the training
  clock — then act only between calls, up to that many steps later.

  Every field is one hparam, with the default given below; `HELP` says what each means (the
  text of `run_training.py --help`).
  """
  dataset: str = "binarized_mnist"
  struct: str = "2-layer-nonlin"
  baseline: str = "dvaes_power"
  k: int = 1
  beta: float | None = None
  sampler: str = "pa"
  dimod_sampler: str | None = None
  dimod_sampler_args: str = "{}"
  sampler_inverse_temperature: float = 1.0
  estimate_inverse_temperature: bool = False
  prior: str = "rbm"
  graph_size: int | None = None
  num_chains: int = 1000
  num_sweeps: int = 40
  num_train_iter: int = 1_000_000
  train_batch_size: int = 100
  eval_batch_size: int | None = None
  eval_iw_samples: int = 4000
  periodic_eval_iw_samples: int = 100
  final_log_z_betas: int = 10_000
  eval_every: int | None = None
  base_lr: float = 3e-3
  seed: int = 0
  data_dir: str | None = None
  verify_data: bool = True
  binarization: str | None = None
  latent_units: int | None = None
  hidden_units: int = HIDDEN_UNITS
  log_dir: str = "logs"
  export_dir: str | None = None
  distribute: str = "none"
  checkpoint_every_steps: int = 1000
  checkpoint_every_secs: float = 300.0
  steps_per_execution: int = 1
  startup_timeout_secs: float = 600.0
  likelihood: str = "bernoulli"

  @property
  def structure(self) -> Structure:
    """The `Structure` named by `struct`."""
    return STRUCTURES[self.struct]

  @property
  def num_latent_layers(self) -> int:
    """Latent layers of the structure."""
    return self.structure.num_latent_layers

  @property
  def num_hidden(self) -> int:
    """Deterministic hidden layers (of `hidden_units` each) in every encoder and decoder MLP."""
    return self.structure.num_hidden

  @property
  def dataset_name(self) -> str:
    """The data set's name in run directories: a published name, or a `.npz` file's stem."""
    if is_data_file(self.dataset):
      return os.path.splitext(os.path.basename(self.dataset))[0]
    return self.dataset

  @property
  def graph_nodes(self) -> int:
    """Nodes of the whole hardware graph the prior is cut from (0 for the RBM)."""
    return 0 if self.prior == "rbm" else graphs.num_nodes(self.prior, self.graph_size)

  @property
  def dimod_sampler_kwargs(self) -> dict[str, typing.Any]:
    """`dimod_sampler_args` as a dict (the keyword arguments of the dimod sampler's `sample`)."""
    return json.loads(self.dimod_sampler_args)

  def to_dict(self) -> dict[str, typing.Any]:
    """The resolved values, for results.json.

    Returns:
      Every field by name, as a new dict.
    """
    return dataclasses.asdict(self)



# What each hparam means and its default, for `run_training.py --help` (one entry per field).
HELP = {
    "dataset": f"data set: one of {', '.join(DATASETS)}, or the path of a .npz file of your own "
               "(default binarized_mnist)",
    "binarization": f"one of {', '.join(BINARIZATIONS)}: how grey levels become 0/1 (default: "
                    "the data set's protocol, none for a file)",
    "prior": f"the Boltzmann prior: one of {', '.join(PRIORS)}, the bipartite RBM or a machine "
             "on that hardware graph (default rbm)",
    "graph_size": "size of the hardware graph (default: the smallest that holds the latent "
                  "units)",
    "latent_units": "units per latent layer (default: the structure's, 200 or 100)",
    "hidden_units": f"units per hidden layer of every MLP (default {HIDDEN_UNITS})",
    "struct": f"latent layers × units and hidden layers: one of {', '.join(STRUCTURES)} "
              "(default 2-layer-nonlin)",
    "baseline": f"objective and relaxation: one of {', '.join(BASELINES)} (default dvaes_power)",
    "k": "importance samples per training image; DVAE# baselines train the IW bound when k > 1 "
         "(default 1)",
    "beta": "smoothing sharpness β (for dvaes_gi the lower bound on λ) (default: the paper's "
            "table for dataset, struct and baseline)",
    "sampler": "sampler of the log Z gradient: pcd (persistent chains), pa (population "
               "annealing) or dimod (a dimod sampler, see dimod_sampler) (default pa)",
    "dimod_sampler": "with sampler=dimod: import path of a dimod sampler class, e.g. "
                     "dwave.samplers.SimulatedAnnealingSampler (default: none)",
    "dimod_sampler_args": "with sampler=dimod: JSON object of arguments to its sample() "
                          "(default {})",
    "sampler_inverse_temperature": "with sampler=dimod: inverse temperature of its samples "
                                   "(default 1.0)",
    "estimate_inverse_temperature": "with sampler=dimod: estimate the samples' effective "
                                    "inverse temperature (default false)",
    "num_chains": "persistent chains, or the population size of pa (default 1000)",
    "num_sweeps": "Gibbs sweeps (pcd) or annealing steps (pa) per training step (default 40)",
    "num_train_iter": "training steps T; the KL warm-up and learning-rate schedule scale with "
                      "it (default 1000000)",
    "train_batch_size": "training images per step (default 100)",
    "eval_batch_size": "images per evaluation batch (default 1000 for MNIST, 269 for "
                       "omniglot, for a file as many as fit in memory up to 1000)",
    "eval_iw_samples": "importance samples per image of the final test evaluation (default 4000)",
    "periodic_eval_iw_samples": "importance samples per image of the periodic evaluations and "
                                "the final validation (default 100)",
    "final_log_z_betas": "inverse temperatures of the final evaluation's AIS log Z (linear "
                         "schedule, 1024 particles); an AIS with a tenth of them checks its "
                         "bias, recorded in results.json as log_z_check (default 10000)",
    "eval_every": "steps between evaluations (default 20000, or 10000 when num_train_iter ≤ "
                  "100000)",
    "base_lr": "base learning rate of the piecewise-constant schedule (default 0.003)",
    "seed": "seed of all randomness: initialisation, data order, noise of every step "
            "(default 0)",
    "data_dir": "folder of one dataset's files (default: $DVAE_DATA_DIR/<dataset>, else the "
                "embedded MNIST)",
    "verify_data": "check data files against their published hashes (default true)",
    "log_dir": "root of the run directories (default logs)",
    "export_dir": "write a SavedModel of the best checkpoint here (default: none)",
    "distribute": f"distribution strategy: one of {', '.join(DISTRIBUTE)} (default none)",
    "checkpoint_every_steps": "steps between saves of the latest checkpoint (default 1000)",
    "checkpoint_every_secs": "seconds between saves of the latest checkpoint (default 300)",
    "likelihood": f"p(x|z): one of {', '.join(LIKELIHOODS)}: 0/1 values, real values (σ "
                  "learned per dimension) or integer levels 0 … K−1 (K from the data); the "
                  "last two for a .npz file (default bernoulli)",
    "steps_per_execution": "training steps per call of the compiled training loop (a fit call "
                           "whose epoch it does not divide uses their gcd): fewer Python round "
                           "trips, the same result; time-based checkpoints, the stop on SIGTERM "
                           "or SIGINT and the training clock act between calls only, so up to "
                           "that many steps late; 10 pays on small configurations (default 1)",
    "startup_timeout_secs": "with distribute=multi_worker: seconds to wait for every worker to "
                            "start before giving up with one line (default 600)",
}

_FIELD_TYPES = typing.get_type_hints(HParams)
_CHOICES = {"struct": tuple(STRUCTURES), "baseline": BASELINES, "sampler": SAMPLERS,
            "prior": PRIORS, "distribute": DISTRIBUTE, "binarization": BINARIZATIONS,
            "likelihood": LIKELIHOODS}
_AT_LEAST_ONE = ("k", "num_chains", "num_sweeps", "num_train_iter", "train_batch_size",
                 "eval_batch_size", "eval_iw_samples", "periodic_eval_iw_samples", "eval_every",
                 "checkpoint_every_steps", "latent_units", "hidden_units", "steps_per_execution")
_POSITIVE_REALS = ("beta", "base_lr", "checkpoint_every_secs", "sampler_inverse_temperature",
                   "startup_timeout_secs")
_DIMOD_ONLY = {"dimod_sampler": None, "dimod_sampler_args": "{}",
               "sampler_inverse_temperature": 1.0, "estimate_inverse_temperature": False}
# The model feeds the seed to int32 stateless seeds.
_MAX_SEED = 2**31 - 1
# The largest count (steps, units, chains, sizes...); larger ones overflow int32 shapes and
# counters long before memory runs out.
_MAX_COUNT = 2**31 - 1


def load_hparams(source: str | None = None, overrides: dict[str, typing.Any] | None = None,
                 hparams_dir: str = HPARAMS_DIR) -> tuple[HParams, list[str]]:
  """Reads, merges, validates and resolves a configuration.

  Args:
    source: `None` (the defaults), a path to a JSON object of hparams, or a bare name such as
      "omniglot" looked up as `<hparams_dir>/omniglot.json`.
    overrides: dict of values set on the command line (only those the user set); they win over
      the file. An empty string for `data_dir` or `export_dir` means unset, since a flag cannot
      spell `null`.
    hparams_dir: the folder for bare names.

  Returns:
    `(hparams, notes)`: the validated `HParams` with every `None` default resolved, and lines for
    the log (flags that override the file, the β taken from the table).

  Raises:
    ConfigError: with a one-line message naming the problem, where it came from, and what is
      allowed.
  """
  values, origins = {}, {}
  path = None
  if source is not None:
    path = _find_hparams_file(source, hparams_dir)
    for key, value in _read_json_object(path).items():
      values[key], origins[key] = _checked(key, value, path), path
  notes = []
  for key, value in (overrides or {}).items():
    origin = f"flag --{key}"
    value = _checked(key, value, origin)
    if key in values and values[key] != value:
      notes.append(f"flag --{key}={_show(value)} overrides {key}={_show(values[key])} from {path}")
    values[key], origins[key] = value, origin

  if "dataset" in values and is_data_file(values["dataset"]):
    # A file is the same data from any working directory.
    values["dataset"] = os.path.abspath(values["dataset"])
  hparams = HParams(**values)
  if hparams.dataset not in DATASETS and not is_data_file(hparams.dataset):
    raise ConfigError(f"unknown dataset {hparams.dataset!r} ({_where(origins, 'dataset')}); "
                      f"allowed: {', '.join(DATASETS)}, or a path to a .npz file")
  for key, allowed in _CHOICES.items():
    if getattr(hparams, key) not in allowed and getattr(hparams, key) is not None:
      raise ConfigError(f"unknown {key} {getattr(hparams, key)!r} ({_where(origins, key)}); "
                        f"allowed: {', '.join(allowed)}")
  if hparams.likelihood != "bernoulli" and (
      not is_data_file(hparams.dataset) or hparams.binarization not in (None, "none")):
    raise ConfigError(f"likelihood {hparams.likelihood} ({_where(origins, 'likelihood')}) "
                      "models the values of a .npz file of your own as they are: give "
                      "--dataset=PATH.npz and no binarization")
  resolved = {}
  if hparams.beta is None:
    row = beta_table_dataset(hparams.dataset)
    resolved["beta"] = default_beta(row, hparams.struct, hparams.baseline)
    notes.append(f"beta={_show(resolved['beta'])} from the β table for {row}, "
                 f"{hparams.struct}, {hparams.baseline}")
  if hparams.binarization is None:
    resolved["binarization"] = DEFAULT_BINARIZATION.get(hparams.dataset, "none")
  if hparams.latent_units is None:
    resolved["latent_units"] = hparams.structure.latent_units
  if hparams.eval_batch_size is None and hparams.dataset in DATASETS:
    resolved["eval_batch_size"] = DEFAULT_EVAL_BATCH_SIZE[hparams.dataset]
  if hparams.eval_every is None:
    resolved["eval_every"] = 10_000 if hparams.num_train_iter <= 100_000 else 20_000
  if hparams.prior != "rbm" and hparams.graph_size is None:
    resolved["graph_size"] = graphs.smallest_size(
        hparams.prior, hparams.num_latent_layers * resolved.get("latent_units",
                                                                hparams.latent_units))
    notes.append(f"graph_size={resolved['graph_size']}: the smallest {hparams.prior} graph "
                 f"that holds the latent units")
  hparams = dataclasses.replace(hparams, **resolved)
  _check_ranges(hparams, origins)
  _check_prior(hparams, origins)
  return hparams, notes


def for_data(hparams: HParams, num_dims: int) -> HParams:
  """`hparams` with the evaluation batch resolved for data of `num_dims` pixels per image.

  A user's file gets min(1000, EVAL_BATCH_PIXELS // D) images per batch (at least 1), so that
  one batch of the importance-sampled evaluation fits memory whatever D.

  Args:
    hparams: hparams from `load_hparams`.
    num_dims: D, the values per image of the loaded data.

  Returns:
    `hparams` itself when `eval_batch_size` is already set, else a copy with it set.
  """
  if hparams.eval_batch_size is not None:
    return hparams
  return dataclasses.replace(
      hparams, eval_batch_size=max(1, min(1000, EVAL_BATCH_PIXELS // num_dims)))


def is_data_file(dataset: str) -> bool:
  """Whether `dataset` names a user's `.npz` file rather than a published data set.

  Args:
    dataset: the hparam `dataset`.

  Returns:
    True when it ends in ".npz" (whether or not the file exists).
  """
  return dataset.endswith(".npz")


def beta_table_dataset(dataset: str) -> str:
  """The data set whose row of the β table (SPEC §6) gives the default β for `dataset`: its own
  for the paper's two, MNIST's for dynamic_mnist and for a user's file.

  Args:
    dataset: the hparam `dataset`, a published name or a file path.

  Returns:
    "binarized_mnist" or "omniglot".
  """
  return dataset if dataset in ("binarized_mnist", "omniglot") else "binarized_mnist"


def _find_hparams_file(source, hparams_dir):
  if os.path.isfile(source):
    return source
  candidates = [source]
  if os.sep not in source and "/" not in source:
    name = source if source.endswith(".json") else f"{source}.json"
    candidates.append(os.path.join(hparams_dir, name))
    if os.path.isfile(candidates[-1]):
      return candidates[-1]
  listing = os.listdir(hparams_dir) if os.path.isdir(hparams_dir) else []
  available = sorted(f[:-len(".json")] for f in listing if f.endswith(".json"))
  raise ConfigError(f"hparams file {source!r} not found (looked for {' and '.join(candidates)}); "
                    f"give a JSON file or one of the bare names: {', '.join(available)}")


def _read_json_object(path):
  def refuse_duplicates(pairs):
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
      raise ConfigError(f"{path}: key {repeated[0]!r} appears more than once; "
                        "give each hparam once")
    return dict(pairs)

  try:
    with open(path, encoding="utf-8") as f:
      content = json.load(f, object_pairs_hook=refuse_duplicates)
  except OSError as e:
    raise ConfigError(f"cannot read hparams file {path}: {e.strerror}; "
                      "give a readable JSON file") from None
  except (ValueError, RecursionError) as e:
    # ValueError: invalid JSON or UTF-8, or an integer of more digits than Python converts.
    raise ConfigError(f"{path} is not valid JSON ({_first_line(e)}); an hparams file is one "
                      'JSON object such as {"k": 5}') from None
  if not isinstance(content, dict):
    raise ConfigError(f"{path} holds a JSON {type(content).__name__}, not an object; an hparams "
                      'file is one JSON object such as {"k": 5}')
  return content


def _checked(key, value, origin):
  """`value` as the field's type, or a ConfigError; ints are accepted where floats are."""
  if key not in _FIELD_TYPES:
    close = difflib.get_close_matches(key, _FIELD_TYPES, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown hparam {key!r} ({origin}); {hint}"
                      f"allowed: {', '.join(_FIELD_TYPES)}")
  annotation = _FIELD_TYPES[key]
  optional = type(None) in typing.get_args(annotation)
  kind = next(t for t in (bool, int, float, str)
              if t in (annotation, *typing.get_args(annotation)))
  if optional and kind is str and value == "":
    return None
  if value is None and optional:
    return None
  # bool is a subclass of int in Python, but `"k": true` is a mistake, not k=1.
  if kind is bool:
    ok = isinstance(value, bool)
  elif kind is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif kind is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  else:
    ok = isinstance(value, str)
  if not ok:
    expected = {bool: "true or false", int: "an integer", float: "a number",
                str: "a string"}[kind] + (" or null" if optional else "")
    raise ConfigError(f"hparam {key} must be {expected}, got {_show(value)} "
                      f"({type(value).__name__}) ({origin})")
  return float(value) if kind is float else value


def _check_ranges(hparams, origins):
  def refuse(key, requirement):
    raise ConfigError(f"hparam {key}={_show(getattr(hparams, key))} ({_where(origins, key)}) "
                      f"must be {requirement}")

  for key in _AT_LEAST_ONE:
    if getattr(hparams, key) is not None and not 1 <= getattr(hparams, key) <= _MAX_COUNT:
      refuse(key, f"an integer ≥ 1 and ≤ {_MAX_COUNT}")
  for key in _POSITIVE_REALS:
    value = getattr(hparams, key)
    if not (math.isfinite(value) and value > 0):
      refuse(key, "a finite number > 0")
  if hparams.final_log_z_betas < 20:
    refuse("final_log_z_betas", "an integer ≥ 20 (its check uses a tenth of them)")
  if not 0 <= hparams.seed <= _MAX_SEED:
    refuse("seed", f"an integer in [0, {_MAX_SEED}]")
  if not hparams.log_dir:
    refuse("log_dir", "a non-empty path")
  if hparams.num_latent_layers * hparams.latent_units < 2:
    refuse("latent_units", f"at least 2 in all for the two halves of the RBM "
           f"({hparams.struct} has {hparams.num_latent_layers} latent layer)")
  _check_dimod_sampler(hparams, origins)


def _check_dimod_sampler(hparams, origins):
  """The dimod hparams are set only with sampler=dimod, and then name a usable sampler: it is
  imported and `dimod_sampler_args` checked by drawing from a two-unit model."""
  if hparams.sampler != "dimod":
    for key, default in _DIMOD_ONLY.items():
      if getattr(hparams, key) != default:
        raise ConfigError(f"hparam {key} ({_where(origins, key)}) applies to sampler=dimod only; "
                          f"sampler is {hparams.sampler!r}")
    return
  if not hparams.dimod_sampler:
    raise ConfigError("sampler=dimod needs dimod_sampler, the import path of a dimod sampler "
                      "class, e.g. --dimod_sampler=dwave.samplers.SimulatedAnnealingSampler")
  if not all(part.isidentifier() for part in hparams.dimod_sampler.split(".")) or (
      "." not in hparams.dimod_sampler):
    raise ConfigError(f"hparam dimod_sampler={hparams.dimod_sampler!r} "
                      f"({_where(origins, 'dimod_sampler')}) is not an import path "
                      "module.Class, e.g. dwave.samplers.SimulatedAnnealingSampler")
  try:
    kwargs = json.loads(hparams.dimod_sampler_args)
  except (ValueError, RecursionError) as e:
    kwargs = e
  if not isinstance(kwargs, dict):
    shown = hparams.dimod_sampler_args
    shown = shown if len(shown) <= 80 else shown[:79] + "…"
    raise ConfigError(f"hparam dimod_sampler_args ({_where(origins, 'dimod_sampler_args')}) must "
                      f"be a JSON object such as '{{\"num_sweeps\": 100}}', got {shown!r}")
  try:
    sampler = bqm.sampler_from_path(hparams.dimod_sampler)
    bqm.check_sample_kwargs(sampler, kwargs)
  except (ImportError, ValueError) as e:
    raise ConfigError(str(e)) from None
  _try_sampler(sampler, kwargs, origins)


def _try_sampler(sampler, kwargs, origins):
  """Draws once from a two-unit model with `kwargs`, so that a value of a type or range the
  sampler refuses (`{"num_sweeps": "abc"}`) is refused before the run starts."""
  model = bqm.binary_quadratic_model([1.0, -1.0], [[0, 1]], [0.5])
  reads = {"num_reads": 1} if "num_reads" in sampler.parameters else {}
  try:
    sampler.sample(model, **kwargs, **reads).record  # pylint: disable=expression-not-assigned
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"hparam dimod_sampler_args={kwargs} "
                      f"({_where(origins, 'dimod_sampler_args')}) is refused by "
                      f"{type(sampler).__name__}.sample: {type(e).__name__}: "
                      f"{_first_line(e)}") from None


def _check_prior(hparams, origins):
  if hparams.prior == "rbm":
    if hparams.graph_size is not None:
      raise ConfigError(f"hparam graph_size ({_where(origins, 'graph_size')}) applies to the "
                        f"hardware-graph priors only ({', '.join(PRIORS[1:])}), not prior=rbm")
    return
  if not (optional.available("dwave.graphs") and optional.available("networkx")):
    raise ConfigError(f"prior={hparams.prior} needs the optional D-Wave packages: "
                      f"{optional.INSTALL_HINT}")
  refusal = graph_prior_refusal(hparams.baseline, hparams.num_latent_layers)
  if refusal:
    raise ConfigError(f"prior={hparams.prior} ({_where(origins, 'prior')}): {refusal}")
  minimum = 2 if hparams.prior == "pegasus" else 1
  if hparams.graph_size < minimum:
    raise ConfigError(f"hparam graph_size={hparams.graph_size} "
                      f"({_where(origins, 'graph_size')}) must be an integer ≥ {minimum}")
  error = graphs.size_error(hparams.prior, hparams.graph_size,
                            hparams.num_latent_layers * hparams.latent_units)
  if error:
    raise ConfigError(f"{error} ({_where(origins, 'graph_size')})")


def _first_line(error):
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _where(origins, key):
  return origins.get(key, "default")


def _show(value):
  return json.dumps(value, ensure_ascii=False)
