"""The Boltzmann prior: a bipartite restricted Boltzmann machine with its samplers (SPEC §3).

Mathematical Details

Over binary z = (z1, z2), z1 ∈ {0,1}^{n1}, z2 ∈ {0,1}^{n2},

    E(z) = −b1ᵀz1 − b2ᵀz2 − z1ᵀW z2,      p(z) = e^{−E(z)} / Z,      Z = Σ_z e^{−E(z)}.

At inverse temperature β the conditionals factorise,

    p_β(z2 = 1 | z1) = σ(β (b2 + Wᵀz1)),      p_β(z1 = 1 | z2) = σ(β (b1 + W z2)),

which gives block Gibbs sampling, and either side sums out in closed form. Naming the side kept
"k" and the side summed out "s" (W_ks the couplings oriented k → s),

    Σ_{z_s} e^{−βE(z)} = e^{−F_β(z_k)},
    −F_β(z_k) = β b_kᵀz_k + Σ_j softplus(β (b_s + W_ksᵀz_k)_j).

* Exact log Z = logsumexp_{z_k} −F_1(z_k), enumerating the smaller side (at most 20 units).
* Gradient: ∂log Z/∂θ = E_p[−∂E/∂θ] = (E_p[z1], E_p[z2], E_p[z1 z2ᵀ]) for θ = (b1, b2, W). The
  training surrogate is mean_chains(−E(z_chain)) on samples held constant; its value is
  meaningless, its gradient is the Monte Carlo estimate of ∂log Z/∂θ.
* Annealing (AIS and population annealing) keeps the smaller side and follows the marginal path
  p_β(z_k) ∝ e^{−F_β(z_k)} for 0 = β_0 < … < β_K = 1 (`dvae.boltzmann.inverse_temperatures`:
  linear, or quadratic, dense near β = 1), from the uniform p_0
  (Z_0 = 2^{n1+n2}) to the RBM's marginal of the kept side. Step k multiplies a particle's
  weight by w_k = e^{F_{β_{k−1}}(z_k) − F_{β_k}(z_k)} and then applies one block Gibbs sweep at
  β_k (z_s | z_k, then z_k | z_s), which leaves p_{β_k}(z_k) invariant. Because the other side
  is summed out analytically, the weights depend on the small side only; against the
  joint-space weights e^{−(β_k − β_{k−1}) E(z)} this halves the standard error of log Ẑ
  (measured on 20 + 200 units with W ~ N(0, 0.3²) and N(0, 0.5²); Salakhutdinov & Murray, 2008,
  anneal RBMs the same way). AIS keeps the particles independent and averages their accumulated
  weights: Ẑ = Z_0 · mean_i Π_k w_{k,i}. Population annealing resamples the population by its
  weights at every step: Ẑ = Z_0 · Π_k mean_i w_{k,i}. Both estimators of Z are unbiased
  (systematic resampling is unbiased), so their log is biased low by about half the relative
  variance: log Ẑ is a stochastic lower bound on log Z, and an NLL computed with it is
  optimistic by that bias.

Randomness is stateless: every `seed` is an int32 [2] tensor (or a list of two ints), split with
TFP's samplers, so a seed gives the same draw in eager mode and in `tf.function`; `seed=None`
draws one.

Example:

```python
rbm = RBM(100, 100, num_chains=1000, num_sweeps=40, sampler="pcd")
with tf.GradientTape() as tape:
  surrogate = rbm.train_log_z(seed=tf.constant([0, step]))  # ∇ surrogate ≈ ∇ log Z
log_z, stderr = rbm.update_log_z("ais", num_betas=1000, num_samples=1024, seed=[1, 2])
```
"""

import itertools
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from dvae import samplers
from dvae.boltzmann import (MAX_EXACT_UNITS, BoltzmannMachine, bernoulli, inverse_temperatures,
                             log_z_summing_out, systematic_resample, uniform_states, uniforms)


