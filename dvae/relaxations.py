"""Overlapping transformations: the continuous relaxations q(ζ|x) of binary latent units.

Each latent unit has a factorial Bernoulli posterior q(z=1|x) = q = σ(l) with logit l. DVAE++ and
DVAE# relax z to a continuous ζ with a smoothing distribution r(ζ|z):

    q(ζ|x) = (1 − q) r(ζ|z=0) + q r(ζ|z=1),

where r(ζ|1) = r(1 − ζ|0) ("mirrored": exponential, power-function, Gaussian, uniform+exponential
smoothing) or r(ζ|1) = r(ζ − 1|0) ("shifted": the Gaussian-integral posterior N(ζ; z + δμ, σ²)).
DVAE's spike-and-exponential relaxation has r(ζ|0) = δ(ζ) instead.

`smoothing(name, beta)` builds r(ζ|z=0) and `posterior(name, logits, beta)` builds q(ζ|x). Samples
are ancestral (z ~ Bern(q), ζ ~ r(ζ|z)); their gradient with respect to every parameter θ
(the logits, β, δμ, σ) is the implicit reparameterization gradient obtained by differentiating
the CDF identity F(ζ; θ) = ρ:

    ∂ζ/∂θ = −(∂F/∂θ) / (∂F/∂ζ) = −(∂F/∂θ) / q(ζ|x).

One mechanism (`_implicitly_reparameterized`) computes it for every distribution here by
differentiating the distribution's own CDF at the (stop-gradient) sample.

Example:

    q = posterior("power", logits, beta=30.)
    zeta = q.sample(seed=[1, 2])           # shape of logits; differentiable in logits
    log_q = q.log_prob(zeta)
    b = q.log_ratio(zeta)                  # log r(ζ|1) − log r(ζ|0)
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.bijectors import sigmoid as sigmoid_bijector
from tensorflow_probability.python.bijectors import softplus as softplus_bijector
from tensorflow_probability.python.internal import assert_util
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import reparameterization
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import special_math
from tensorflow_probability.python.internal import tensor_util

tfd = tfp.distributions

SMOOTHINGS = ("exponential", "power", "gaussian", "uniform_exponential")
POSTERIORS = ("spike_exp", "exponential", "power", "gaussian", "uniform_exponential",
              "shifted_gaussian")

# DVAE's spike-and-exp clips q to keep log q and log(1 − q) finite (SPEC §2).
_SPIKE_PROB_CLIP = 1e-7
# A finite stand-in for log 0 where a point mass makes the exact log density −∞ (spike-and-exp's
# r(ζ|0) = δ(ζ)): large enough that σ(l ± 1e30) is exactly 0 or 1 for any float32 logit, small
# enough that sums over thousands of units stay finite.
_LOG_ZERO = -1e30


def _positive(dtype):
  return softplus_bijector.Softplus(low=dtype_util.eps(dtype))


# --------------------------------------------------------------------------------------------
# The implicit reparameterization gradient, written once for every distribution below.
# --------------------------------------------------------------------------------------------

def _parameter_tree(dist):
  """The floating-point tensor parameters of `dist`, descending into component distributions."""
  tree = {}
  for name in type(dist).parameter_properties():
    value = getattr(dist, name)
    if isinstance(value, tfd.Distribution):
      tree[name] = _parameter_tree(value)
    elif value is not None:
      tree[name] = tf.convert_to_tensor(value)
  return tree


def _rebuild(dist, tree):
  """A copy of `dist` whose parameters are the (nested) tensors of `tree`."""
  return dist.copy(**{
      name: _rebuild(getattr(dist, name), value) if isinstance(value, dict) else value
      for name, value in tree.items()})


def _implicitly_reparameterized(dist, draw):
  """`draw` (a sample of `dist`, shape [n] + batch) with its implicit gradient to every parameter.

  The value is `draw`. The gradient follows F(ζ; θ) = ρ at fixed ρ:
  ∂ζ/∂θ = −(∂F/∂θ)(ζ) / f(ζ), with F = `dist.cdf` and f = `dist.prob`. Every parameter is
  broadcast to the sample's shape first, so that one backward pass through F gives the
  elementwise partial derivatives ∂F_i/∂θ_i (F_i depends on θ_i alone).
  """
  draw = tf.stop_gradient(draw)
  shape = ps.shape(draw)
  tree = tf.nest.map_structure(lambda p: tf.broadcast_to(p, shape), _parameter_tree(dist))
  leaves = tf.nest.flatten(tree)

  @tf.custom_gradient
  def reparameterize(*leaves):
    def grad(upstream):
      with tf.GradientTape() as tape:
        tape.watch(leaves)
        dist_at = _rebuild(dist, tf.nest.pack_sequence_as(tree, list(leaves)))
        cdf = dist_at.cdf(draw)
      cdf_grads = tape.gradient(cdf, leaves, unconnected_gradients=tf.UnconnectedGradients.ZERO)
      inverse_density = tf.exp(-dist_at.log_prob(draw))
      # multiply_no_nan: where ∂F/∂θ vanishes (ζ at an end of a bounded support) the gradient is
      # 0 even if the density there underflowed.
      return [tf.math.multiply_no_nan(inverse_density, -upstream * g) for g in cdf_grads]
    return tf.identity(draw), grad

  return reparameterize(*leaves)


# --------------------------------------------------------------------------------------------
# Smoothing families r(ζ|z=0).
# --------------------------------------------------------------------------------------------

class _Smoothing(tfd.Distribution):
  """Scalar smoothing distribution r(ζ|z=0) with support [`low`, `high`].

  Subclasses give `_log_prob`, `_cdf`, `_survival_function` (accurate near 1: the mirrored
  component needs R(ζ|1) = 1 − R(1 − ζ|0)), `_mean` and a noise transform `_draw`; samples carry
  the implicit reparameterization gradient with respect to every parameter.
  """

  _low = 0.
  _high = 1.

  @property
  def low(self):
    """Lower end of the support."""
    return self._low

  @property
  def high(self):
    """Upper end of the support."""
    return self._high

  def _event_shape_tensor(self):
    return tf.constant([], dtype=tf.int32)

  def _event_shape(self):
    return tf.TensorShape([])

  def _draw(self, shape, seed):
    """Samples of the given (broadcast) shape, by inversion of a uniform in (0, 1)."""
    # The smallest normal number as lower bound keeps unbounded quantiles finite.
    tiny = np.finfo(dtype_util.as_numpy_dtype(self.dtype)).tiny
    return self._quantile(samplers.uniform(shape, minval=tiny, dtype=self.dtype, seed=seed))

  def _sample_n(self, n, seed=None):
    shape = ps.concat([[n], self.batch_shape_tensor()], axis=0)
    return _implicitly_reparameterized(self, self._draw(shape, seed))

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    return [assert_util.assert_positive(getattr(self, name), message=f"`{name}` must be positive.")
            for name in self._positive_parameters
            if is_init != tensor_util.is_ref(getattr(self, name))]


class _BetaSmoothing(_Smoothing):
  """A smoothing family with one sharpness parameter β > 0 (exponential, power-function)."""

  _positive_parameters = ("beta",)

  def __init__(self, beta, validate_args=False, allow_nan_stats=True, name=None):
    parameters = dict(locals())
    with tf.name_scope(name or type(self).__name__) as name:
      dtype = dtype_util.common_dtype([beta], dtype_hint=tf.float32)
      self._beta = tensor_util.convert_nonref_to_tensor(beta, dtype=dtype, name="beta")
      super().__init__(dtype=dtype,
                       reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(beta=parameter_properties.ParameterProperties(
        default_constraining_bijector_fn=lambda: _positive(dtype)))

  @property
  def beta(self):
    return self._beta


class ExponentialSmoothing(_BetaSmoothing):
  """Truncated exponential smoothing on [0, 1] (DVAE++).

  #### Mathematical Details

      r(ζ|0) = β e^{−βζ} / (1 − e^{−β}),      R(ζ|0) = (1 − e^{−βζ}) / (1 − e^{−β}),
      ζ = −log(1 − (1 − e^{−β}) u) / β  for u ~ U(0, 1).

  `expm1`/`log1p` keep every term accurate for β from ~0 to well beyond 100.

  ```python
  r = ExponentialSmoothing(beta=10.)
  r.cdf(0.1)  # (1 − e^{−1}) / (1 − e^{−10})
  ```
  """

  def _log_prob(self, x):
    beta = tf.convert_to_tensor(self.beta)
    return tf.math.log(beta) - beta * x - tf.math.log(-tf.math.expm1(-beta))

  def _cdf(self, x):
    return tf.math.expm1(-self.beta * x) / tf.math.expm1(-self.beta)

  def _survival_function(self, x):
    # (e^{−βζ} − e^{−β}) / (1 − e^{−β}) = e^{−βζ} (e^{−β(1−ζ)} − 1) / (e^{−β} − 1): no cancellation.
    beta = tf.convert_to_tensor(self.beta)
    return tf.exp(-beta * x) * tf.math.expm1(-beta * (1. - x)) / tf.math.expm1(-beta)

  def _quantile(self, p):
    return -tf.math.log1p(p * tf.math.expm1(-self.beta)) / self.beta

  def _mean(self):
    # 1/β − e^{−β}/(1 − e^{−β}).
    return tf.math.reciprocal(self.beta) + tf.exp(-self.beta) / tf.math.expm1(-self.beta)


class PowerSmoothing(_BetaSmoothing):
  """Power-function smoothing on [0, 1] (DVAE++, DVAE#).

  #### Mathematical Details

      r(ζ|0) = λ ζ^{λ−1},  λ = 1/β,      R(ζ|0) = ζ^λ,      ζ = u^β  for u ~ U(0, 1).

  The density is infinite at ζ = 0, and for large β most of the mass lies below float32's
  resolution (at β = 100, 85 % of it lies below 2⁻²⁴). The log density is therefore evaluated at
  max(ζ, δ) with δ = 2⁻²⁴ (float32's gap below 1; `epsneg` of the dtype): the same floor that the
  mirrored component r(1 − ζ|0) meets automatically, since 1 − ζ is either 0 or ≥ 2⁻²⁴. This
  keeps log r and its ζ-derivative (λ − 1)/ζ bounded (|·| ≤ 1.7e7) at the exact end points; the
  reference implementation adds 1e-7 inside the power for the same reason. The CDF is exact
  (R(0) = 0), computed as exp(λ log ζ) behind a double `where` so that its gradients are finite at
  ζ = 0.

  ```python
  r = PowerSmoothing(beta=30.)
  r.sample(1000, seed=[1, 2])  # mostly tiny values
  ```
  """

  def _log_prob(self, x):
    beta = tf.convert_to_tensor(self.beta)
    floor = np.finfo(dtype_util.as_numpy_dtype(self.dtype)).epsneg
    return -tf.math.log(beta) + (tf.math.reciprocal(beta) - 1.) * tf.math.log(tf.maximum(x, floor))

  def _log_cdf_positive(self, x):
    """λ log ζ, with ζ = 0 replaced by 1 so that the unused branch of a `where` stays finite."""
    positive = x > 0.
    return positive, tf.math.log(tf.where(positive, x, 1.)) / self.beta

  def _cdf(self, x):
    positive, log_cdf = self._log_cdf_positive(x)
    return tf.where(positive, tf.exp(log_cdf), 0.)

  def _survival_function(self, x):
    positive, log_cdf = self._log_cdf_positive(x)
    return tf.where(positive, -tf.math.expm1(log_cdf), 1.)

  def _quantile(self, p):
    positive = p > 0.
    return tf.where(positive, tf.exp(self.beta * tf.math.log(tf.where(positive, p, 1.))), 0.)

  def _mean(self):
    return tf.math.reciprocal(1. + self.beta)


class GaussianSmoothing(_Smoothing):
  """Gaussian smoothing N(ζ; μ, σ²) on the real line.

  #### Mathematical Details

      r(ζ|0) = N(ζ; μ, σ²),      R(ζ|0) = Φ((ζ − μ)/σ),      ζ = μ + σ Φ⁻¹(u).

  DVAE# Gaussian smoothing uses μ = 0, σ = β^{−1/2}; the Gaussian-integral posterior uses
  μ = δμ and a learned σ.

  ```python
  r = GaussianSmoothing(loc=0., scale=0.2)
  ```
  """

  _low = -np.inf
  _high = np.inf
  _positive_parameters = ("scale",)

  def __init__(self, loc, scale, validate_args=False, allow_nan_stats=True,
               name="GaussianSmoothing"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([loc, scale], dtype_hint=tf.float32)
      self._loc = tensor_util.convert_nonref_to_tensor(loc, dtype=dtype, name="loc")
      self._scale = tensor_util.convert_nonref_to_tensor(scale, dtype=dtype, name="scale")
      super().__init__(dtype=dtype,
                       reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(loc=parameter_properties.ParameterProperties(),
                scale=parameter_properties.ParameterProperties(
                    default_constraining_bijector_fn=lambda: _positive(dtype)))

  @property
  def loc(self):
    return self._loc

  @property
  def scale(self):
    return self._scale

  def _z(self, x):
    return (x - self.loc) / self.scale

  def _log_prob(self, x):
    return -0.5 * tf.square(self._z(x)) - tf.math.log(self.scale) - 0.5 * np.log(2. * np.pi)

  def _cdf(self, x):
    return special_math.ndtr(self._z(x))

  def _survival_function(self, x):
    return special_math.ndtr(-self._z(x))

  def _quantile(self, p):
    return self.loc + self.scale * tf.math.ndtri(p)

  def _mean(self):
    return self.loc * tf.ones_like(self.scale)


class UniformExponentialSmoothing(_Smoothing):
  """Uniform + exponential smoothing on [0, 1] (DVAE#).

  #### Mathematical Details

      r(ζ|0) = ε + (1 − ε) β e^{−βζ} / (1 − e^{−β}),      R(ζ|0) = ε ζ + (1 − ε) R_exp(ζ),

  sampled by choosing the uniform component with probability ε. The uniform floor keeps
  log r(ζ|0) ≥ log ε, so that log r(ζ|1) − log r(ζ|0) stays bounded.

  ```python
  r = UniformExponentialSmoothing(beta=16., eps=0.05)
  ```
  """

  _positive_parameters = ("beta", "eps")

  def __init__(self, beta, eps=0.05, validate_args=False, allow_nan_stats=True,
               name="UniformExponentialSmoothing"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([beta, eps], dtype_hint=tf.float32)
      self._beta = tensor_util.convert_nonref_to_tensor(beta, dtype=dtype, name="beta")
      self._eps = tensor_util.convert_nonref_to_tensor(eps, dtype=dtype, name="eps")
      self._exponential = ExponentialSmoothing(self._beta, validate_args=validate_args)
      super().__init__(dtype=dtype,
                       reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(
        beta=parameter_properties.ParameterProperties(
            default_constraining_bijector_fn=lambda: _positive(dtype)),
        eps=parameter_properties.ParameterProperties(
            default_constraining_bijector_fn=sigmoid_bijector.Sigmoid))

  @property
  def beta(self):
    return self._beta

  @property
  def eps(self):
    return self._eps

  def _log_prob(self, x):
    eps = tf.convert_to_tensor(self.eps)
    return tfp.math.log_add_exp(tf.math.log(eps),
                                tf.math.log1p(-eps) + self._exponential.log_prob(x))

  def _cdf(self, x):
    return self.eps * x + (1. - self.eps) * self._exponential.cdf(x)

  def _survival_function(self, x):
    return self.eps * (1. - x) + (1. - self.eps) * self._exponential.survival_function(x)

  def _draw(self, shape, seed):
    component_seed, value_seed = samplers.split_seed(seed, salt="UniformExponentialSmoothing")
    uniform = samplers.uniform(shape, dtype=self.dtype, seed=value_seed)
    is_uniform = samplers.uniform(shape, dtype=self.dtype, seed=component_seed) < self.eps
    return tf.where(is_uniform, uniform, self._exponential.quantile(uniform))

  def _mean(self):
    return 0.5 * self.eps + (1. - self.eps) * self._exponential.mean()


# --------------------------------------------------------------------------------------------
# Relaxed posteriors q(ζ|x).
# --------------------------------------------------------------------------------------------

class _Relaxation(tfd.Distribution):
  """What every relaxed posterior offers besides the distribution methods.

  Subclasses provide `logits` and the smoothing terms `log_ratio` (b(ζ) of SPEC §3.1) and
  `smoothing_log_prob` (the summands of c(ζ)).
  """

  @property
  def logits(self):
    """The logits l of q(z=1|x) = σ(l)."""
    return self._logits

  def _event_shape_tensor(self):
    return tf.constant([], dtype=tf.int32)

  def _event_shape(self):
    return tf.TensorShape([])

  def conditional_probs(self, zeta, name="conditional_probs"):
    """q(z=1|ζ, x) = q r(ζ|1) / ((1 − q) r(ζ|0) + q r(ζ|1)) = σ(l + log r(ζ|1) − log r(ζ|0))."""
    with tf.name_scope(name):
      return tf.sigmoid(self.logits + self.log_ratio(zeta))

  def discrete(self):
    """The factorial Bernoulli q(z|x) that ζ relaxes (binary int32 samples, as tfd.Bernoulli)."""
    return tfd.Bernoulli(logits=self.logits)


class OverlappingMixture(_Relaxation):
  """q(ζ|x) = (1 − q) r(ζ|0) + q r(ζ|1), q = σ(l): one mixture for every smoothing family.

  #### Mathematical Details

  With the smoothing r(ζ|0) given as a distribution with CDF R(ζ|0),

      mirrored:  r(ζ|1) = r(1 − ζ|0),  R(ζ|1) = 1 − R(1 − ζ|0),
      shifted:   r(ζ|1) = r(ζ − 1|0),  R(ζ|1) = R(ζ − 1|0),
      F(ζ)      = (1 − q) R(ζ|0) + q R(ζ|1).

  Sampling is ancestral: z ~ Bern(q), then ζ ~ r(ζ|z) (a sample ζ₀ of r(·|0) mapped to 1 − ζ₀ or
  1 + ζ₀ when z = 1). The sample's gradient with respect to l and to every parameter θ of the
  smoothing is the implicit one, ∂ζ/∂θ = −(∂F/∂θ)/q(ζ|x); for the logits

      ∂ζ/∂l = q (1 − q) (R(ζ|0) − R(ζ|1)) / ((1 − q) r(ζ|0) + q r(ζ|1)).

  `log_prob` is log((1 − q) r(ζ|0) + q r(ζ|1)) computed as a log-sum-exp, finite for logits in
  [−88, 88] wherever the smoothing's log density is.

  ```python
  q = OverlappingMixture(logits, ExponentialSmoothing(beta=10.))
  zeta = q.sample(seed=[0, 1])
  ```
  """

  def __init__(self, logits, smoothing, mirrored=True, validate_args=False, allow_nan_stats=True,
               name="OverlappingMixture"):
    """Builds the mixture.

    Args:
      logits: float tensor, the logits l of q(z=1|x); the batch shape.
      smoothing: a `_Smoothing` distribution r(ζ|z=0) whose batch shape broadcasts with `logits`.
      mirrored: Python bool; r(ζ|1) = r(1 − ζ|0) if True, r(ζ − 1|0) if False.
      validate_args, allow_nan_stats, name: as for every `tfd.Distribution`.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._logits = tensor_util.convert_nonref_to_tensor(
          logits, dtype=smoothing.dtype, name="logits")
      self._smoothing = smoothing
      self._mirrored = mirrored
      super().__init__(dtype=smoothing.dtype,
                       reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(logits=parameter_properties.ParameterProperties(),
                smoothing=parameter_properties.BatchedComponentProperties())

  @property
  def smoothing(self):
    """r(ζ|z=0)."""
    return self._smoothing

  @property
  def mirrored(self):
    return self._mirrored

  def _to_component_zero(self, x):
    """The argument at which r(·|0) evaluates r(x|1)."""
    return 1. - x if self._mirrored else x - 1.

  def _component_one_cdf(self, x):
    if self._mirrored:
      return self.smoothing.survival_function(1. - x)
    return self.smoothing.cdf(x - 1.)

  def smoothing_log_prob(self, zeta, name="smoothing_log_prob"):
    """log r(ζ|z=0), elementwise."""
    with tf.name_scope(name):
      return self.smoothing.log_prob(zeta) * tf.ones_like(self.logits)

  def log_ratio(self, zeta, name="log_ratio"):
    """b(ζ) = log r(ζ|z=1) − log r(ζ|z=0), elementwise."""
    with tf.name_scope(name):
      zeta = tf.convert_to_tensor(zeta, dtype=self.dtype)
      return (self.smoothing.log_prob(self._to_component_zero(zeta))
              - self.smoothing.log_prob(zeta)) * tf.ones_like(self.logits)

  def _log_prob(self, x):
    logits = tf.convert_to_tensor(self.logits)
    return tfp.math.log_add_exp(
        -tf.nn.softplus(logits) + self.smoothing.log_prob(x),
        -tf.nn.softplus(-logits) + self.smoothing.log_prob(self._to_component_zero(x)))

  def _cdf(self, x):
    logits = tf.convert_to_tensor(self.logits)
    cdf_zero = self.smoothing.cdf(x)
    cdf_one = self._component_one_cdf(x)
    # F = R0 + q (R1 − R0) = R1 − (1 − q)(R1 − R0). The implicit gradient differentiates F in l,
    # and σ's derivative σ(1 − σ) is accurate in float32 only where σ ≤ ½, so l enters through
    # whichever of q, 1 − q is the smaller.
    return tf.where(logits < 0., cdf_zero + tf.sigmoid(logits) * (cdf_one - cdf_zero),
                    cdf_one - tf.sigmoid(-logits) * (cdf_one - cdf_zero))

  def _draw(self, shape, seed):
    bernoulli_seed, smoothing_seed = samplers.split_seed(seed, salt="OverlappingMixture")
    z = samplers.uniform(shape, dtype=self.dtype, seed=bernoulli_seed) < tf.sigmoid(self.logits)
    zeta0 = self.smoothing._draw(shape, smoothing_seed)  # pylint: disable=protected-access
    return tf.where(z, 1. - zeta0 if self._mirrored else 1. + zeta0, zeta0)

  def _sample_n(self, n, seed=None):
    shape = ps.concat([[n], self.batch_shape_tensor()], axis=0)
    return _implicitly_reparameterized(self, self._draw(shape, seed))

  def _mean(self):
    q = tf.sigmoid(self.logits)
    mean_zero = self.smoothing.mean()
    mean_one = 1. - mean_zero if self._mirrored else 1. + mean_zero
    return (1. - q) * mean_zero + q * mean_one


class SpikeAndExponential(_Relaxation):
  """DVAE's spike-and-exponential relaxation (Rolfe, 2016).

  #### Mathematical Details

      r(ζ|0) = δ(ζ),      r(ζ|1) = β e^{β(ζ−1)} / (1 − e^{−β})  on [0, 1],
      F(ζ)   = (1 − q) + q R(ζ|1)  for ζ ≥ 0,

  with q = σ(l) clipped to [1e-7, 1 − 1e-7] as in the reference. A sample is the inverse CDF of the
  whole mixture at ρ = 1 − v, v ~ U[0, 1): ζ = 0 if ρ ≤ 1 − q, else

      ζ = (1/β) log(1 + (e^β − 1) t),  t = (ρ − 1 + q)/q;

  its gradient with respect to l (and β) is ordinary automatic differentiation of that formula,
  and zero on the spike.

  Densities are with respect to the measure δ₀ + Lebesgue: `log_prob` is log(1 − q) at ζ = 0 (the
  spike's mass) and log q + log r(ζ|1) for ζ > 0. Likewise `smoothing_log_prob` is log r(ζ|0) =
  0 at ζ = 0 and log 0 for ζ > 0, and `log_ratio` is −log 0 for ζ > 0 and log 0 at ζ = 0, with log 0
  represented by the finite −1e30; `conditional_probs` is therefore exactly 1[ζ > 0].

  ```python
  q = SpikeAndExponential(logits, beta=5.)
  zeta = q.sample(seed=[0, 1])  # exactly 0 with probability 1 − q
  ```
  """

  def __init__(self, logits, beta, validate_args=False, allow_nan_stats=True,
               name="SpikeAndExponential"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([logits, beta], dtype_hint=tf.float32)
      self._logits = tensor_util.convert_nonref_to_tensor(logits, dtype=dtype, name="logits")
      self._beta = tensor_util.convert_nonref_to_tensor(beta, dtype=dtype, name="beta")
      self._exponential = ExponentialSmoothing(self._beta, validate_args=validate_args)
      super().__init__(dtype=dtype,
                       reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(logits=parameter_properties.ParameterProperties(),
                beta=parameter_properties.ParameterProperties(
                    default_constraining_bijector_fn=lambda: _positive(dtype)))

  @property
  def beta(self):
    return self._beta

  def _probs(self):
    return tf.clip_by_value(tf.sigmoid(self.logits), _SPIKE_PROB_CLIP, 1. - _SPIKE_PROB_CLIP)

  def smoothing_log_prob(self, zeta, name="smoothing_log_prob"):
    """log r(ζ|z=0): 0 on the spike, log 0 (as −1e30) elsewhere."""
    with tf.name_scope(name):
      zeta = tf.convert_to_tensor(zeta, dtype=self.dtype)
      log_zero = tf.constant(_LOG_ZERO, self.dtype)
      return tf.where(zeta > 0., log_zero, 0.) * tf.ones_like(self.logits)

  def log_ratio(self, zeta, name="log_ratio"):
    """log r(ζ|1) − log r(ζ|0) = ±∞ (as ∓1e30), the sign telling the spike from the slab."""
    with tf.name_scope(name):
      zeta = tf.convert_to_tensor(zeta, dtype=self.dtype)
      log_zero = tf.constant(_LOG_ZERO, self.dtype)
      return tf.where(zeta > 0., -log_zero, log_zero) * tf.ones_like(self.logits)

  def _log_prob(self, x):
    q = self._probs()
    return tf.where(x > 0., tf.math.log(q) + self._exponential.log_prob(1. - x),
                    tf.math.log1p(-q))

  def _cdf(self, x):
    q = self._probs()
    return 1. - q + q * self._exponential.survival_function(1. - x)

  def _sample_n(self, n, seed=None):
    q = self._probs()
    beta = tf.convert_to_tensor(self.beta)
    shape = ps.concat([[n], self.batch_shape_tensor()], axis=0)
    v = samplers.uniform(shape, dtype=self.dtype, seed=seed)
    slab = v < q
    # t = (ρ − 1 + q)/q ∈ (0, 1] on the slab; the spike branch gets t = 1 so that its unused
    # value and gradient stay finite. (1/β) log(1 + (e^β − 1) t) = 1 + (1/β) log(t + (1 − t) e^{−β})
    # never overflows, and q − v is exact where v is close to q.
    t = tf.where(slab, (q - v) / q, 1.)
    return tf.where(slab, 1. + tf.math.log(t + (1. - t) * tf.exp(-beta)) / beta, 0.)

  def _mean(self):
    return self._probs() * (1. - self._exponential.mean())


# --------------------------------------------------------------------------------------------
# Entry points.
# --------------------------------------------------------------------------------------------

def _check_beta(name, beta):
  if beta is None:
    raise ValueError(f"{name!r} needs beta, a positive number or float tensor; got None.")
  if isinstance(beta, (int, float, np.number)) and not beta > 0:
    raise ValueError(f"beta must be a positive number (β > 0); got {beta!r}.")


def _check_keywords(name, kw, allowed):
  unknown = sorted(set(kw) - set(allowed))
  if unknown:
    raise ValueError(f"Unknown argument(s) {unknown} for {name!r}; allowed: {sorted(allowed)}.")


def smoothing(name, beta, **kw):
  """The smoothing distribution r(ζ|z=0) of family `name`, parameterized by β (SPEC §2).

  Args:
    name: one of "exponential", "power", "gaussian" (N(0, 1/β)), "uniform_exponential".
    beta: positive float or float tensor, the sharpness β.
    **kw: `eps` (default 0.05, in (0, 1)) for "uniform_exponential"; nothing for the others.

  Returns:
    A `tfd.Distribution` with reparameterized `sample`, `log_prob`, `prob`, `cdf` and support
    bounds `low`, `high`.

  Raises:
    ValueError: unknown name or keyword, β ≤ 0, ε outside (0, 1).
  """
  if name not in SMOOTHINGS:
    raise ValueError(f"Unknown smoothing {name!r}; allowed values: {', '.join(SMOOTHINGS)}.")
  _check_beta(name, beta)
  _check_keywords(name, kw, ("eps",) if name == "uniform_exponential" else ())
  if name == "exponential":
    return ExponentialSmoothing(beta)
  if name == "power":
    return PowerSmoothing(beta)
  if name == "gaussian":
    beta = tf.convert_to_tensor(beta, dtype_hint=tf.float32)
    return GaussianSmoothing(loc=tf.zeros([], beta.dtype), scale=tf.math.rsqrt(beta))
  eps = kw.get("eps", 0.05)
  if isinstance(eps, (int, float, np.number)) and not 0 < eps < 1:
    raise ValueError(f"eps must lie in the open interval (0, 1); got {eps!r}.")
  return UniformExponentialSmoothing(beta, eps=eps)


def posterior(name, logits, beta=None, **kw):
  """The relaxed posterior q(ζ|x) for Bernoulli logits `logits` (batch shape = logits' shape).

  Args:
    name: "spike_exp" (DVAE), "exponential", "power", "gaussian", "uniform_exponential" (mirrored
      mixtures of `smoothing(name, beta)`), or "shifted_gaussian" (DVAE#'s Gaussian integral:
      components N(ζ; z + δμ, σ²)).
    logits: float tensor, the logits l of q(z=1|x).
    beta: positive float or tensor; required by all but "shifted_gaussian", which ignores it.
    **kw: `eps` for "uniform_exponential"; `delta_mu` (default 0) and `scale` (σ, required) for
      "shifted_gaussian", tensors broadcastable to `logits`.

  Returns:
    A distribution with `sample`, `log_prob`, `prob`, `cdf`, `log_ratio`, `smoothing_log_prob`,
    `conditional_probs`, `discrete()` and `logits`; `sample` has implicit reparameterization
    gradients to `logits`, β, `delta_mu` and `scale`.

  Raises:
    ValueError: unknown name or keyword, β ≤ 0, missing `scale`.
  """
  if name not in POSTERIORS:
    raise ValueError(f"Unknown posterior {name!r}; allowed values: {', '.join(POSTERIORS)}.")
  if name == "shifted_gaussian":
    _check_keywords(name, kw, ("delta_mu", "scale"))
    if kw.get("scale") is None:
      raise ValueError("'shifted_gaussian' needs scale (σ > 0), a float tensor broadcastable to "
                       "logits.")
    logits = tf.convert_to_tensor(logits, dtype_hint=tf.float32)
    return OverlappingMixture(
        logits, GaussianSmoothing(loc=tf.cast(kw.get("delta_mu", 0.), logits.dtype),
                                  scale=tf.cast(kw["scale"], logits.dtype)),
        mirrored=False)
  _check_beta(name, beta)
  if name == "spike_exp":
    _check_keywords(name, kw, ())
    return SpikeAndExponential(logits, beta)
  logits = tf.convert_to_tensor(logits, dtype_hint=tf.float32)
  return OverlappingMixture(logits, smoothing(name, tf.cast(beta, logits.dtype), **kw))
