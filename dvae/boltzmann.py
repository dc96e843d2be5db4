"""Boltzmann machines: what every one shares, and the machine on any graph (SPEC §3, §9).

Mathematical Details

A Boltzmann machine over binary z ∈ {0,1}^N has p(z) = e^{−E(z)}/Z, Z = Σ_z e^{−E(z)}.
`BoltzmannMachine` is the layer every machine subclasses: it owns the persistent chains, its
normaliser (the log Z estimate, the parameters it was made for, and the training path's running
estimate) and the estimators built on annealing. A subclass gives the energy, its Gibbs sweeps,
its annealing path (`anneal`) and its exact log Z:

* the bipartite RBM (`dvae.rbm.RBM`), which anneals on the marginal path of one side;
* `GraphBoltzmannMachine` below, over the nodes and edges of any graph.

Shared estimators, from M annealed populations with log Ẑ_m each an unbiased estimate of Z:
AIS (M independent particles, no resampling) and population annealing (M populations of P
particles, resampled at every temperature) both report log mean_m Ẑ_m with the delta-method
standard error std(Ẑ_m) / (√M · mean(Ẑ_m)). Since Ẑ is unbiased, E[log Ẑ] ≤ log Z (Jensen):
log Ẑ is a stochastic lower bound on log Z, and a log Ẑ that is too low makes every NLL computed
with it optimistic by the same amount. The bias shrinks as the temperatures get denser
(`inverse_temperatures` gives the schedules); `BoltzmannMachine.log_z_ais_checked` measures it
against a run with 10× fewer temperatures.

The stored log Z (`log_z`, `log_z_stderr`) belongs to the parameters recorded beside it
(`log_z_parameters`) and says how it was made (`log_z_estimate`: method, settings, seed). Every
reader asks `current_log_z()`: when the parameters have changed since, it re-estimates with the
seeded settings in `log_z_refresh` (the same weights, settings and seed give the same value in
any process) or, with none set, raises `StaleLogZError` naming the call to make. Inside a
compiled function no estimate can run: there `current_log_z()` checks, and a stale value stops
the function with that message; callers refresh first (`ensure_current_log_z`).

The training loss needs log Z of the parameters θ_t of every step, at no more than a few percent
of the step's cost. `train_log_z` returns the running path estimate as its value and the
surrogate mean_chains(−E(z_chain)) (on states held constant) as its gradient, the sampler's
estimate of ∂log Z/∂θ = E_p[−∂E/∂θ]. The path estimate is sequential Monte Carlo along the
training path (Jarzynski's identity): M populations of P particles start as exact samples of the
zero-parameter machine (fair coins, Z_0 = 2^N) and advance every m = `path_interval` steps, at
the steps t with t + 1 ≡ 0 (mod m) (so epochs of a multiple of m steps end on one). At an
advance each particle z, a state of the last advance, is weighted by
w = p̃_t(z)/p̃_{t−m}(z) = e^{−(E_t − E_{t−m})(z)}, each population's log Ẑ_m grows by
log mean_P w, the population is resampled (systematic) and its particles take `path_sweeps`
Gibbs sweeps at θ_t; in between the estimate keeps its value (that of θ_{t−m}, recorded in
`running_log_z_parameters`). Every `path_restart_every`-th advance starts the path afresh
instead: population annealing at θ_t from fair coins over `path_restart_betas` temperatures
gives each population an unbiased Ẑ_m and states of p_t, which discards the variance gathered
since the last start; so does any advance after which fewer than half the populations carry the
estimate, (Σ_m Ẑ_m)² / Σ_m Ẑ_m² < M/2 (`PATH_MIN_EFFECTIVE_POPULATIONS`), where the weights
have degenerated across populations. What no check of the weights can see is a mode that gains
mass where no population has particles: all the Ẑ_m then fall short together, and log mean_m Ẑ_m
lies below log Z by more than its standard error shows (README, Samplers). The RBM weighs the
marginal of its smaller side instead, w = e^{−F_t(z_k) + F_{t−m}(z_k)} with the other side
summed out (`dvae.rbm`), and its sweeps redraw the summed-out side first. Each Ẑ_m is unbiased
for Z_t whether or not the sweeps mix (they only have to leave p_t invariant), so the estimate
cannot drift as the importance estimate on the lagging PCD chains did; the running value is log
mean_m Ẑ_m with its delta-method standard error across the M populations. Its error is variance,
which grows with the path's length: on the quickstart (binarized MNIST, PCD 200 × 10, learning rate
3e-3) one step's weights have a relative variance of ~0.14 (effective sample size 88%), and 8
populations of 128 advancing every step with joint weights spread to a standard deviation of log Ẑ_m
of 3–4 nats by step 2000, so log mean_m Ẑ_m fell 1.4–5 nats below AIS with a standard error of 0.7
(the −4.7 nats reported: weight degeneracy, not a bug). 16 × 128 particles with marginal weights
every 10 steps (the default there) stayed within 0.73 nats (3.2 standard errors) over 3000 steps at
~1/4 of the cost (README). The interval is sized from the sampler's budget
(`automatic_path_interval`); the training's gradients never depend on the path (its value enters the
loss, not its gradient), so with K = 1 the trained weights are bit-identical with any interval, 0
(never advanced) included (with K > 1 log Z shifts the K log-weights alike, which the softmax
removes up to rounding). A sampler that estimates log Z itself (population annealing, a fresh
unbiased Ẑ at θ_t every step) gives its own estimate instead, every step; its standard error is
estimated from the scatter of the independent per-step estimates, var = E[(Ẑ_t − 2Ẑ_{t−1} +
Ẑ_{t−2})²]/6 in log, averaged exponentially (a smooth trend of log Z_t cancels in the second
difference).

`negative_phase_lag` (nats per step) is the path estimate's change of log Z since its last
advance minus the change estimated on the sampler's own states z_c,
−log mean_c e^{(E_t − E_{t−m})(z_c)}, divided by m,
which is right only for z_c ~ p_t. Persistent chains trail the model in the direction of each
update (the update raises their energy), so the second is lower and the lag is positive; for a
sampler whose states follow p_t it is zero up to noise. Summed over steps it is the drift of a
running log Z that trusted the sampler's states.

Randomness is stateless: every `seed` is an int32 [2] tensor (or a list of two ints), split with
TFP's samplers, so a seed gives the same draw in eager mode and in `tf.function`; `seed=None`
draws one.
"""

import abc
import math
import typing

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from dvae import graphs, optional, runs, samplers

if typing.TYPE_CHECKING:
  import networkx