# The sampling loops are XLA-compiled with the threefry generator: on CPU, random numbers bound
# the sweeps, and XLA's fused threefry measured 2.5× faster than TensorFlow's philox kernel
# (XLA's philox is far slower still), making a training step's sampler ~20% faster.
@tf.function(reduce_retracing=True, jit_compile=True)
def _gibbs(b1, b2, w, z1, z2, num_sweeps, beta, seed):
  """`num_sweeps` block Gibbs sweeps (z2 | z1, then z1 | z2) at inverse temperature `beta`."""

  def sweep(i, z1, z2, seed):
    seed, sweep_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    uniform2, uniform1 = uniforms(sweep_seed, tf.shape(z1)[0], [tf.size(b2), tf.size(b1)],
                                  b1.dtype)
    z2 = bernoulli(tf.sigmoid(beta * (b2 + tf.matmul(z1, w))), uniform2)
    z1 = bernoulli(tf.sigmoid(beta * (b1 + tf.matmul(z2, w, transpose_b=True))), uniform1)
    return i + 1, z1, z2, seed

  _, z1, z2, _ = tf.while_loop(lambda i, *_: i < num_sweeps, sweep,
                               (tf.constant(0), z1, z2, seed))
  return z1, z2


def _annealing_increment(activation, beta_before, beta):
  """Σ_j softplus(β a_j) − softplus(β' a_j) [N] and σ(β a) [N, n_s], from e^{−β|a|}, e^{−β'|a|}.

  With softplus(x) = max(x, 0) + log(1 + e^{−|x|}) and e = e^{−β|a|}, e' = e^{−β'|a|} in (0, 1]
  (0 ≤ β' ≤ β),

      softplus(βa) − softplus(β'a) = (β − β')·max(a, 0) + log r,   r = (1 + e) / (1 + e') ∈ [½, 1],
      σ(βa) = (1 if a ≥ 0 else e) / (1 + e).

  Nothing overflows; log r has the absolute error of one rounding, where a difference of two
  softplus values of size β|a| loses the rounding of β|a|. The sweep's sampling probability
  shares e, and the ratios of up to 100 units are multiplied before one log (the product stays
  above 2^−100, far from float32's underflow): two exponentials per unit where two softplus and a
  sigmoid measured 2.7× the time (XLA, CPU).

  Args:
    activation: a = b_s + W_ksᵀz_k, [N, n_s].
    beta_before, beta: β' ≤ β, scalars.
  """
  num_particles, num_sum = activation.shape
  group = max(d for d in range(1, min(num_sum, 100) + 1) if num_sum % d == 0)
  magnitude = tf.abs(activation)
  decay, decay_before = tf.exp(-beta * magnitude), tf.exp(-beta_before * magnitude)
  ratio = tf.reshape((1.0 + decay) / (1.0 + decay_before), [num_particles, -1, group])
  log_increment = ((beta - beta_before) * tf.reduce_sum(tf.nn.relu(activation), axis=-1)
                   + tf.reduce_sum(tf.math.log(tf.reduce_prod(ratio, axis=-1)), axis=-1))
  probability = tf.where(activation >= 0.0, tf.ones_like(decay), decay) / (1.0 + decay)
  return log_increment, probability


@tf.function(reduce_retracing=True, jit_compile=True)
def _marginal_log_weights(b_keep, b_sum, w_ks, b_keep_before, b_sum_before, w_ks_before, z_keep):
  """−F(z_k) + F_before(z_k) [C] for kept-side states z_k [C, n_k] (module docstring), by
  differences of terms so that the rounding is that of the change, not of F's size."""
  return (tf.linalg.matvec(z_keep, b_keep - b_keep_before)
          + tf.reduce_sum(tf.nn.softplus(b_sum + tf.matmul(z_keep, w_ks))
                          - tf.nn.softplus(b_sum_before + tf.matmul(z_keep, w_ks_before)), axis=-1))


