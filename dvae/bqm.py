"""A Boltzmann machine as a dimod binary quadratic model, and what a dimod sampler's draws say.

Mathematical Details

A Boltzmann machine on a graph G = (V, E) over binary z ∈ {0,1}^V has

    E(z) = −Σ_i b_i z_i − Σ_{(i,j)∈E} J_ij z_i z_j,      p_β(z) = e^{−βE(z)} / Z_β,

the bipartite RBM being the case V = V1 ∪ V2, E = V1 × V2, J = W (SPEC §9). As a dimod binary
quadratic model (vartype BINARY) it has linear biases h_i = −b_i, quadratic biases
J'_ij = −J_ij and offset 0, so the BQM's energy is E(z) and a sampler that targets
p ∝ e^{−β_s E_BQM} draws from p_{β_s}. A sampler whose β_s ≠ 1 is given the BQM scaled by 1/β_s,
which it samples at e^{−β_s E / β_s} = e^{−E}: the prior.

Effective inverse temperature: given draws z^(1..M) of a sampler, the maximum pseudo-likelihood
estimate β̂ maximises

    PL(β) = Σ_m Σ_i log σ(β x_i^(m)),      x_i = (2z_i − 1) a_i(z),   a_i(z) = b_i + Σ_{j~i} J_ij z_j,

a concave function of β (PL'' = −Σ x² σ(βx) σ(−βx) ≤ 0). The root of PL'(β) = Σ x σ(−βx) is
bracketed and solved; β̂ = 0 when PL'(0) ≤ 0 (draws uncorrelated with their fields). For
independent draws its standard error is the sandwich √(Σ_m s_m²) / |PL''(β̂)|, with s_m the
score Σ_i x_i^(m) σ(−β̂ x_i^(m)) of draw m.

The D-Wave packages are optional (requirements-dwave.txt): this module imports them only when a
function needs them, and says in one line what to install when they are missing.

Example:

```python
bqm = binary_quadratic_model(biases, edges, couplings)        # energy E(z), BINARY
sampler = sampler_from_path("dwave.samplers.SimulatedAnnealingSampler")
beta, stderr = pseudo_likelihood_inverse_temperature(states, biases, edges, couplings)
```
"""

from __future__ import annotations

import collections.abc
import importlib
import types
import typing

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.special

from dvae import optional

if typing.TYPE_CHECKING:
  import dimod
  import numpy.typing as npt

# Above this the draws are effectively ground states; PL' stays positive up to β = ∞.
MAX_INVERSE_TEMPERATURE = 1e4


def import_dimod() -> types.ModuleType:
  """The `dimod` module, or an ImportError whose message is one line saying what to install.

  Returns:
    The imported `dimod` module.

  Raises:
    ImportError: dimod is not installed (the message says how to install it).
  """
  return optional.require("dimod", "dimod samplers")


def binary_quadratic_model(biases: npt.ArrayLike, edges: npt.ArrayLike,
                           couplings: npt.ArrayLike) -> dimod.BinaryQuadraticModel:
  """The BINARY dimod BQM with energy E(z): h = −b, J' = −J, offset 0; variables 0…N−1.

  Args:
    biases: [N] b.
    edges: [E, 2] unit indices (i, j), or a list of pairs.
    couplings: [E] J, in the order of `edges`.

  Returns:
    A `dimod.BinaryQuadraticModel` of vartype BINARY, in float64.

  Raises:
    ImportError: dimod is not installed (the message says how to install it).
  """
  dimod = import_dimod()
  edges = np.asarray(edges, np.int64).reshape(-1, 2)
  return dimod.BinaryQuadraticModel.from_numpy_vectors(
      -np.asarray(biases, np.float64),
      (edges[:, 0], edges[:, 1], -np.asarray(couplings, np.float64)), 0.0, dimod.BINARY)


def sampler_from_path(path: str) -> dimod.Sampler:
  """An instance of the dimod sampler class at import path `path` ("module.Class"), made with
  no arguments; a ValueError (one line) when that is not possible.

  Args:
    path: the dotted import path of a `dimod.Sampler` subclass, e.g.
      "dwave.samplers.SimulatedAnnealingSampler".

  Returns:
    A new instance of that class.

  Raises:
    ValueError: `path` names no importable `dimod.Sampler` class, or one that cannot be made
      without arguments.
    ImportError: dimod is not installed (the message says how to install it).
  """
  dimod = import_dimod()
  module_name, _, class_name = path.rpartition(".")
  try:
    cls = getattr(importlib.import_module(module_name), class_name) if module_name else None
  except (ImportError, AttributeError):
    cls = None
  if not (isinstance(cls, type) and issubclass(cls, dimod.Sampler)):
    raise ValueError(f"dimod sampler {path!r} is not an importable dimod.Sampler class; give an "
                     "import path such as dwave.samplers.SimulatedAnnealingSampler")
  try:
    return cls()
  except TypeError as e:
    raise ValueError(f"dimod sampler {path} cannot be made without arguments ({e}); name a class "
                     "that can, or pass a DimodSampler to the RBM from Python") from None