LOG_Z_METHODS = ("exact", "ais", "pa")
ANNEALING_SCHEDULES = ("linear", "quadratic")
# Estimating methods that draw: their settings need a seed to be reproducible.
SEEDED_LOG_Z_METHODS = ("ais", "pa")
# Beyond 2^20 enumerated states exact log Z is no longer a matter of seconds.
MAX_EXACT_UNITS = 20
# Weight of a step's squared second difference in the running variance of a sampler's own
# per-step log Ẑ (an exponential average over about 1 / 0.02 = 50 steps).
STDERR_AVERAGING = 0.02
# The running path estimate's nominal share of the sampler's chain-sweeps per training step
# (`automatic_path_interval`). Its weights (two products and two softplus per summed-out unit)
# and resampling cost more than the nominal sweep each: at the paper's 1000 × 40 a share of 0.05
# (an advance every 2 steps) measured +6 to +9% of the step, so 0.025 (every 5).
PATH_BUDGET = 0.025
# The longest automatic interval: at the quickstart's learning rate an advance over 20 steps
# leaves a population a median effective sample size of ~14%, and on the tests' small synthetic
# model (tests/test_log_z.py) 20 erred by −2.6 nats (7 standard errors) at step 120 with one
# seed, where 10 did not (other seeds erred there at 10 too, by 4–9 nats: README, Samplers).
MAX_PATH_INTERVAL = 10
# A fresh start of the path every 50 advances, by population annealing over 250 temperatures
# with a quarter of its particles (tiled ×4): ~31 advances' sweeps each, so the restarts add
# ~60% to the path's cost (~1.5% of the sampler's), and bound the variance a long path gathers.
PATH_RESTART_EVERY = 50
PATH_RESTART_BETAS = 250
# A fresh start also after any advance that leaves fewer than half the populations carrying the
# estimate: on the quickstart (MNIST) once in its first 300 steps; on the tests' synthetic data,
# whose prior's modes shift within a few advances, at half the advances of the first 400 steps.
PATH_MIN_EFFECTIVE_POPULATIONS = 0.5
# Enumerated states handled at once: 2^14 × 200 float64 activations are 26 MB.
EXACT_CHUNK_BITS = 14
# The dtypes a machine keeps its parameters and states in, and samples and anneals in.
STATE_DTYPES = ("float32", "float64")


def bernoulli(probabilities, uniform):
  """Binary float samples with P(1) = `probabilities`, from uniforms of the same shape."""
  return tf.cast(uniform < probabilities, probabilities.dtype)


def uniforms(seed, num_rows, widths, dtype=tf.float32):
  """Uniforms [num_rows, w] of `dtype` for each w in `widths`, split from one threefry draw.

  Drawn once and split, the uniforms are a tensor of their own that XLA computes in one
  vectorised loop; a draw consumed by a single sampling expression is fused into it, which
  measured ~2× slower per uniform on CPU (Gibbs sweeps 79 → 58 ms, matrix products 30 ms).
  """
  uniform = tf.random.stateless_uniform([num_rows, sum(widths)], seed, dtype=dtype,
                                        alg="threefry")
  return tf.split(uniform, widths, axis=-1)


def uniform_states(num_samples, num_units, seed, dtype=tf.float32):
  """Independent fair coins: exact samples of a machine at β = 0 (or with zero parameters)."""
  return tf.cast(tf.random.stateless_uniform([num_samples, num_units], seed) < 0.5, dtype)


def inverse_temperatures(num_betas, schedule="linear", dtype=tf.float32):
  """The inverse temperatures 0 = β_0 < β_1 < … < β_K = 1 of an annealing path, K + 1 = `num_betas`.

  "linear": β_k = k/K. "quadratic": β_k = 1 − (1 − k/K)², whose steps
  Δβ_k = (2(K − k) + 1)/K² shrink linearly from 2/K at β = 0 to 1/K² at β = 1, dense where the
  prior is sharpest. Measured on trained RBMs and their weights ×2 and ×4 against AIS with
  100,000 temperatures (README, log Z accuracy), "quadratic" was no better than "linear" (at
  100 + 100 units ×4, 1000 temperatures: mean error −0.35 against −0.24 nats, RMS 0.61 against
  0.33, 10 seeds each), so "linear" stays the default everywhere.
  """
  if int(num_betas) != num_betas or num_betas < 2:
    raise ValueError(f"num_betas must be an integer ≥ 2 (β = 0 and β = 1), got {num_betas!r}")
  if schedule not in ANNEALING_SCHEDULES:
    raise ValueError(f"schedule must be one of {ANNEALING_SCHEDULES}, got {schedule!r}")
  steps = tf.linspace(tf.constant(0.0, dtype), 1.0, int(num_betas))
  if schedule == "linear":
    return steps
  return 1.0 - tf.square(1.0 - steps)


def systematic_resample(log_w, seed):
  """Ancestor indices [M, P] of M populations of P particles with log weights `log_w`.

  Systematic resampling: one uniform u per population; slot j = 0…P−1 takes the particle i whose
  cumulative weight interval [C_{i−1}, C_i) holds (j + u) / P, so particle i has
  E[offspring] = P · w_i / Σ w. By index arithmetic rather than a search per slot: slot j's
  ancestor is the number of particles with C_i ≤ (j + u)/P, i.e. with first slot
  ⌈P·C_i − u⌉ ≤ j, which is the running sum of a histogram of the first slots, O(P) (XLA's
  compiled search compares every slot with every C_i: 0.7 ms against 0.013 ms for P = 1000).
  """
  num_populations, size = log_w.shape
  cdf = tf.math.cumsum(tf.nn.softmax(log_w, axis=-1), axis=-1)
  u = tf.random.stateless_uniform([num_populations, 1], seed, dtype=log_w.dtype)
  # Slot `size` collects the particles whose first slot is past the end.
  first_slot = tf.cast(tf.clip_by_value(tf.math.ceil(size * cdf - u), 0, size), tf.int32)
  histogram = tf.math.unsorted_segment_sum(
      tf.ones([num_populations * size], tf.int32),
      tf.reshape(first_slot + tf.range(num_populations)[:, None] * (size + 1), [-1]),
      num_populations * (size + 1))
  ancestors = tf.math.cumsum(tf.reshape(histogram, [num_populations, size + 1]), axis=-1)
  # The last cumulative weight can round to just under 1.
  return tf.minimum(ancestors[:, :size], size - 1)


def log_mean_exp_with_stderr(log_estimates, dtype=tf.float32):
  """log mean_m Ẑ_m and its delta-method standard error std(Ẑ) / (√M · mean(Ẑ)).

  Args:
    log_estimates: [M] float64 log Ẑ_m of M independent unbiased estimates Ẑ_m.
    dtype: the dtype of the two results.
  """
  count = tf.cast(tf.size(log_estimates), tf.float64)
  shifted = tf.exp(log_estimates - tf.reduce_max(log_estimates))
  mean = tf.reduce_mean(shifted)
  std = tf.sqrt(tf.reduce_sum(tf.square(shifted - mean)) / tf.maximum(count - 1, 1))
  estimate = tf.math.log(mean) + tf.reduce_max(log_estimates)
  return tf.cast(estimate, dtype), tf.cast(std / (tf.sqrt(count) * mean), dtype)


@tf.function
def log_z_summing_out(b_keep, b_sum, w_ks, w_kk=None):
  """log Z = logsumexp_{z_k} −F(z_k) in float64, enumerating z_k 2^EXACT_CHUNK_BITS at a time.

  The units split into an enumerated set k and a set s with no couplings inside it, so s sums
  out in closed form: −F(z_k) = b_kᵀz_k + ½ z_kᵀW_kk z_k + Σ_j softplus((b_s + W_ksᵀz_k)_j).

  Args:
    b_keep, b_sum: biases of the enumerated and the summed-out units.
    w_ks: couplings [n_k, n_s] between them.
    w_kk: symmetric couplings [n_k, n_k] among the enumerated units (zero diagonal), or None
      when there are none (a bipartite RBM).
  """
  b_keep, b_sum, w_ks = (tf.cast(t, tf.float64) for t in (b_keep, b_sum, w_ks))
  num_keep = b_keep.shape[0]
  chunk_bits = min(num_keep, EXACT_CHUNK_BITS)
  num_chunks = 2 ** (num_keep - chunk_bits)
  bits = tf.range(num_keep, dtype=tf.int64)

  def chunk(i, partial):
    index = tf.range(2 ** chunk_bits, dtype=tf.int64) + i * 2 ** chunk_bits
    states = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(index[:, None], bits), 1),
                     tf.float64)
    neg_free_energy = (tf.linalg.matvec(states, b_keep) + tf.reduce_sum(
        tf.nn.softplus(b_sum + tf.matmul(states, w_ks)), axis=-1))
    if w_kk is not None:
      neg_free_energy += 0.5 * tf.reduce_sum(
          states * tf.matmul(states, tf.cast(w_kk, tf.float64)), axis=-1)
    return i + 1, partial.write(tf.cast(i, tf.int32), tf.reduce_logsumexp(neg_free_energy))

  _, partial = tf.while_loop(lambda i, _: i < num_chunks, chunk,
                             (tf.constant(0, tf.int64), tf.TensorArray(tf.float64, num_chunks)))
  return tf.reduce_logsumexp(partial.stack())