# Static shapes (no reduce_retracing): a configuration (populations, size, temperatures) traces
# once, which is all training and evaluation need.
@tf.function(jit_compile=True)
def _anneal(b_keep, b_sum, w_ks, z_keep, betas, seed, resample):
  """Anneals populations of the kept side along the marginal path β_0 → β_K (module docstring).

  Args:
    b_keep, b_sum, w_ks: biases of the kept and the summed-out side; couplings [n_k, n_s].
    z_keep: [M, P, n_k] initial states, samples of p_{β_0}.
    betas: [K + 1] inverse temperatures.
    seed: stateless seed.
    resample: Python bool; True resamples each population at every step (population
      annealing), False leaves the particles independent (AIS).

  Returns:
    (z_keep [M, P, n_k], z_sum [M, P, n_s], log_z_ratio [M] float64): final states after the
    last sweep at β_K, and each population's estimate of log Z_{β_K} / Z_{β_0}.
  """
  num_populations, size, num_keep = z_keep.shape
  num_particles, num_sum = num_populations * size, b_sum.shape[0]
  log_size = math.log(size)
  # Offsets that turn per-population offspring indices into rows of the flat population.
  offsets = tf.range(num_populations)[:, None] * size

  def step(k, z_keep, z_sum, log_w, log_z_ratio, seed):
    seed, resample_seed, sweep_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    beta_before, beta = betas[k - 1], betas[k]
    log_increment, probability = _annealing_increment(
        b_sum + tf.matmul(z_keep, w_ks), beta_before, beta)
    log_w += tf.cast(tf.reshape(
        (beta - beta_before) * tf.linalg.matvec(z_keep, b_keep) + log_increment,
        [num_populations, size]), tf.float64)
    if resample:
      log_z_ratio += tf.reduce_logsumexp(log_w, axis=-1) - log_size
      rows = tf.reshape(systematic_resample(log_w, resample_seed) + offsets, [-1])
      # The sweep redraws z_keep: of a resampled particle only σ(β a) is needed.
      probability = tf.gather(probability, rows)
      log_w = tf.zeros_like(log_w)
    uniform_sum, uniform_keep = uniforms(sweep_seed, num_particles, [num_sum, num_keep],
                                         b_sum.dtype)
    z_sum = bernoulli(probability, uniform_sum)
    z_keep = bernoulli(
        tf.sigmoid(beta * (b_keep + tf.matmul(z_sum, w_ks, transpose_b=True))), uniform_keep)
    return k + 1, z_keep, z_sum, log_w, log_z_ratio, seed

  _, z_keep, z_sum, log_w, log_z_ratio, _ = tf.while_loop(
      lambda k, *_: k < tf.shape(betas)[0], step,
      (tf.constant(1), tf.reshape(z_keep, [num_particles, num_keep]),
       tf.zeros([num_particles, num_sum], b_sum.dtype),
       # Sums of ~1000 increments reach hundreds of nats: float32 would lose ~1e-3 to rounding.
       tf.zeros([num_populations, size], tf.float64), tf.zeros([num_populations], tf.float64),
       seed))
  log_z_ratio += tf.reduce_logsumexp(log_w, axis=-1) - log_size
  return (tf.reshape(z_keep, [num_populations, size, -1]),
          tf.reshape(z_sum, [num_populations, size, -1]), log_z_ratio)


