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
  p_β(z_k) ∝ e^{−F_β(z_k)} for linearly spaced 0 = β_0 < … < β_K = 1, from the uniform p_0
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
  variance.

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

LOG_Z_METHODS = ("exact", "ais", "pa")
# Beyond 2^20 states on the enumerated side exact log Z is no longer a matter of seconds.
MAX_EXACT_UNITS = 20
# States of the enumerated side handled at once: 2^14 × 200 float64 activations are 26 MB.
_EXACT_CHUNK_BITS = 14


def _bernoulli(probabilities, uniform):
  """Binary float samples with P(1) = `probabilities`, from uniforms of the same shape."""
  return tf.cast(uniform < probabilities, probabilities.dtype)


def _uniforms(seed, num_rows, widths):
  """Uniforms [num_rows, w] for each w in `widths`, split from one threefry draw.

  Drawn once and split, the uniforms are a tensor of their own that XLA computes in one
  vectorised loop; a draw consumed by a single sampling expression is fused into it, which
  measured ~2× slower per uniform on CPU (Gibbs sweeps 79 → 58 ms, matrix products 30 ms).
  """
  uniform = tf.random.stateless_uniform([num_rows, sum(widths)], seed, alg="threefry")
  return tf.split(uniform, widths, axis=-1)


def _uniform_states(num_samples, num_units, seed):
  """Independent fair coins: exact samples of an RBM at β = 0 (or with zero parameters)."""
  return tf.cast(tf.random.stateless_uniform([num_samples, num_units], seed) < 0.5, tf.float32)


# The sampling loops are XLA-compiled with the threefry generator: on CPU, random numbers bound
# the sweeps, and XLA's fused threefry measured 2.5× faster than TensorFlow's philox kernel
# (XLA's philox is far slower still), making a training step's sampler ~20% faster.
@tf.function(reduce_retracing=True, jit_compile=True)
def _gibbs(b1, b2, w, z1, z2, num_sweeps, beta, seed):
  """`num_sweeps` block Gibbs sweeps (z2 | z1, then z1 | z2) at inverse temperature `beta`."""

  def sweep(i, z1, z2, seed):
    seed, sweep_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    uniform2, uniform1 = _uniforms(sweep_seed, tf.shape(z1)[0], [tf.size(b2), tf.size(b1)])
    z2 = _bernoulli(tf.sigmoid(beta * (b2 + tf.matmul(z1, w))), uniform2)
    z1 = _bernoulli(tf.sigmoid(beta * (b1 + tf.matmul(z2, w, transpose_b=True))), uniform1)
    return i + 1, z1, z2, seed

  _, z1, z2, _ = tf.while_loop(lambda i, *_: i < num_sweeps, sweep,
                               (tf.constant(0), z1, z2, seed))
  return z1, z2


def _systematic_resample(log_w, seed):
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
  probability = tf.where(activation >= 0.0, 1.0, decay) / (1.0 + decay)
  return log_increment, probability


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
      rows = tf.reshape(_systematic_resample(log_w, resample_seed) + offsets, [-1])
      # The sweep redraws z_keep: of a resampled particle only σ(β a) is needed.
      probability = tf.gather(probability, rows)
      log_w = tf.zeros_like(log_w)
    uniform_sum, uniform_keep = _uniforms(sweep_seed, num_particles, [num_sum, num_keep])
    z_sum = _bernoulli(probability, uniform_sum)
    z_keep = _bernoulli(
        tf.sigmoid(beta * (b_keep + tf.matmul(z_sum, w_ks, transpose_b=True))), uniform_keep)
    return k + 1, z_keep, z_sum, log_w, log_z_ratio, seed

  _, z_keep, z_sum, log_w, log_z_ratio, _ = tf.while_loop(
      lambda k, *_: k < tf.shape(betas)[0], step,
      (tf.constant(1), tf.reshape(z_keep, [num_particles, num_keep]),
       tf.zeros([num_particles, num_sum]),
       # Sums of ~1000 increments reach hundreds of nats: float32 would lose ~1e-3 to rounding.
       tf.zeros([num_populations, size], tf.float64), tf.zeros([num_populations], tf.float64),
       seed))
  log_z_ratio += tf.reduce_logsumexp(log_w, axis=-1) - log_size
  return (tf.reshape(z_keep, [num_populations, size, -1]),
          tf.reshape(z_sum, [num_populations, size, -1]), log_z_ratio)


