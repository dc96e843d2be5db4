"""Negative-phase samplers of a Boltzmann-machine prior: PCD, population annealing, any dimod sampler.

Mathematical Details

For a Boltzmann machine p(z) = e^{−E(z)}/Z with parameters θ, ∂log Z/∂θ = E_p[−∂E/∂θ]. A sampler
supplies states z^(1..C), C = `num_chains`, whose mean of −∂E/∂θ estimates it (SPEC §3): the
machine's training surrogate is mean_c(−E(z^(c))) with the states held constant.

* `PCD`: `num_sweeps` block Gibbs sweeps from the persistent chains, which carry over between
  steps.
* `PopulationAnnealing`: one population of C particles annealed from β = 0 to β = 1 in
  `num_sweeps` steps, resampled at each (the reference's default, QuPA).
* `DimodSampler`: any `dimod.Sampler`, given the machine as a binary quadratic model (h = −b,
  J' = −J, offset 0, so that p ∝ e^{−E_BQM} at β = 1; see `dvae.bqm`). It runs in Python outside
  the compiled loop, so the training step that calls it cannot be XLA-compiled
  (`supports_jit` is False, which Keras's `jit_compile="auto"` honours). A sampler drawing at
  inverse temperature β_s is given the BQM scaled by 1/β_s; β_s is either fixed, or estimated
  from the draws by maximum pseudo-likelihood: call t's draws give β̂_t ± s_t relative to the
  BQM they were drawn from, so b_t = β_{s,t} β̂_t ± β_{s,t} s_t estimates the sampler's own
  inverse temperature, and the next call uses their precision-weighted mean
  β_s = Σ_t b_t / (β_{s,t} s_t)² / Σ_t 1 / (β_{s,t} s_t)² over all calls so far.
  A sampler that rescales every problem to its own range (a QPU's `auto_scale`) would undo the
  1/β_s scaling and make β_s walk off geometrically while the draws stay the same, so the
  adapter passes `auto_scale=False` to any sampler that declares the parameter, unless the user
  sets it.

A machine (`dvae.rbm.RBM`, or a Boltzmann machine on a graph) provides `num_units`, `num_chains`,
`num_sweeps`, the `chains` variable, `gibbs_sweeps(z, num_sweeps, seed)`,
`anneal(num_betas, num_populations, population_size, resample, seed, schedule)`, and the graph view
`biases` [N], `edges` (pairs of unit indices) and `couplings` [E] in the order of `edges`.

Example:

```python
from dwave.samplers import SimulatedAnnealingSampler
sampler = DimodSampler(SimulatedAnnealingSampler(), num_sweeps=100, beta_range=[1, 1],
                       proposal_acceptance_criteria="Gibbs")
rbm = RBM(100, 100, num_chains=1000, sampler=sampler)   # or sampler="pcd" | "pa"
```
"""

import abc
import typing

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from dvae import bqm as bqm_lib

if typing.TYPE_CHECKING:
  from dvae import config
  from dvae.boltzmann import BoltzmannMachine


class Sampler(abc.ABC):
  """The negative phase of a Boltzmann machine's log Z gradient.

  Subclasses implement `negative_phase` and `get_config`; `supports_jit` says whether
  `negative_phase` can run inside an XLA-compiled step; `estimates_log_z` whether
  `negative_phase_and_log_z` also gives an unbiased estimate of Z at the current parameters (in
  log), which the machine's running log Z then uses (`dvae.boltzmann`).
  """

  supports_jit = True
  estimates_log_z = False

  @abc.abstractmethod
  def negative_phase(self, machine: "BoltzmannMachine", seed: tf.Tensor) -> tf.Tensor:
    """States for the training surrogate mean_c(−E(z^(c))).

    Args:
      machine: the Boltzmann machine (module docstring: what it provides).
      seed: stateless int32 [2] seed.

    Returns:
      Binary states [machine.num_chains, machine.num_units] in the machine's dtype.
    """

  def negative_phase_and_log_z(self, machine, seed):
    """(states of `negative_phase`, log Ẑ of the machine or None if `estimates_log_z` is False)."""
    return self.negative_phase(machine, seed), None

  @abc.abstractmethod
  def get_config(self) -> str | dict:
    """A JSON-able identifier that `get` turns back into an equal sampler."""

  def summaries(self) -> dict[str, tf.Tensor | float]:
    """Scalars worth watching during training, by name (none by default)."""
    return {}


class PCD(Sampler):
  """Persistent contrastive divergence: `num_sweeps` Gibbs sweeps from the persistent chains."""

  def negative_phase(self, machine: "BoltzmannMachine", seed: tf.Tensor) -> tf.Tensor:
    """The chains after `machine.num_sweeps` Gibbs sweeps (`Sampler.negative_phase`)."""
    return machine.gibbs_sweeps(machine.chains, machine.num_sweeps, seed)

  def get_config(self) -> str:
    """"pcd"."""
    return "pcd"