def automatic_path_interval(num_particles, path_sweeps, num_chains, num_sweeps):
  """The automatic `path_interval`: steps between advances of the running path estimate.

  An advance costs about num_particles · (path_sweeps + 1) chain-sweeps (the sweeps, and the
  weights, which cost about one sweep); the interval spreads it so as to cost `PATH_BUDGET` of
  the sampler's num_chains · num_sweeps per step, rounded to the nearest of 1, 2, 5, 10, 20
  (which divide any multiple of 100, so an `eval_every` of one ends its epochs on an advance),
  at most `MAX_PATH_INTERVAL`.
  """
  ideal = num_particles * (path_sweeps + 1) / (PATH_BUDGET * num_chains * num_sweeps)
  choices = [m for m in (1, 2, 5, 10, 20, 50, 100) if m <= MAX_PATH_INTERVAL]
  return min(choices, key=lambda m: abs(math.log(m) - math.log(max(ideal, 1.0))))


def _fair_coins(seed):
  """Keras initializer of states: fair coins are exact samples of the initial machine (all
  parameters zero), so chains and path particles start in equilibrium."""

  def initializer(shape, dtype=None):
    return tf.cast(uniform_states(*shape, tf.constant(seed)), dtype or tf.float32)

  return initializer


class StaleLogZError(RuntimeError):
  """log Z was estimated for other parameters, and no refresh settings are set."""


def _state_dtype(dtype):
  """The dtype a machine computes in: that of its variables under the policy `dtype` (the
  global policy when None), float32 or float64.

  A mixed policy (mixed_float16, mixed_bfloat16) keeps float32 variables, and the machine
  computes in float32 too: Gibbs sweeps and annealing weights in half precision would lose the
  small differences of energy that the samplers and log Z estimators rest on.
  """
  policy = keras.config.dtype_policy() if dtype is None else keras.dtype_policies.get(dtype)
  if policy.variable_dtype not in STATE_DTYPES:
    raise ValueError(f"a Boltzmann machine keeps its state in one of {STATE_DTYPES} (a mixed "
                     f"policy keeps float32), not {policy.variable_dtype} (dtype "
                     f"policy {policy.name!r})")
  return policy.variable_dtype


def _check_positive_int(arg, value):
  if int(value) != value or value < 1:
    raise ValueError(f"{arg} must be a positive integer, got {value!r}")