@tf.function
def _log_z_exact(b_keep, b_sum, w_ks):
  """logsumexp over all z_k of −F_1(z_k), in float64, 2^_EXACT_CHUNK_BITS states at a time."""
  b_keep, b_sum, w_ks = (tf.cast(t, tf.float64) for t in (b_keep, b_sum, w_ks))
  num_keep = b_keep.shape[0]
  chunk_bits = min(num_keep, _EXACT_CHUNK_BITS)
  num_chunks = 2 ** (num_keep - chunk_bits)
  bits = tf.range(num_keep, dtype=tf.int64)

  def chunk(i, partial):
    index = tf.range(2 ** chunk_bits, dtype=tf.int64) + i * 2 ** chunk_bits
    states = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(index[:, None], bits), 1),
                     tf.float64)
    neg_free_energy = (tf.linalg.matvec(states, b_keep) + tf.reduce_sum(
        tf.nn.softplus(b_sum + tf.matmul(states, w_ks)), axis=-1))
    return i + 1, partial.write(tf.cast(i, tf.int32), tf.reduce_logsumexp(neg_free_energy))

  _, partial = tf.while_loop(lambda i, _: i < num_chunks, chunk,
                             (tf.constant(0, tf.int64), tf.TensorArray(tf.float64, num_chunks)))
  return tf.reduce_logsumexp(partial.stack())


def _log_mean_exp_with_stderr(log_estimates):
  """log mean_m Ẑ_m and its delta-method standard error std(Ẑ) / (√M · mean(Ẑ)), as float32.

  Args:
    log_estimates: [M] float64 log Ẑ_m of M independent unbiased estimates Ẑ_m.
  """
  count = tf.cast(tf.size(log_estimates), tf.float64)
  shifted = tf.exp(log_estimates - tf.reduce_max(log_estimates))
  mean = tf.reduce_mean(shifted)
  std = tf.sqrt(tf.reduce_sum(tf.square(shifted - mean)) / tf.maximum(count - 1, 1))
  estimate = tf.math.log(mean) + tf.reduce_max(log_estimates)
  return tf.cast(estimate, tf.float32), tf.cast(std / (tf.sqrt(count) * mean), tf.float32)


def _fair_coins(shape, dtype=None):
  # Keras initializer of the chains. Fair coins are exact samples of the initial RBM (b = W = 0),
  # so the persistent chains start in equilibrium.
  return tf.cast(_uniform_states(*shape, tf.constant([0, 0])), dtype or tf.float32)