class PopulationAnnealing(Sampler):
  """Population annealing of `num_chains` particles over `num_sweeps` + 1 temperatures in [0, 1].

  Each step starts afresh from uniform states; the final population is a weighted-resampled
  approximation of p, and the product of its mean weights an unbiased estimate of Z at the
  step's parameters, Ẑ = Z_0 · Π_k mean_i w_{k,i}, which the running log Z of the training loss
  uses (`estimates_log_z`).
  """

  estimates_log_z = True

  def negative_phase(self, machine: "BoltzmannMachine", seed: tf.Tensor) -> tf.Tensor:
    """The final annealed population (`Sampler.negative_phase`)."""
    return self.negative_phase_and_log_z(machine, seed)[0]

  def negative_phase_and_log_z(self, machine: "BoltzmannMachine",
                               seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The final annealed population and the population's own log Ẑ (float64) of the machine
    (`Sampler.negative_phase_and_log_z`)."""
    states, log_z = machine.anneal(machine.num_sweeps + 1, 1, machine.num_chains, True, seed)
    return states[0], log_z[0]

  def get_config(self) -> str:
    """"pa"."""
    return "pa"


BUILT_IN = {"pcd": PCD, "pa": PopulationAnnealing}


class DimodSampler(Sampler):
  """Any `dimod.Sampler` as the negative phase (module docstring).

  Args:
    sampler: a `dimod.Sampler` instance, or the import path of a dimod sampler class that can be
      made without arguments (e.g. "dwave.samplers.SimulatedAnnealingSampler").
    inverse_temperature: β_s, the inverse temperature at which `sampler` draws from the BQM it is
      given; it is given the machine's BQM scaled by 1/β_s. With `estimate_inverse_temperature`,
      the first guess.
    estimate_inverse_temperature: after every call, set β_s to the precision-weighted mean of
      the calls' estimates β_{s,t} β̂_t of the sampler's inverse temperature (module docstring),
      with β̂_t the maximum pseudo-likelihood inverse temperature of call t's draws relative to
      the machine (`dvae.bqm.pseudo_likelihood_inverse_temperature`) and weights
      1 / (β_{s,t} · stderr_t)²; the next call uses it. For samplers whose temperature is
      unknown (a quantum annealer), assumed constant in the problem's energy units.
    **sample_kwargs: passed to `sampler.sample` at every call. `num_reads` (= the machine's
      `num_chains`) and `seed` (derived from the step's seed, so that a step's draws are
      reproducible) are set by the adapter where the sampler declares them, and `auto_scale`
      is False where the sampler declares it (a `DWaveSampler`) and the user did not set it:
      auto-scaling would rescale the BQM to the QPU's range and undo the 1/β_s scaling.

  Attributes, which say what β was used:
    inverse_temperature: the β_s the next BQM is scaled for (the running estimate, if
      estimated).
    inverse_temperature_stderr: its standard error, 1 / √(Σ_t weights) (None until a call has
      been made with `estimate_inverse_temperature`).
    used_inverse_temperature: the β_s the last call's BQM was scaled for.
    draws_inverse_temperature, draws_inverse_temperature_stderr: β̂ of the last call's draws
      relative to the machine and its standard error; near 1 when β_s is right and the sampler
      equilibrates (computed in both modes, as a diagnostic). `summaries()` reports these.

  A quantum annealer goes through the same adapter, e.g.
  `DimodSampler(EmbeddingComposite(DWaveSampler()), estimate_inverse_temperature=True,
  annealing_time=20)` with `dwave.system` and a Leap account (untested here: this project's
  machines cannot reach one).
  """

  supports_jit = False

  def __init__(self, sampler, inverse_temperature=1.0, estimate_inverse_temperature=False,
               **sample_kwargs):
    dimod = bqm_lib.import_dimod()  # without the D-Wave packages: one line naming them
    if isinstance(sampler, str):
      # Imported at the first use, not here: loading a model file that names it runs no code.
      self.path, sampler = sampler, None
    else:
      if not isinstance(sampler, dimod.Sampler):
        raise ValueError(f"sampler must be a dimod.Sampler or an import path, got {sampler!r}")
      self.path = f"{type(sampler).__module__}.{type(sampler).__qualname__}"
    if not (np.isfinite(inverse_temperature) and inverse_temperature > 0):
      raise ValueError(f"inverse_temperature must be a finite number > 0, got "
                       f"{inverse_temperature!r}")
    if sampler is not None:
      bqm_lib.check_sample_kwargs(sampler, sample_kwargs)
    self._sampler = sampler
    self.initial_inverse_temperature = float(inverse_temperature)
    self.inverse_temperature = float(inverse_temperature)
    self.estimate_inverse_temperature = bool(estimate_inverse_temperature)
    self.sample_kwargs = dict(sample_kwargs)
    self.inverse_temperature_stderr = None
    # Σ_t w_t and Σ_t w_t b_t of the running estimate (w_t = 1 / (β_{s,t} s_t)²).
    self._precision, self._weighted_sum = 0.0, 0.0
    self.used_inverse_temperature = None
    self.draws_inverse_temperature = None
    self.draws_inverse_temperature_stderr = None

  @property
  def sampler(self):
    """The dimod sampler; one given by its import path is imported and made at the first use."""
    if self._sampler is None:
      self._sampler = bqm_lib.sampler_from_path(self.path)
      bqm_lib.check_sample_kwargs(self._sampler, self.sample_kwargs)
    return self._sampler

  def get_config(self):
    """The import path of the sampler's class with the adapter's arguments; `get` rebuilds it by
    calling that class without arguments (a composite around a child sampler cannot be rebuilt
    so: pass the DimodSampler itself). The estimated β_s is run state, not configuration: a
    rebuilt adapter starts again from `inverse_temperature`."""
    return {"dimod_sampler": self.path, "inverse_temperature": self.initial_inverse_temperature,
            "estimate_inverse_temperature": self.estimate_inverse_temperature,
            "sample_kwargs": dict(self.sample_kwargs)}

  @classmethod
  def from_config(cls, config):
    return cls(config["dimod_sampler"], config["inverse_temperature"],
               config["estimate_inverse_temperature"], **config["sample_kwargs"])

  def summaries(self):
    if self.used_inverse_temperature is None:
      return {}
    return {"sampler_inverse_temperature": self.used_inverse_temperature,
            "draws_inverse_temperature": self.draws_inverse_temperature}

  def negative_phase(self, machine, seed):
    # The graph's structure is fixed: it enters as a constant, its parameters as tensors.
    edges = np.asarray(machine.edges, np.int64).reshape(-1, 2)
    num_chains, num_units = machine.num_chains, machine.num_units

    def draw(biases, couplings, seed):
      return self.draw(biases, edges, couplings, num_chains, seed)

    states = tf.numpy_function(
        draw, [tf.stop_gradient(machine.biases), tf.stop_gradient(machine.couplings),
               tfp.random.sanitize_seed(seed)], tf.float32, stateful=True, name="dimod_sample")
    states.set_shape([num_chains, num_units])
    return states

  def draw(self, biases, edges, couplings, num_chains, seed):
    """`num_chains` draws [num_chains, N] of the machine (biases, edges, couplings) in numpy."""
    bqm = bqm_lib.binary_quadratic_model(biases, edges, couplings)
    bqm.scale(1.0 / self.inverse_temperature)
    kwargs = dict(self.sample_kwargs)
    if "auto_scale" in self.sampler.parameters:
      kwargs.setdefault("auto_scale", False)
    if "num_reads" in self.sampler.parameters:
      kwargs["num_reads"] = num_chains
    if "seed" in self.sampler.parameters:
      entropy = [int(s) % 2**32 for s in np.asarray(seed).ravel()]
      # 31 bits: dwave-samplers refuses seeds of 2^31 and above.
      kwargs["seed"] = int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)
    states = bqm_lib.binary_samples(self.sampler.sample(bqm, **kwargs), len(biases))
    if len(states) != num_chains:
      raise ValueError(f"{self.path} returned {len(states)} samples for {num_chains} chains")
    beta, stderr = bqm_lib.pseudo_likelihood_inverse_temperature(states, biases, edges, couplings)
    self.used_inverse_temperature = self.inverse_temperature
    self.draws_inverse_temperature, self.draws_inverse_temperature_stderr = beta, stderr
    if self.estimate_inverse_temperature and beta > 0 and 0 < stderr < np.inf:
      self._precision += 1.0 / (self.inverse_temperature * stderr) ** 2
      self._weighted_sum += beta / (self.inverse_temperature * stderr ** 2)
      self.inverse_temperature = self._weighted_sum / self._precision
      self.inverse_temperature_stderr = self._precision ** -0.5
    return states


def get(identifier: str | dict | Sampler) -> Sampler:
  """A `Sampler` from a name ("pcd", "pa"), a `DimodSampler.get_config()` dict, or a Sampler.

  Args:
    identifier: the name, the config or the sampler itself.

  Returns:
    The sampler (`identifier` itself when it is one).

  Raises:
    ValueError: an identifier that names no sampler.
  """
  if isinstance(identifier, Sampler):
    return identifier
  if isinstance(identifier, dict):
    return DimodSampler.from_config(identifier)
  if identifier in BUILT_IN:
    return BUILT_IN[identifier]()
  raise ValueError(f"sampler must be one of {', '.join(BUILT_IN)}, a DimodSampler or its config, "
                   f"got {identifier!r}")


def from_hparams(hparams: "config.HParams") -> Sampler:
  """The sampler a run's hparams name.

  Args:
    hparams: a `dvae.config.HParams`: its `sampler`, and for "dimod" its `dimod_sampler`,
      `dimod_sampler_args`, `sampler_inverse_temperature`, `estimate_inverse_temperature`.

  Returns:
    The sampler.

  Raises:
    ImportError: "dimod" without the D-Wave packages installed.
  """
  if hparams.sampler != "dimod":
    return get(hparams.sampler)
  return DimodSampler(hparams.dimod_sampler, hparams.sampler_inverse_temperature,
                      hparams.estimate_inverse_temperature, **hparams.dimod_sampler_kwargs)