# `dvae.samplers.DimodSampler` sets these itself where the sampler declares them.
RESERVED_SAMPLE_KWARGS = {"num_reads": "one read per chain, num_chains",
                          "seed": "derived from each training step's seed"}


def check_sample_kwargs(sampler: dimod.Sampler,
                        sample_kwargs: collections.abc.Mapping[str, typing.Any]) -> None:
  """Raises a ValueError (one line) for a keyword that `sampler.sample` does not declare, or one
  of `RESERVED_SAMPLE_KWARGS`.

  Args:
    sampler: the dimod sampler; its `parameters` name the keywords its `sample` takes.
    sample_kwargs: the keyword arguments meant for `sampler.sample`. Only the keys are checked.

  Raises:
    ValueError: a reserved keyword, or one the sampler does not take (the message lists those it
      takes).
  """
  for key in sample_kwargs:
    if key in RESERVED_SAMPLE_KWARGS:
      raise ValueError(f"dimod sampler argument {key!r} is set by the adapter "
                       f"({RESERVED_SAMPLE_KWARGS[key]}); leave it out")
    if key not in sampler.parameters:
      raise ValueError(f"{type(sampler).__name__} has no parameter {key!r}; it takes: "
                       f"{', '.join(sorted(set(sampler.parameters) - set(RESERVED_SAMPLE_KWARGS)))}")


def binary_samples(sampleset: dimod.SampleSet, num_units: int) -> np.ndarray:
  """The draws of a dimod SampleSet as [M, num_units] 0/1 float32 rows, variables 0…N−1 in
  order, each row repeated by its `num_occurrences`.

  Args:
    sampleset: the draws, of vartype BINARY or SPIN (SPIN draws are converted to 0/1), over
      variables that include 0…`num_units` − 1.
    num_units: N, the number of units of the machine.

  Returns:
    float32 [M, N] 0/1 states, M the total of `num_occurrences`.

  Raises:
    ImportError: dimod is not installed (the message says how to install it).
    ValueError: a variable 0…N−1 is missing from `sampleset`.
  """
  dimod = import_dimod()
  sampleset = sampleset.change_vartype(dimod.BINARY, inplace=False)
  columns = [sampleset.variables.index(v) for v in range(num_units)]
  samples = sampleset.record.sample[:, columns]
  return np.repeat(samples, sampleset.record.num_occurrences, axis=0).astype(np.float32)


def _signed_fields(states, biases, edges, couplings):
  """x_i^(m) = (2z_i − 1)(b_i + Σ_{j~i} J_ij z_j) for states [M, N], in float64."""
  states = np.asarray(states, np.float64)
  edges = np.asarray(edges, np.int64).reshape(-1, 2)
  num_units = states.shape[1]
  coupling_matrix = scipy.sparse.coo_matrix(
      (np.asarray(couplings, np.float64), (edges[:, 0], edges[:, 1])),
      shape=(num_units, num_units)).tocsr()
  symmetric = coupling_matrix + coupling_matrix.T
  fields = np.asarray(biases, np.float64) + np.asarray(symmetric.dot(states.T).T)
  return (2 * states - 1) * fields


def pseudo_likelihood_inverse_temperature(states: npt.ArrayLike, biases: npt.ArrayLike,
                                          edges: npt.ArrayLike,
                                          couplings: npt.ArrayLike) -> tuple[float, float]:
  """(β̂, standard error): the maximum pseudo-likelihood inverse temperature of `states` [M, N]
  under the machine (biases [N], edges [E, 2], couplings [E]); see the module docstring.

  Args:
    states: [M, N] 0/1 draws.
    biases: [N] b.
    edges: [E, 2] unit indices (i, j), or a list of pairs.
    couplings: [E] J, in the order of `edges`.

  Returns:
    `(beta, stderr)`: β̂ ≥ 0 (0 when the draws are uncorrelated with their fields; the first
    power of two ≥ `MAX_INVERSE_TEMPERATURE` when PL' is still positive there, effectively
    ground states), and its sandwich standard error (∞ when PL'' vanishes at β̂).
  """
  x = _signed_fields(states, biases, edges, couplings)

  def slope(beta):  # PL'(β) = Σ x σ(−βx)
    return np.sum(x * scipy.special.expit(-beta * x))

  if slope(0.0) <= 0:
    beta = 0.0
  else:
    upper = 1.0
    while slope(upper) > 0 and upper < MAX_INVERSE_TEMPERATURE:
      upper *= 2
    beta = (upper if slope(upper) > 0
            else scipy.optimize.brentq(slope, upper / 2 if upper > 1 else 0.0, upper))
  sigma = scipy.special.expit(-beta * x)
  curvature = np.sum(x * x * sigma * (1 - sigma))
  scores = np.sum(x * sigma, axis=1)
  stderr = np.sqrt(np.sum(scores ** 2)) / curvature if curvature > 0 else np.inf
  return float(beta), float(stderr)