class RBM(keras.layers.Layer):
  """A bipartite RBM prior p(z) = e^{−E(z)}/Z with its sampler and log Z estimators.

  Args:
    num_left: n1, units of z1.
    num_right: n2, units of z2.
    weight_decay: coefficient c of the penalty c · ½‖W‖².
    num_chains: persistent chains (PCD) or population size (PA) for the log Z gradient.
    num_sweeps: Gibbs sweeps per training step (PCD) or annealing steps (PA).
    sampler: the negative phase of the log Z gradient: "pcd" (persistent contrastive
      divergence), "pa" (population annealing) or a `dvae.samplers.Sampler` such as a
      `DimodSampler` (see `dvae.samplers.get`).
    **kwargs: `keras.layers.Layer` arguments (name, …).

  Variables: trainable `b1` [n1], `b2` [n2], `w` [n1, n2], zero at the start; non-trainable
  `chains` [num_chains, n1 + n2] (the persistent states, or PA's last population), starting as
  fair coin flips, which are exact samples of the zero-parameter RBM; `log_z` (starting at its
  exact zero-parameter value (n1 + n2) log 2) and `log_z_stderr`, the evaluation estimate.
  """

  def __init__(self, num_left, num_right, weight_decay=1e-4, num_chains=1000, num_sweeps=40,
               sampler="pcd", **kwargs):
    super().__init__(**kwargs)
    self.sampler = samplers.get(sampler)
    # A sampler outside TensorFlow (dimod) keeps Keras's jit_compile="auto" from using XLA.
    self.supports_jit = self.sampler.supports_jit
    for arg, value in (("num_left", num_left), ("num_right", num_right),
                       ("num_chains", num_chains), ("num_sweeps", num_sweeps)):
      if int(value) != value or value < 1:
        raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if weight_decay < 0:
      raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")
    self._num_left, self._num_right = int(num_left), int(num_right)
    self.weight_decay = float(weight_decay)
    self.num_chains, self.num_sweeps = int(num_chains), int(num_sweeps)
    self.b1 = self.add_weight(shape=[self._num_left], initializer="zeros", name="b1")
    self.b2 = self.add_weight(shape=[self._num_right], initializer="zeros", name="b2")
    self.w = self.add_weight(shape=[self._num_left, self._num_right], initializer="zeros",
                             name="w")
    # Under a tf.distribute strategy every replica keeps and advances its own chains
    # (synchronised on read: a cross-replica read, e.g. for a checkpoint, sees replica 0's).
    self.chains = keras.Variable(
        _fair_coins, shape=[self.num_chains, self.num_units], trainable=False,
        synchronization="on_read", aggregation="only_first_replica", name="chains")
    self.log_z = self.add_weight(
        shape=[], initializer=keras.initializers.Constant(self.num_units * math.log(2.0)),
        trainable=False, name="log_z")
    self.log_z_stderr = self.add_weight(shape=[], initializer="zeros", trainable=False,
                                        name="log_z_stderr")
    self.built = True

  def get_config(self):
    config = super().get_config()
    config.update(num_left=self._num_left, num_right=self._num_right,
                  weight_decay=self.weight_decay, num_chains=self.num_chains,
                  num_sweeps=self.num_sweeps, sampler=self.sampler.get_config())
    return config

  @property
  def num_left(self):
    return self._num_left

  @property
  def num_right(self):
    return self._num_right

  @property
  def num_units(self):
    return self._num_left + self._num_right

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

  def energy(self, z):
    """E(z) = −b1ᵀz1 − b2ᵀz2 − z1ᵀW z2 for z [..., n1 + n2]; returns [...]."""
    z1, z2 = tf.split(z, [self._num_left, self._num_right], axis=-1)
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
      The binary float32 states [N, n1 + n2] after the sweeps.
    """
    b1, b2, w = self._parameters()
    z1, z2 = tf.split(tf.convert_to_tensor(z, tf.float32), [self._num_left, self._num_right],
                      axis=-1)
    z1, z2 = _gibbs(b1, b2, w, z1, z2, tf.convert_to_tensor(num_sweeps, tf.int32),
                    tf.convert_to_tensor(inverse_temperature, tf.float32),
                    tfp.random.sanitize_seed(seed))
    return tf.concat([z1, z2], axis=-1)

  def sample(self, num_samples, num_sweeps, seed=None):
    """Binary float32 [num_samples, n1 + n2]: `num_sweeps` sweeps from uniform random states."""
    init_seed, gibbs_seed = tfp.random.split_seed(tfp.random.sanitize_seed(seed))
    return self.gibbs_sweeps(_uniform_states(num_samples, self.num_units, init_seed),
                             num_sweeps, gibbs_seed)

  def anneal(self, num_betas, num_populations, population_size, resample, seed):
    """Anneals M populations of P particles from uniform states over `num_betas` linearly spaced
    inverse temperatures in [0, 1] (module docstring), resampling at every step if `resample`.

    Returns (joint states [M, P, n1 + n2], log Ẑ_m [M] float64).
    """
    if num_betas < 2:
      raise ValueError(f"num_betas must be at least 2 (β = 0 and β = 1), got {num_betas}")
    b_keep, b_sum, w_ks, kept_is_left = self._oriented()
    init_seed, anneal_seed = tfp.random.split_seed(tfp.random.sanitize_seed(seed))
    z_keep = tf.reshape(
        _uniform_states(num_populations * population_size, b_keep.shape[0], init_seed),
        [num_populations, population_size, -1])
    z_keep, z_sum, log_z_ratio = _anneal(
        b_keep, b_sum, w_ks, z_keep, tf.linspace(0.0, 1.0, num_betas), anneal_seed, resample)
    states = tf.concat([z_keep, z_sum] if kept_is_left else [z_sum, z_keep], axis=-1)
    return states, log_z_ratio + self.num_units * math.log(2.0)

  def train_log_z(self, seed):
    """Runs the sampler's negative phase, stores its states in `chains`, returns
    mean_chains(−E(chains)).

    The states are constants, so the gradient of the result is the sampler's estimate of
    ∂log Z/∂θ = E_p[−∂E/∂θ]; its value is not log Z.
    """
    chains = self.sampler.negative_phase(self, seed)
    self.chains.assign(chains)
    return tf.reduce_mean(-self.energy(tf.stop_gradient(chains)))

  def log_z_exact(self):
    """(log Z, 0) by enumerating the smaller side (at most 20 units) and summing out the other."""
    b_keep, b_sum, w_ks, _ = self._oriented()
    if b_keep.shape[0] > MAX_EXACT_UNITS:
      raise ValueError(
          f"exact log Z enumerates the smaller side of the RBM, which must have at most "
          f"{MAX_EXACT_UNITS} units; this one has {self._num_left} + {self._num_right}. "
          f"Use method 'ais' or 'pa' instead")
    return tf.cast(_log_z_exact(b_keep, b_sum, w_ks), tf.float32), tf.constant(0.0)

  def log_z_ais(self, num_betas=1000, num_samples=1024, seed=None):
    """Annealed importance sampling: (log Ẑ, standard error), Ẑ = Z_0 · mean_i Π_k w_{k,i}.

    `num_samples` independent particles go through `num_betas` linearly spaced inverse
    temperatures from 0 to 1 (one Gibbs sweep at each) on the marginal path of the module
    docstring. With w_i = Π_k w_{k,i} the weight of particle i, the standard error of log Ẑ is
    the delta-method std(w) / (√N · mean(w)).
    """
    _, log_weights = self.anneal(num_betas, num_samples, 1, False, seed)
    return _log_mean_exp_with_stderr(log_weights)

  def log_z_pa(self, num_betas=1000, num_samples=1024, seed=None, num_populations=16):
    """Population annealing: (log Ẑ, standard error) from independent sub-populations.

    The `num_samples` particles form `num_populations` independent populations, each annealed
    over `num_betas` linearly spaced inverse temperatures with systematic resampling and one
    Gibbs sweep per step. Each population's Ẑ_m = Z_0 · Π_k mean_i w_{k,i} is unbiased, so the
    estimate is log mean_m Ẑ_m, and its standard error the delta-method
    std(Ẑ_m) / (√M · mean(Ẑ_m)) across the M populations.
    """
    if num_samples % num_populations:
      raise ValueError(f"num_samples ({num_samples}) must be a multiple of num_populations "
                       f"({num_populations})")
    _, log_estimates = self.anneal(num_betas, num_populations, num_samples // num_populations,
                                   True, seed)
    return _log_mean_exp_with_stderr(log_estimates)

  def update_log_z(self, method="ais", **kwargs):
    """Estimates log Z with `method` ("exact", "ais" or "pa"; kwargs go to `log_z_<method>`),
    stores it in `log_z` and `log_z_stderr` and returns (log_z, log_z_stderr)."""
    if method not in LOG_Z_METHODS:
      raise ValueError(f"method must be one of {LOG_Z_METHODS}, got {method!r}")
    log_z, stderr = getattr(self, f"log_z_{method}")(**kwargs)
    self.log_z.assign(log_z)
    self.log_z_stderr.assign(stderr)
    return log_z, stderr