class BoltzmannMachine(keras.layers.Layer, abc.ABC):
  """A Boltzmann-machine prior p(z) = e^{−E(z)}/Z with its sampler and its normaliser.

  A subclass calls `super().__init__`, creates its parameters, then `self._add_state()`, and
  defines `energy`, `pairwise`, `mean_field_logits`, `gibbs_sweeps`, `anneal`, `log_z_exact`,
  `weight_decay_loss`, and the graph view: `biases` [N], `edges` (pairs (i, j) of unit indices)
  and `couplings` [E] in the order of `edges`, with E(z) = −bᵀz − Σ_e J_e z_i z_j.

  Args:
    num_units: N, the number of binary units.
    weight_decay: coefficient c of the penalty c · ½‖couplings‖².
    num_chains: persistent chains (PCD) or population size (PA) for the log Z gradient.
    num_sweeps: Gibbs sweeps per training step (PCD) or annealing steps (PA).
    sampler: the negative phase of the log Z gradient: "pcd" (persistent contrastive
      divergence), "pa" (population annealing) or a `dvae.samplers.Sampler` such as a
      `DimodSampler` (see `dvae.samplers.get`).
    path_populations, path_population_size, path_sweeps: M populations of P particles, and the
      Gibbs sweeps per advance they take, of the running path estimate of log Z (module
      docstring; not used by a sampler that estimates log Z itself).
    path_interval: m, the training steps between advances of the path estimate; None chooses
      it from the sampler's budget (`automatic_path_interval`: 10 for the quickstart's 200
      chains × 10 sweeps, 5 for the paper's 1000 × 40), 0 never advances it (the running log
      Z stays at its initial value: for measuring the estimate's cost only).
    path_restart_every, path_restart_betas: every `path_restart_every`-th advance (0: never)
      starts the path afresh at θ_t from population annealing over `path_restart_betas`
      temperatures (module docstring).
    shared_weights: variables, by name, that the machine uses instead of creating its own of
      that name (e.g. {"w": other.w}: machines that share their couplings, as the classes of a
      `dvae.clamped.ClampedLabelMachine` do). Not part of the config: whoever shares rebuilds
      the sharing.
    **kwargs: `keras.layers.Layer` arguments (name, dtype, …). The dtype is float32 (the
      default) or float64; under a mixed policy (`mixed_float16`, `mixed_bfloat16`, given or
      global) the machine keeps float32 and computes in it, and its variables are read in it
      even inside a mixed-precision model's call (no autocast). Its methods take inputs of any
      floating dtype and answer in the machine's.

  Raises:
    ValueError: a size is not a positive integer, weight_decay is negative, or the dtype
      policy's variables are neither float32 nor float64.

  Attributes: `log_z_refresh`, None or the keyword arguments of `update_log_z` (e.g.
  {"method": "ais", "num_betas": 1000, "num_samples": 1024, "seed": [0, 0]}) with which
  `current_log_z` re-estimates a stale log Z; `log_z_estimate`, how the stored one was made.

  Variables (from `_add_state`), all non-trainable: `chains` [num_chains, N] (the persistent
  states, or PA's last population), starting as fair coin flips, which are exact samples of the
  zero-parameter machine; `log_z` (starting at its exact zero-parameter value N log 2),
  `log_z_stderr` and `log_z_parameters`, the flat parameters they were estimated for; the
  running estimate `running_log_z`, `running_log_z_stderr`, `running_log_z_parameters` and
  `negative_phase_lag` (the last step's), with the path's `path_particles` [M·P, N] and
  `path_log_z` [M] (float64), or under a sampler that estimates log Z, `running_log_z_before`
  (the step before's).
  """

  # The names of the coupling variables (those that `dvae.clamped.ClampedLabelMachine`'s labels
  # share); the rest of the parameters are biases.
  COUPLINGS: tuple[str, ...] = ()

  def __init__(self, num_units: int, weight_decay: float = 1e-4, num_chains: int = 1000,
               num_sweeps: int = 40, sampler: str | dict | samplers.Sampler = "pcd",
               path_populations: int = 16, path_population_size: int = 128,
               path_sweeps: int = 1, path_interval: int | None = None,
               path_restart_every: int = PATH_RESTART_EVERY,
               path_restart_betas: int = PATH_RESTART_BETAS,
               shared_weights: dict[str, keras.Variable] | None = None, **kwargs):
    super().__init__(**{**kwargs, "dtype": _state_dtype(kwargs.get("dtype"))})
    # Outside Keras's and TensorFlow's tracking: the variables belong to the attributes they are
    # assigned to, in the subclass's order.
    object.__setattr__(self, "_shared_weights", dict(shared_weights or {}))
    self.sampler = samplers.get(sampler)
    # A sampler outside TensorFlow (dimod) keeps Keras's jit_compile="auto" from using XLA.
    self.supports_jit = self.sampler.supports_jit
    for arg, value in (("num_units", num_units), ("num_chains", num_chains),
                       ("num_sweeps", num_sweeps), ("path_populations", path_populations),
                       ("path_population_size", path_population_size),
                       ("path_sweeps", path_sweeps), ("path_restart_betas", path_restart_betas)):
      _check_positive_int(arg, value)
    if int(path_restart_every) != path_restart_every or path_restart_every < 0:
      raise ValueError(f"path_restart_every must be an integer ≥ 0, got {path_restart_every!r}")
    if weight_decay < 0:
      raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")
    self._num_units = int(num_units)
    self.weight_decay = float(weight_decay)
    self.num_chains, self.num_sweeps = int(num_chains), int(num_sweeps)
    # Refused before allocation: a configuration (e.g. from a model file) may ask for any size.
    # The chains, and at least the couplings of a bipartite split with two optimizer slots.
    n = self._num_units
    needed = 4 * (self.num_chains * n + 3 * (n // 2) * (n - n // 2))
    available = runs.available_memory()
    if needed > available:
      raise ValueError(f"num_chains={self.num_chains} chains of {n} units and their couplings "
                       f"need {needed / 2**30:.1f} GiB, more than the "
                       f"{available / 2**30:.1f} GiB available; lower num_chains or the units")
    self.path_populations = int(path_populations)
    self.path_population_size = int(path_population_size)
    self.path_sweeps = int(path_sweeps)
    if path_interval is not None and (int(path_interval) != path_interval or path_interval < 0):
      raise ValueError(f"path_interval must be None or an integer ≥ 0, got {path_interval!r}")
    self._path_interval_setting = path_interval
    self.path_restart_every = int(path_restart_every)
    self.path_restart_betas = int(path_restart_betas)
    self.path_interval = (path_interval if path_interval is not None else automatic_path_interval(
        self.path_populations * self.path_population_size, self.path_sweeps, self.num_chains,
        self.num_sweeps))
    self._log_z_refresh = None
    self.log_z_estimate = {"method": "exact"}

  def add_weight(self, *args, name=None, **kwargs):
    """`keras.layers.Layer.add_weight`, or the variable of that name in `shared_weights` (tracked
    by the attribute the subclass assigns it to)."""
    if name in self._shared_weights:
      return self._shared_weights[name]
    return super().add_weight(*args, name=name, **kwargs)

  def _add_state(self):
    """Creates the chains and the normaliser's variables (after the subclass's parameters)."""
    # Its parameters are the variables made so far; freezing the machine (`trainable = False`)
    # takes them out of `trainable_variables`, not out of the parameters log Z belongs to.
    self._parameter_paths = tuple(v.path for v in self.trainable_variables)
    num_parameters = sum(int(np.prod(v.shape)) for v in self.parameters())
    initial_log_z = keras.initializers.Constant(self.num_units * math.log(2.0))

    # Under a tf.distribute strategy every replica keeps and advances its own chains and path
    # (synchronised on read: a cross-replica read, e.g. for a checkpoint, sees replica 0's).
    def replica_state(initializer, shape, name, dtype=None):
      return keras.Variable(initializer, shape=shape, dtype=dtype or self.dtype, trainable=False,
                            autocast=False, synchronization="on_read",
                            aggregation="only_first_replica", name=name)

    self.chains = replica_state(_fair_coins([0, 0]), [self.num_chains, self.num_units], "chains")
    self.log_z = self.add_weight(shape=[], initializer=initial_log_z, trainable=False,
                                 autocast=False, name="log_z")
    self.log_z_stderr = self.add_weight(shape=[], initializer="zeros", trainable=False,
                                        autocast=False, name="log_z_stderr")
    # Zero parameters: the initial log Z is exact.
    self.log_z_parameters = self.add_weight(shape=[num_parameters], initializer="zeros",
                                            trainable=False, autocast=False,
                                            name="log_z_parameters")
    self.running_log_z = replica_state(initial_log_z, [], "running_log_z")
    self.running_log_z_stderr = replica_state("zeros", [], "running_log_z_stderr")
    self.negative_phase_lag = replica_state("zeros", [], "negative_phase_lag")
    self.running_log_z_parameters = replica_state("zeros", [num_parameters],
                                                  "running_log_z_parameters")
    if self.sampler.estimates_log_z:
      self.running_log_z_before = replica_state(initial_log_z, [], "running_log_z_before")
    else:
      size = self.path_populations * self.path_population_size
      self.path_particles = replica_state(_fair_coins([0, 1]), [size, self.num_units],
                                          "path_particles")
      self.path_log_z = replica_state(initial_log_z, [self.path_populations], "path_log_z",
                                      dtype="float64")
      self.path_step = replica_state("zeros", [], "path_step", dtype="int64")
    self.built = True

  def get_config(self):
    config = super().get_config()
    config.update(weight_decay=self.weight_decay, num_chains=self.num_chains,
                  num_sweeps=self.num_sweeps, sampler=self.sampler.get_config(),
                  path_populations=self.path_populations,
                  path_population_size=self.path_population_size, path_sweeps=self.path_sweeps,
                  path_interval=self._path_interval_setting,
                  path_restart_every=self.path_restart_every,
                  path_restart_betas=self.path_restart_betas)
    return config

  @property
  def num_units(self) -> int:
    """N, the number of binary units."""
    return self._num_units

  @abc.abstractmethod
  def energy(self, z):
    """E(z) for z [..., N]; returns [...]."""

  @abc.abstractmethod
  def pairwise(self, u, v):
    """Σ_{(i,j)∈E, i<j} J_ij u_i v_j for u, v [..., N] → [...]; E(z) = −bᵀz − pairwise(z, z).

    With u ≠ v it is the coupling part of the posterior cross-entropy of a hierarchy, where
    unit i precedes unit j (`dvae.priors.AnalyticKLPrior`).
    """

  @abc.abstractmethod
  def mean_field_logits(self, fields, num_iterations):
    """Logits of the mean-field means m of the machine with biases b + `fields` [B, N].

    Block coordinate ascent on −E(m) + fieldsᵀm + H(m) from m = ½: each block (a side, or a
    colour class) is set to σ(its exact conditional logits given the others), `num_iterations`
    times; no gradient flows through the updates.
    """

  @abc.abstractmethod
  def weight_decay_loss(self):
    """weight_decay · ½‖couplings‖²."""

  @abc.abstractmethod
  def gibbs_sweeps(self, z, num_sweeps, seed, inverse_temperature=1.0):
    """`num_sweeps` block Gibbs sweeps from states z [C, N] at inverse temperature β.

    The sweeps leave p_β(z) ∝ e^{−βE(z)} invariant; returns binary float32 states [C, N].
    """

  @abc.abstractmethod
  def anneal(self, num_betas, num_populations, population_size, resample, seed,
             schedule="linear"):
    """Anneals populations from β = 0 to 1 over `num_betas` temperatures.

    Args:
      num_betas: K + 1 ≥ 2 inverse temperatures, including 0 and 1.
      num_populations: M independent populations.
      population_size: P particles in each.
      resample: True resamples each population at every step (population annealing), False
        leaves the particles independent (AIS).
      seed: stateless seed.
      schedule: their spacing, one of `ANNEALING_SCHEDULES` (`inverse_temperatures`).

    Returns:
      (states [M, P, N] after the last sweep at β = 1, log Ẑ_m [M] float64): each
      population's unbiased estimate of Z, in log.
    """

  @abc.abstractmethod
  def log_z_exact(self):
    """(log Z, 0) exactly, for machines small enough to enumerate."""

  def sample(self, num_samples, num_sweeps, seed=None):
    """Binary states [num_samples, N] (the machine's dtype): `num_sweeps` sweeps from uniform
    random states."""
    init_seed, gibbs_seed = tfp.random.split_seed(tfp.random.sanitize_seed(seed))
    return self.gibbs_sweeps(uniform_states(num_samples, self.num_units, init_seed, self.dtype),
                             num_sweeps, gibbs_seed)

  def train_log_z(self, seed):
    """log Z for the training loss at the current parameters θ_t: value, the running estimate;
    gradient, the sampler's.

    Runs the sampler's negative phase and stores its states in `chains`; advances the running
    estimate to θ_t (module docstring) and records its standard error and the negative phase's
    lag. The result is running_log_z + s − stop_gradient(s) with s = mean_chains(−E(chains)) on
    the states held constant, so its gradient is the sampler's estimate of
    ∂log Z/∂θ = E_p[−∂E/∂θ].
    """
    chains, sampler_log_z = self.sampler.negative_phase_and_log_z(self, seed)
    self.chains.assign(chains)
    surrogate = tf.reduce_mean(-self.energy(tf.stop_gradient(chains)))
    # The path's noise is its own: the sampler's draws are those of the seed alone.
    running = self._advance_running_log_z(
        chains, sampler_log_z, tf.random.experimental.stateless_fold_in(
            tfp.random.sanitize_seed(seed), 1))
    return tf.stop_gradient(running) + surrogate - tf.stop_gradient(surrogate)

  def parameters(self):
    """The machine's parameters θ (biases and couplings; trainable unless it is frozen)."""
    return [v for v in self.weights if v.path in self._parameter_paths]

  def _parameter_vector(self):
    """The trainable parameters as one flat vector, without gradient."""
    return tf.stop_gradient(tf.concat(
        [tf.reshape(v, [-1]) for v in self.parameters()], axis=0))

  def _previous_parameters(self):
    """The parameters of `running_log_z_parameters` (those of the last advance), as tensors
    shaped like `parameters()`."""
    sizes = [int(np.prod(v.shape)) for v in self.parameters()]
    return [tf.reshape(previous, v.shape) for v, previous in zip(
        self.parameters(), tf.split(tf.convert_to_tensor(self.running_log_z_parameters), sizes))]

  def _energy_change(self, states):
    """E_t(z) − E_{t−m}(z) for states [C, N], from the parameters of `running_log_z_parameters`
    to the current ones: E is linear in the parameters, so this is E's derivative along their
    difference (one forward-mode pass, exact up to rounding of the products)."""
    variables = [v.value for v in self.parameters()]
    steps = [tf.convert_to_tensor(v) - previous
             for v, previous in zip(variables, self._previous_parameters())]
    with tf.autodiff.ForwardAccumulator(variables, steps) as accumulator:
      energy = self.energy(tf.stop_gradient(states))
    return tf.stop_gradient(accumulator.jvp(energy))

  def _path_log_weights(self, particles):
    """log w = log p̃_t(z) − log p̃_{t−m}(z) of the path's particles [C, N], from the
    parameters of `running_log_z_parameters` to the current ones: −(E_t − E_{t−m})(z). A
    machine with a closed-form marginal (the RBM) weighs that instead, with less variance."""
    return -self._energy_change(particles)

  def _path_sweeps(self, particles, seed):
    """`path_sweeps` sweeps of the path's particles [C, N] at θ_t, which must leave the
    distribution that `_path_log_weights` weighs invariant: Gibbs sweeps here."""
    return self.gibbs_sweeps(particles, self.path_sweeps, seed)

  def _advance_running_log_z(self, chains, sampler_log_z, seed):
    """Moves the running estimate to the current parameters (module docstring); returns it.

    With the sampler's own estimate, at every step. Otherwise the path advances at the steps
    where (number of calls) ≡ −1 (mod `path_interval`) and keeps its value in between.
    """
    if sampler_log_z is not None:
      return self._advance_with_own_estimate(chains, sampler_log_z)
    step = tf.convert_to_tensor(self.path_step)
    self.path_step.assign_add(1)
    if self.path_interval == 0:
      return tf.convert_to_tensor(self.running_log_z)
    advance = (step + 1) // self.path_interval
    restart_due = (advance % self.path_restart_every == 0 if self.path_restart_every
                   else tf.constant(False))
    return tf.cond((step + 1) % self.path_interval == 0,
                   lambda: self._advance_path(chains, seed, restart_due),
                   lambda: tf.convert_to_tensor(self.running_log_z))

  def _restart_path(self, chains, seed):
    """Starts the path estimate afresh at θ_t: population annealing from β = 0 (fair coins)
    over `path_restart_betas` temperatures gives each of the M populations an unbiased Ẑ_m and
    states that follow p_t (a quarter of the P particles, tiled ×4 where 4 divides P; the
    copies part at the next sweeps). Unbiased as the advances are, it discards the variance
    the path has gathered since its last start."""
    num_populations, size = self.path_populations, self.path_population_size
    copies = 4 if size % 4 == 0 else 1
    previous = tf.convert_to_tensor(self.running_log_z)
    states, path_log_z = self.anneal(self.path_restart_betas, num_populations, size // copies,
                                     True, seed)
    particles = tf.tile(tf.cast(states, self.dtype), [1, copies, 1])
    self.path_particles.assign(tf.reshape(particles, [num_populations * size, self.num_units]))
    self.path_log_z.assign(tf.cast(path_log_z, tf.float64))
    log_z, stderr = log_mean_exp_with_stderr(self.path_log_z, self.dtype)
    self._record(log_z, stderr, previous, chains, self.path_interval)
    return log_z

  def _advance_path(self, chains, seed, restart_due):
    """One advance of the path estimate from the parameters of the last advance to θ_t, or a
    fresh start (`_restart_path`) where one is due (`restart_due`, a bool tensor) or the advance
    leaves the populations' estimates too unequal (`PATH_MIN_EFFECTIVE_POPULATIONS`)."""
    num_populations, size = self.path_populations, self.path_population_size
    previous = tf.convert_to_tensor(self.running_log_z)
    log_w = tf.reshape(tf.cast(self._path_log_weights(self.path_particles), tf.float64),
                       [num_populations, size])
    path_log_z = self.path_log_z + tf.reduce_logsumexp(log_w, axis=-1) - math.log(size)
    resample_seed, sweep_seed, restart_seed = tfp.random.split_seed(seed, 3)

    def advance():
      ancestors = (systematic_resample(log_w, resample_seed)
                   + tf.range(num_populations)[:, None] * size)
      particles = tf.gather(self.path_particles, tf.reshape(ancestors, [-1]))
      self.path_particles.assign(self._path_sweeps(particles, sweep_seed))
      self.path_log_z.assign(path_log_z)
      log_z, stderr = log_mean_exp_with_stderr(path_log_z, self.dtype)
      self._record(log_z, stderr, previous, chains, self.path_interval)
      return log_z

    # (Σ_m Ẑ_m)² / Σ_m Ẑ_m², the number of populations that carry the estimate.
    effective = tf.exp(2.0 * tf.reduce_logsumexp(path_log_z)
                       - tf.reduce_logsumexp(2.0 * path_log_z))
    degenerate = effective < PATH_MIN_EFFECTIVE_POPULATIONS * num_populations
    return tf.cond(restart_due | degenerate, lambda: self._restart_path(chains, restart_seed),
                   advance)

  def _advance_with_own_estimate(self, chains, sampler_log_z):
    """The running estimate from a sampler's own unbiased log Ẑ of the step."""
    previous = tf.convert_to_tensor(self.running_log_z)
    log_z = tf.cast(sampler_log_z, self.dtype)
    second_difference = log_z - 2.0 * previous + self.running_log_z_before
    stderr = tf.sqrt((1.0 - STDERR_AVERAGING) * tf.square(self.running_log_z_stderr)
                     + STDERR_AVERAGING * tf.square(second_difference) / 6.0)
    self.running_log_z_before.assign(previous)
    self._record(log_z, stderr, previous, chains, 1)
    return log_z

  def _record(self, log_z, stderr, previous, chains, num_steps):
    """Stores the new running estimate, its parameters and the negative phase's lag per step
    over the `num_steps` steps since the last record."""
    num_chains = tf.cast(tf.shape(chains)[0], self.dtype)
    from_chains = -(tf.reduce_logsumexp(self._energy_change(chains)) - tf.math.log(num_chains))
    self.negative_phase_lag.assign((log_z - previous - from_chains) / num_steps)
    self.running_log_z.assign(log_z)
    self.running_log_z_stderr.assign(stderr)
    self.running_log_z_parameters.assign(self._parameter_vector())

  def log_z_ais(self, num_betas=1000, num_samples=1024, seed=None, schedule="linear"):
    """Annealed importance sampling: (log Ẑ, standard error), Ẑ = Z_0 · mean_i Π_k w_{k,i}.

    `num_samples` independent particles go through `num_betas` inverse temperatures from 0 to
    1 spaced by `schedule` (`inverse_temperatures`), one Gibbs sweep at each, on the machine's
    annealing path. With w_i = Π_k w_{k,i} the weight of particle i, the standard error of
    log Ẑ is the delta-method std(w) / (√N · mean(w)). Ẑ is unbiased, so log Ẑ is a stochastic
    lower bound on log Z (an NLL computed with it is optimistic); the standard error does not
    show that bias, which `log_z_ais_checked` measures.
    """
    _, log_weights = self.anneal(num_betas, num_samples, 1, False, seed, schedule)
    return log_mean_exp_with_stderr(log_weights, self.dtype)

  def log_z_ais_checked(self, num_betas=10_000, num_samples=1024, seed=None,
                        schedule="linear"):
    """AIS (`log_z_ais`) with a check of its bias: (log Ẑ, standard error, check).

    The check repeats AIS with K' = `num_betas` // 10 temperatures (same schedule and
    particles, its own seed) and reports the difference d = log Ẑ_K − log Ẑ_K'. Both are
    lower bounds in expectation, and the denser one is the tighter: where the particles
    equilibrate along the path, the bias of log Ẑ falls about as 1/K, so d ≈ 0.9 × the coarse
    run's bias ≈ 9 × the dense run's, and stderr + |d| is a conservative error of log Ẑ_K
    (`tests/test_rbm.py` checks it on sharpened trained priors against a long AIS).

    Returns:
      (log Ẑ float32, its standard error float32, check): check is a dict of Python numbers,
      {"method": "ais", "num_betas": K', "num_samples", "schedule", "log_z": log Ẑ_K',
      "log_z_stderr", "difference": d, "error": stderr + |d|}.
    """
    if num_betas < 20:
      raise ValueError(f"num_betas must be at least 20 for a check with 10× fewer, got "
                       f"{num_betas!r}")
    dense_seed, coarse_seed = tfp.random.split_seed(tfp.random.sanitize_seed(seed))
    log_z, stderr = self.log_z_ais(num_betas, num_samples, dense_seed, schedule)
    coarse_betas = num_betas // 10
    coarse, coarse_stderr = self.log_z_ais(coarse_betas, num_samples, coarse_seed, schedule)
    difference = float(log_z) - float(coarse)
    return log_z, stderr, {
        "method": "ais", "num_betas": coarse_betas, "num_samples": num_samples,
        "schedule": schedule, "log_z": float(coarse), "log_z_stderr": float(coarse_stderr),
        "difference": difference, "error": float(stderr) + abs(difference)}

  def log_z_pa(self, num_betas=1000, num_samples=1024, seed=None, num_populations=16,
               schedule="linear"):
    """Population annealing: (log Ẑ, standard error) from independent sub-populations.

    The `num_samples` particles form `num_populations` independent populations, each annealed
    over `num_betas` inverse temperatures spaced by `schedule` with systematic resampling and
    one Gibbs sweep per step. Each population's Ẑ_m = Z_0 · Π_k mean_i w_{k,i} is unbiased, so the
    estimate is log mean_m Ẑ_m, and its standard error the delta-method
    std(Ẑ_m) / (√M · mean(Ẑ_m)) across the M populations.
    """
    if num_samples % num_populations:
      raise ValueError(f"num_samples ({num_samples}) must be a multiple of num_populations "
                       f"({num_populations})")
    _, log_estimates = self.anneal(num_betas, num_populations, num_samples // num_populations,
                                   True, seed, schedule)
    return log_mean_exp_with_stderr(log_estimates, self.dtype)

  @property
  def log_z_refresh(self):
    """None, or the `update_log_z` keyword arguments with which a stale log Z is re-estimated."""
    return self._log_z_refresh

  @log_z_refresh.setter
  def log_z_refresh(self, settings):
    if settings is not None:
      settings = dict(settings)
      method = settings.get("method", "ais")
      if method not in LOG_Z_METHODS:
        raise ValueError(f"log Z method must be one of {LOG_Z_METHODS}, got {method!r}")
      if method in SEEDED_LOG_Z_METHODS and settings.get("seed") is None:
        raise ValueError(f"log Z settings {settings} need a seed (e.g. \"seed\": [0, 0]): "
                         "an unseeded estimate differs from process to process")
    self._log_z_refresh = settings

  def set_log_z(self, log_z, log_z_stderr=0.0, **estimate):
    """Records `log_z` (± stderr) as the log Z of the current parameters; `estimate` says how
    it was made (by default {"method": "set"}: given by hand)."""
    self.log_z.assign(log_z)
    self.log_z_stderr.assign(log_z_stderr)
    self.log_z_parameters.assign(self._parameter_vector())
    self.log_z_estimate = estimate or {"method": "set"}

  def update_log_z(self, method="ais", **kwargs):
    """Estimates log Z of the current parameters with `method` ("exact", "ais" or "pa"; kwargs
    go to `log_z_<method>`), records it (`set_log_z`) and returns (log_z, log_z_stderr)."""
    if method not in LOG_Z_METHODS:
      raise ValueError(f"method must be one of {LOG_Z_METHODS}, got {method!r}")
    log_z, stderr = getattr(self, f"log_z_{method}")(**kwargs)
    self.set_log_z(log_z, stderr, method=method, **kwargs)
    return log_z, stderr

  def log_z_is_current(self):
    """Whether `log_z` was estimated (or set) for the current parameters."""
    return bool(tf.reduce_all(self.log_z_parameters == self._parameter_vector()))

  def ensure_current_log_z(self):
    """Re-estimates log Z with `log_z_refresh` if the parameters changed since the last estimate.

    Raises:
      StaleLogZError: the estimate is stale and `log_z_refresh` is None.
    """
    if self.log_z_is_current():
      return
    if self.log_z_refresh is None:
      raise StaleLogZError(
          f"{self.name}: log Z was estimated for other parameters; call "
          f"{self.name}.update_log_z(method, ..., seed=...) or set_log_z(value) first, or set "
          f"{self.name}.log_z_refresh = dict(method=\"ais\", seed=[0, 0]) to re-estimate "
          "automatically")
    self.update_log_z(**self.log_z_refresh)

  def current_log_z(self):
    """log Z of the current parameters (a float32 scalar tensor).

    Eagerly, `ensure_current_log_z` first. Inside a `tf.function`, where no estimate can run,
    a check: the function stops with an error naming the call to make if the stored estimate is
    for other parameters (call `ensure_current_log_z` before).
    """
    if tf.executing_eagerly():
      self.ensure_current_log_z()
      return tf.convert_to_tensor(self.log_z)
    current = tf.reduce_all(self.log_z_parameters == self._parameter_vector())
    check = tf.debugging.Assert(current, [tf.constant(
        f"{self.name}: log Z was estimated for other parameters; call "
        f"{self.name}.ensure_current_log_z() (or update_log_z) before this function")])
    with tf.control_dependencies([check]):
      return tf.identity(self.log_z)


def _colour_sweep(biases, couplings, z, beta, seed, bounds):
  """One block Gibbs sweep over the colour classes z[:, start:end] in turn (colour order).

  `couplings` is the dense symmetric [N, N] matrix, zero inside every colour class, so the
  units of one class are independent given the rest: p(z_i = 1 | rest) = σ(β(b_i + (zJ)_i)).
  """
  blocks_uniform = uniforms(seed, tf.shape(z)[0], [end - start for start, end in bounds],
                            z.dtype)
  for (start, end), uniform in zip(bounds, blocks_uniform):
    block = bernoulli(
        tf.sigmoid(beta * (biases[start:end] + tf.matmul(z, couplings[:, start:end]))), uniform)
    z = tf.concat([z[:, :start], block, z[:, end:]], axis=-1)
  return z


@tf.function(reduce_retracing=True, jit_compile=True)
def _colour_gibbs(biases, couplings, z, num_sweeps, beta, seed, bounds):
  """`num_sweeps` colour-block sweeps at inverse temperature `beta` (states in colour order)."""

  def sweep(i, z, seed):
    seed, sweep_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return i + 1, _colour_sweep(biases, couplings, z, beta, sweep_seed, bounds), seed

  _, z, _ = tf.while_loop(lambda i, *_: i < num_sweeps, sweep, (tf.constant(0), z, seed))
  return z


# Static shapes (no reduce_retracing), as the RBM's annealing: one trace per configuration.
@tf.function(jit_compile=True)
def _colour_anneal(biases, couplings, z, betas, seed, resample, bounds):
  """Anneals populations [M, P, N] (colour order) along the joint path p_β ∝ e^{−βE}.

  Step k multiplies each particle's weight by e^{−(β_k − β_{k−1}) E(z)} at its current state (a
  sample of p_{β_{k−1}}), resamples each population by its weights when `resample`, then applies
  one colour-block sweep at β_k. Returns (states [M, P, N], log Z_{β_K}/Z_{β_0} [M] float64).
  """
  num_populations, size, num_units = z.shape
  log_size = math.log(size)
  offsets = tf.range(num_populations)[:, None] * size

  def neg_energy(z):
    return (tf.linalg.matvec(z, biases)
            + 0.5 * tf.reduce_sum(z * tf.matmul(z, couplings), axis=-1))

  def step(k, z, log_w, log_z_ratio, seed):
    seed, resample_seed, sweep_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    beta_before, beta = betas[k - 1], betas[k]
    log_w += tf.cast(tf.reshape((beta - beta_before) * neg_energy(z),
                                [num_populations, size]), tf.float64)
    if resample:
      log_z_ratio += tf.reduce_logsumexp(log_w, axis=-1) - log_size
      z = tf.gather(z, tf.reshape(systematic_resample(log_w, resample_seed) + offsets, [-1]))
      log_w = tf.zeros_like(log_w)
    z = _colour_sweep(biases, couplings, z, beta, sweep_seed, bounds)
    return k + 1, z, log_w, log_z_ratio, seed

  _, z, log_w, log_z_ratio, _ = tf.while_loop(
      lambda k, *_: k < tf.shape(betas)[0], step,
      (tf.constant(1), tf.reshape(z, [num_populations * size, num_units]),
       # Sums of ~1000 increments reach hundreds of nats: float32 would lose ~1e-3 to rounding.
       tf.zeros([num_populations, size], tf.float64), tf.zeros([num_populations], tf.float64),
       seed))
  log_z_ratio += tf.reduce_logsumexp(log_w, axis=-1) - log_size
  return tf.reshape(z, [num_populations, size, num_units]), log_z_ratio


@keras.saving.register_keras_serializable(package="dvae")
class GraphBoltzmannMachine(BoltzmannMachine):
  """A Boltzmann machine over the nodes and edges of a graph G = (V, E) (SPEC §9).

  #### Mathematical Details

      E(z) = −Σ_{i∈V} b_i z_i − Σ_{(i,j)∈E} J_ij z_i z_j,      p(z) = e^{−E(z)}/Z.

  Sampling is block Gibbs over a proper colouring of G (`dvae.graphs.colouring`: 2 colours for
  Chimera, 4 for Pegasus and Zephyr): the units of one colour are independent given the rest,
  p_β(z_i = 1 | rest) = σ(β(b_i + Σ_{j~i} J_ij z_j)), and a sweep updates the colours in turn.
  The couplings are held as a dense symmetric matrix in colour order, zero inside each colour,
  so a sweep costs one [chains, N]·[N, N] product in all.

  Annealing (AIS, population annealing) follows the joint path p_β ∝ e^{−βE} from the uniform
  p_0 (Z_0 = 2^N), with weight increments e^{−(β_k − β_{k−1}) E(z)} and one sweep per
  temperature: unless G is bipartite no side sums out in closed form (the RBM does better with
  its marginal path). Exact log Z enumerates every unit outside the largest colour class (at
  most `MAX_EXACT_UNITS` of them) and sums that class out, since its units are conditionally
  independent: −F(z_k) = b_kᵀz_k + ½z_kᵀJ_kk z_k + Σ_{j∈s} softplus(b_j + (J_ksᵀz_k)_j).

  Args:
    graph: a networkx graph without self-loops; its nodes must be sortable.
    weight_decay: coefficient c of the penalty c · ½‖J‖².
    num_chains, num_sweeps, sampler: as for `BoltzmannMachine`.
    **kwargs: `keras.layers.Layer` arguments (name, dtype, …), as for `BoltzmannMachine`.

  Raises:
    ValueError: a graph with self-loops, or as for `BoltzmannMachine`.
    ImportError: networkx is not installed.

  Attributes: `nodes` (sorted(graph.nodes)), `edges` (index pairs (i, j), i < j, into `nodes`,
  sorted), trainable `biases` [N] (in `nodes` order) and `couplings` [E] (in `edges` order),
  zero at the start; `colours` [N], the colour of each unit.

  Example:

  ```python
  machine = GraphBoltzmannMachine(dvae.graphs.latent_graph("chimera", 400), num_chains=1000)
  surrogate = machine.train_log_z(seed=[0, step])           # ∇ surrogate ≈ ∇ log Z
  log_z, stderr = machine.update_log_z("ais", num_betas=1000, num_samples=1024, seed=[1, 2])
  ```
  """

  COUPLINGS = ("couplings",)

  def __init__(self, graph: "networkx.Graph", weight_decay: float = 1e-4,
               num_chains: int = 1000, num_sweeps: int = 40,
               sampler: str | dict | samplers.Sampler = "pcd", **kwargs):
    colour_of = graphs.colouring(graph)
    nodes = sorted(graph.nodes)
    super().__init__(len(nodes), weight_decay=weight_decay, num_chains=num_chains,
                     num_sweeps=num_sweeps, sampler=sampler, **kwargs)
    index = {node: i for i, node in enumerate(nodes)}
    self._graph = graph
    self._nodes = nodes
    self._edges = sorted(tuple(sorted((index[u], index[v]))) for u, v in graph.edges)
    self._colours = np.array([colour_of[node] for node in nodes])
    # Colour order: units grouped by colour; `_order[p]` is the unit at position p.
    self._order = np.argsort(self._colours, kind="stable")
    self._position = np.argsort(self._order)
    counts = np.bincount(self._colours)
    ends = np.cumsum(counts)
    self._bounds = tuple((int(end - count), int(end)) for count, end in zip(counts, ends))
    edge_array = np.array(self._edges, np.int64).reshape(-1, 2)
    self._heads, self._tails = edge_array[:, 0], edge_array[:, 1]
    self._edge_positions = self._position[edge_array]
    self.biases = self.add_weight(shape=[self.num_units], initializer="zeros", autocast=False,
                                  name="biases")
    self.couplings = self.add_weight(shape=[len(self._edges)], initializer="zeros",
                                     autocast=False, name="couplings")
    self._add_state()

  def get_config(self):
    config = super().get_config()
    config["graph"] = {"nodes": self._nodes,
                       "edges": [[self._nodes[i], self._nodes[j]] for i, j in self._edges]}
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    graph = optional.require("networkx", "Boltzmann machines on graphs").Graph()
    graph.add_nodes_from(config["graph"]["nodes"])
    graph.add_edges_from(config["graph"]["edges"])
    config["graph"] = graph
    return cls(**config)

  @property
  def graph(self):
    return self._graph

  @property
  def nodes(self):
    return list(self._nodes)

  @property
  def edges(self):
    return list(self._edges)

  @property
  def colours(self):
    return self._colours.copy()

  def energy(self, z):
    """E(z) = −bᵀz − Σ_{(i,j)∈E} J_ij z_i z_j for z [..., N] (binary, or any real vector)."""
    z = tf.cast(z, self.dtype)
    return -(tf.tensordot(z, self.biases, 1) + self.pairwise(z, z))

  def pairwise(self, u, v):
    """Σ_{(i,j)∈E, i<j} J_ij u_i v_j for u, v [..., N] → [...]."""
    pairs = (tf.gather(tf.cast(u, self.dtype), self._heads, axis=-1)
             * tf.gather(tf.cast(v, self.dtype), self._tails, axis=-1))
    return tf.tensordot(pairs, self.couplings, 1)

  def mean_field_logits(self, fields, num_iterations):
    """Mean-field logits [B, N], updating the colour classes in turn (`BoltzmannMachine`)."""
    biases, couplings = self._colour_ordered()
    fields = biases + tf.gather(tf.stop_gradient(tf.cast(fields, self.dtype)), self._order,
                                axis=-1)
    means = tf.fill(tf.shape(fields), tf.constant(0.5, fields.dtype))
    logits = fields
    for _ in range(num_iterations):
      for start, end in self._bounds:
        block = fields[:, start:end] + tf.matmul(means, couplings[:, start:end])
        means = tf.concat([means[:, :start], tf.sigmoid(block), means[:, end:]], axis=-1)
        logits = tf.concat([logits[:, :start], block, logits[:, end:]], axis=-1)
    return tf.gather(logits, self._position, axis=-1)

  def weight_decay_loss(self):
    """weight_decay · ½‖J‖²."""
    return self.weight_decay * 0.5 * tf.reduce_sum(tf.square(self.couplings))

  def _colour_ordered(self):
    """(biases, symmetric dense couplings [N, N]) in colour order, without gradient."""
    biases = tf.gather(tf.stop_gradient(tf.convert_to_tensor(self.biases)), self._order)
    upper = tf.scatter_nd(self._edge_positions, tf.stop_gradient(
        tf.convert_to_tensor(self.couplings)), [self.num_units, self.num_units])
    return biases, upper + tf.transpose(upper)

  def gibbs_sweeps(self, z, num_sweeps, seed, inverse_temperature=1.0):
    """`num_sweeps` colour-block Gibbs sweeps from z [C, N] at inverse temperature β.

    Returns the binary states [C, N] (the machine's dtype) after the sweeps; they leave p_β
    invariant.
    """
    biases, couplings = self._colour_ordered()
    z = tf.gather(tf.cast(z, self.dtype), self._order, axis=-1)
    z = _colour_gibbs(biases, couplings, z, tf.convert_to_tensor(num_sweeps, tf.int32),
                      tf.cast(inverse_temperature, self.dtype),
                      tfp.random.sanitize_seed(seed), self._bounds)
    return tf.gather(z, self._position, axis=-1)

  def anneal(self, num_betas, num_populations, population_size, resample, seed,
             schedule="linear"):
    """Anneals on the joint path from uniform states (`BoltzmannMachine.anneal`)."""
    betas = inverse_temperatures(num_betas, schedule, self.dtype)
    biases, couplings = self._colour_ordered()
    init_seed, anneal_seed = tfp.random.split_seed(tfp.random.sanitize_seed(seed))
    z = tf.reshape(uniform_states(num_populations * population_size, self.num_units, init_seed,
                                  self.dtype),
                   [num_populations, population_size, self.num_units])
    z, log_z_ratio = _colour_anneal(biases, couplings, z, betas, anneal_seed, resample,
                                    self._bounds)
    return tf.gather(z, self._position, axis=-1), log_z_ratio + self.num_units * math.log(2.0)

  def log_z_exact(self):
    """(log Z, 0): enumerates the units outside the largest colour class, sums that class out."""
    largest = np.argmax(np.bincount(self._colours))
    keep = np.flatnonzero(self._colours != largest)
    summed = np.flatnonzero(self._colours == largest)
    if keep.size > MAX_EXACT_UNITS:
      raise ValueError(
          f"exact log Z enumerates the units outside the largest colour class, at most "
          f"{MAX_EXACT_UNITS}; this graph has {keep.size} of {self.num_units}. "
          f"Use method 'ais' or 'pa' instead")
    biases = tf.stop_gradient(tf.convert_to_tensor(self.biases))
    _, couplings = self._colour_ordered()
    couplings = tf.gather(tf.gather(couplings, self._position), self._position, axis=1)
    kept_rows = tf.gather(couplings, keep)
    log_z = log_z_summing_out(tf.gather(biases, keep), tf.gather(biases, summed),
                              tf.gather(kept_rows, summed, axis=1),
                              tf.gather(kept_rows, keep, axis=1))
    return tf.cast(log_z, self.dtype), tf.constant(0.0, self.dtype)