@keras.saving.register_keras_serializable(package="dvae")
class RBM(BoltzmannMachine):
  """A bipartite RBM prior p(z) = e^{−E(z)}/Z: the `BoltzmannMachine` with a marginal path.

  Args:
    num_left: n1, units of z1.
    num_right: n2, units of z2.
    weight_decay: coefficient c of the penalty c · ½‖W‖².
    num_chains, num_sweeps, sampler, **kwargs: as for `dvae.boltzmann.BoltzmannMachine`
      (dtype float32 or float64; a mixed policy keeps float32).

  Raises:
    ValueError: a side's size is not a positive integer, or as for `BoltzmannMachine`.

  Variables: trainable `b1` [n1], `b2` [n2], `w` [n1, n2], zero at the start; non-trainable
  `chains` [num_chains, n1 + n2] (the persistent states, or PA's last population), starting as
  fair coin flips, which are exact samples of the zero-parameter RBM; `log_z` (starting at its
  exact zero-parameter value (n1 + n2) log 2) and `log_z_stderr`, the evaluation estimate.
  """

  COUPLINGS = ("w",)

  def __init__(self, num_left: int, num_right: int, weight_decay: float = 1e-4,
               num_chains: int = 1000, num_sweeps: int = 40,
               sampler: str | dict | samplers.Sampler = "pcd", **kwargs):
    for arg, value in (("num_left", num_left), ("num_right", num_right)):
      if int(value) != value or value < 1:
        raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    super().__init__(int(num_left) + int(num_right), weight_decay=weight_decay,
                     num_chains=num_chains, num_sweeps=num_sweeps, sampler=sampler, **kwargs)
    self._num_left, self._num_right = int(num_left), int(num_right)
    # Read in the machine's dtype even inside a mixed-precision model's call (autocast=False).
    self.b1 = self.add_weight(shape=[self._num_left], initializer="zeros", autocast=False,
                              name="b1")
    self.b2 = self.add_weight(shape=[self._num_right], initializer="zeros", autocast=False,
                              name="b2")
    self.w = self.add_weight(shape=[self._num_left, self._num_right], initializer="zeros",
                             autocast=False, name="w")
    self._add_state()

  def get_config(self):
    config = super().get_config()
    config.update(num_left=self._num_left, num_right=self._num_right)
    return config

  @property
  def num_left(self) -> int:
    """n1, the units of z1."""
    return self._num_left

  @property
  def num_right(self) -> int:
    """n2, the units of z2."""
    return self._num_right

  @property
  def biases(self):
    """The graph view's biases [n1 + n2]: (b1, b2)."""
    return tf.concat([self.b1, self.b2], axis=0)

  @property
  def edges(self):
    """The graph view's edges: (i, n1 + j) for every left unit i and right unit j, row-major."""
    return list(itertools.product(range(self._num_left),
                                  range(self._num_left, self.num_units)))

  @property
  def couplings(self):
    """The graph view's couplings [n1 · n2]: W_ij in the order of `edges`."""
    return tf.reshape(self.w, [-1])

  def pairwise(self, u, v):
    """Σ_ij W_ij u1_i v2_j: the left half of u [..., n1 + n2] against the right half of v."""
    u1, _ = tf.split(tf.cast(u, self.dtype), [self._num_left, self._num_right], axis=-1)
    _, v2 = tf.split(tf.cast(v, self.dtype), [self._num_left, self._num_right], axis=-1)
    return tf.reduce_sum(tf.tensordot(u1, self.w, axes=1) * v2, axis=-1)

  def mean_field_logits(self, fields, num_iterations):
    """Mean-field logits [B, n1 + n2]: m2 ← σ(Wᵀm1 + b2 + f2), m1 ← σ(W m2 + b1 + f1) in turn."""
    b1, b2, w = self._parameters()
    field1, field2 = tf.split(tf.stop_gradient(tf.cast(fields, self.dtype)),
                              [self._num_left, self._num_right], axis=-1)
    field1, field2 = field1 + b1, field2 + b2
    m1 = tf.fill(tf.shape(field1), tf.constant(0.5, field1.dtype))
    for _ in range(num_iterations):
      logits2 = tf.matmul(m1, w) + field2
      logits1 = tf.matmul(tf.sigmoid(logits2), w, transpose_b=True) + field1
      m1 = tf.sigmoid(logits1)
    return tf.concat([logits1, logits2], axis=-1)

  def energy(self, z):
    """E(z) = −b1ᵀz1 − b2ᵀz2 − z1ᵀW z2 for z [..., n1 + n2]; returns [...]."""
    z1, z2 = tf.split(tf.cast(z, self.dtype), [self._num_left, self._num_right], axis=-1)
    return -(tf.linalg.matvec(z1, self.b1) + tf.linalg.matvec(z2, self.b2)
             + tf.reduce_sum(tf.tensordot(z1, self.w, axes=1) * z2, axis=-1))

  def weight_decay_loss(self):
    """weight_decay · ½‖W‖²."""
    return self.weight_decay * 0.5 * tf.reduce_sum(tf.square(self.w))

  def _parameters(self):
    # Samplers see the parameters' values only: no gradient tape records through their loops.
    return [tf.stop_gradient(tf.convert_to_tensor(v)) for v in (self.b1, self.b2, self.w)]

  def _oriented(self):
    """(b_keep, b_sum, W_ks, kept_is_left): the smaller side is kept, the larger summed out."""
    b1, b2, w = self._parameters()
    if self._num_left <= self._num_right:
      return b1, b2, w, True
    return b2, b1, tf.transpose(w), False

  def gibbs_sweeps(self, z, num_sweeps, seed, inverse_temperature=1.0):
    """`num_sweeps` block Gibbs sweeps (z2 | z1, then z1 | z2) at inverse temperature β.

    Args:
      z: [N, n1 + n2] binary initial states.
      num_sweeps: int or int32 scalar tensor.
      seed: stateless seed.
      inverse_temperature: β; the sweeps leave p_β(z) ∝ e^{−βE(z)} invariant.

    Returns:
      The binary states [N, n1 + n2] (the machine's dtype) after the sweeps.
    """
    b1, b2, w = self._parameters()
    z1, z2 = tf.split(tf.cast(z, self.dtype), [self._num_left, self._num_right], axis=-1)
    z1, z2 = _gibbs(b1, b2, w, z1, z2, tf.convert_to_tensor(num_sweeps, tf.int32),
                    tf.cast(inverse_temperature, self.dtype),
                    tfp.random.sanitize_seed(seed))
    return tf.concat([z1, z2], axis=-1)

  def _split_sides(self, states, kept_is_left):
    """(kept side, summed-out side) of states [C, n1 + n2]."""
    z1, z2 = tf.split(tf.cast(states, self.dtype), [self._num_left, self._num_right], axis=-1)
    return (z1, z2) if kept_is_left else (z2, z1)

  def _path_log_weights(self, particles):
    """log p̃_t(z_k) − log p̃_{t−m}(z_k) on the marginal of the kept (smaller) side, the other
    summed out: −F_t(z_k) + F_{t−m}(z_k). The joint's weights e^{−(E_t − E_{t−m})(z)} are these
    times a factor with mean 1 given z_k, so they only add variance (Rao–Blackwell); at the
    quickstart the difference was within the scatter of 4 seeds (offline replays of one run).
    `BoltzmannMachine._path_log_weights`."""
    b_keep, b_sum, w_ks, kept_is_left = self._oriented()
    b1, b2, w = (tf.stop_gradient(v) for v in self._previous_parameters())
    before = (b1, b2, w) if kept_is_left else (b2, b1, tf.transpose(w))
    return _marginal_log_weights(b_keep, b_sum, w_ks, *before,
                                 self._split_sides(particles, kept_is_left)[0])

  def _path_sweeps(self, particles, seed):
    """`path_sweeps` sweeps that first redraw the summed-out side given the kept one (which
    alone the weights have made a sample of p_t), then the kept side given it."""
    b_keep, b_sum, w_ks, kept_is_left = self._oriented()
    z_keep, z_sum = self._split_sides(particles, kept_is_left)
    z_keep, z_sum = _gibbs(b_keep, b_sum, w_ks, z_keep, z_sum,
                           tf.convert_to_tensor(self.path_sweeps, tf.int32),
                           tf.constant(1.0, self.dtype), tfp.random.sanitize_seed(seed))
    return tf.concat([z_keep, z_sum] if kept_is_left else [z_sum, z_keep], axis=-1)

  def anneal(self, num_betas, num_populations, population_size, resample, seed,
             schedule="linear"):
    """Anneals M populations of P particles from uniform states over `num_betas` inverse
    temperatures in [0, 1] spaced by `schedule` (module docstring), resampling at every step if
    `resample`.

    Returns (joint states [M, P, n1 + n2], log Ẑ_m [M] float64).
    """
    betas = inverse_temperatures(num_betas, schedule, self.dtype)
    b_keep, b_sum, w_ks, kept_is_left = self._oriented()
    init_seed, anneal_seed = tfp.random.split_seed(tfp.random.sanitize_seed(seed))
    z_keep = tf.reshape(
        uniform_states(num_populations * population_size, b_keep.shape[0], init_seed,
                       self.dtype),
        [num_populations, population_size, -1])
    z_keep, z_sum, log_z_ratio = _anneal(
        b_keep, b_sum, w_ks, z_keep, betas, anneal_seed, resample)
    states = tf.concat([z_keep, z_sum] if kept_is_left else [z_sum, z_keep], axis=-1)
    return states, log_z_ratio + self.num_units * math.log(2.0)

  def log_z_exact(self):
    """(log Z, 0) by enumerating the smaller side (at most 20 units) and summing out the other."""
    b_keep, b_sum, w_ks, _ = self._oriented()
    if b_keep.shape[0] > MAX_EXACT_UNITS:
      raise ValueError(
          f"exact log Z enumerates the smaller side of the RBM, which must have at most "
          f"{MAX_EXACT_UNITS} units; this one has {self._num_left} + {self._num_right}. "
          f"Use method 'ais' or 'pa' instead")
    return (tf.cast(log_z_summing_out(b_keep, b_sum, w_ks), self.dtype),
            tf.constant(0.0, self.dtype))
