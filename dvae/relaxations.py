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

Every distribution here is a scalar distribution on an interval [`low`, `high`] (ℝ for the
Gaussian families): `log_prob` is −∞ and `prob` 0 outside it, `cdf` is 0 below and 1 above it.
With `validate_args=True`, invalid parameters (β, σ ≤ 0 or not finite, ε outside (0, 1)) raise at
construction (at use, for variables) and points outside the support raise in `log_prob`/`cdf`;
the default is False, as everywhere in TFP: the checks are assertion ops on every call, and
Python-number parameters are checked by `smoothing` and `posterior` regardless. The
distributions are `CompositeTensor`s (`tfd.AutoCompositeTensorDistribution`), so they pass into
and out of `tf.function` like `tfd.Bernoulli`.

Example:

    q = posterior("power", logits, beta=30.)
    zeta = q.sample(seed=[1, 2])           # shape of logits; differentiable in logits
    log_q = q.log_prob(zeta)
    b = q.log_ratio(zeta)                  # log r(ζ|1) − log r(ζ|0)
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
# TFP offers no public form of these two: the dtype common to a distribution's parameters, and
# the conversion to tensors that leaves variables (and other "refs") unconverted, so that their
# validity is checked at use rather than at construction. Everything else here is public TFP.
from tensorflow_probability.python.internal import dtype_util
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
  return tfp.bijectors.Softplus(low=np.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps)


def _uniform(shape, seed, dtype, minval=0.):
  """U(minval, 1) noise from a stateless seed (an int32 pair, or anything TFP accepts)."""
  return tf.random.stateless_uniform(shape, seed=tfp.random.sanitize_seed(seed), minval=minval,
                                     dtype=dtype)


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
  shape = tf.shape(draw)
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
# What every distribution here shares: a scalar on an interval.
# --------------------------------------------------------------------------------------------

class _OnInterval(tfd.AutoCompositeTensorDistribution):
  """A scalar distribution on the interval [`low`, `high`] (ends may be ±∞).

  Subclasses give the log density `_log_density` and the distribution function `_cdf_inside`
  (and, where 1 − F loses accuracy, `_survival_inside`) for points of the interval, and `_draw`,
  samples before the implicit gradient is attached (or `_sample_n`, for a gradient of their
  own). This class makes `log_prob` −∞ outside the interval, evaluating the density only at
  points clipped into it so that gradients stay finite on both branches of the `where`; makes F
  0 below and 1 above the interval; puts draws that rounding carried past an end back onto it;
  and, under `validate_args`, checks the parameters named in `_positive_parameters` (positive and
  finite) and `_probability_parameters` (in (0, 1)), and that points given to `log_prob`/`cdf`
  lie in the interval.
  """

  _low = 0.
  _high = 1.
  _positive_parameters = ()
  _probability_parameters = ()

  @property
  def low(self) -> float:
    """Lower end of the support (a Python float)."""
    return self._low

  @property
  def high(self) -> float:
    """Upper end of the support (a Python float)."""
    return self._high

  def _event_shape_tensor(self):
    return tf.constant([], dtype=tf.int32)

  def _event_shape(self):
    return tf.TensorShape([])

  def _clip(self, x):
    return tf.clip_by_value(x, tf.cast(self.low, x.dtype), tf.cast(self.high, x.dtype))

  def _log_prob(self, x):
    outside = (x < self.low) | (x > self.high)
    return tf.where(outside, tf.constant(-np.inf, self.dtype), self._log_density(self._clip(x)))

  # The `where`s keep an atom at `low` (spike-and-exp) out of F below it.
  def _cdf(self, x):
    return tf.where(x < self.low, tf.zeros([], self.dtype), self._cdf_inside(self._clip(x)))

  def _survival_function(self, x):
    return tf.where(x < self.low, tf.ones([], self.dtype), self._survival_inside(self._clip(x)))

  def _survival_inside(self, x):
    return 1. - self._cdf_inside(x)

  def _sample_n(self, n, seed=None):
    shape = tf.concat([[n], self.batch_shape_tensor()], axis=0)
    return _implicitly_reparameterized(self, self._clip(self._draw(shape, seed)))

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    checks = []
    for name in self._positive_parameters + self._probability_parameters:
      value = getattr(self, name)
      if is_init == tensor_util.is_ref(value):
        continue
      upper = 1. if name in self._probability_parameters else np.inf
      interval = "in (0, 1)" if upper == 1. else "positive and finite"
      checks.append(tf.debugging.Assert(tf.reduce_all((value > 0.) & (value < upper)),
                                        [f"`{name}` must be {interval}; got", value]))
    return checks

  def _sample_control_dependencies(self, x):
    if not self.validate_args:
      return []
    return [tf.debugging.Assert(tf.reduce_all((x >= self.low) & (x <= self.high)),
                                [f"Points must lie in the support [{self.low}, {self.high}]; got",
                                 x])]


# --------------------------------------------------------------------------------------------
# Smoothing families r(ζ|z=0).
# --------------------------------------------------------------------------------------------

class _Smoothing(_OnInterval):
  """Scalar smoothing distribution r(ζ|z=0) with support [`low`, `high`].

  Subclasses give `_log_density`, `_cdf_inside`, `_survival_inside` (accurate near 1: the
  mirrored component needs R(ζ|1) = 1 − R(1 − ζ|0)), `_mean`, and either a quantile function
  `_quantile` or their own `_draw`; samples carry the implicit reparameterization gradient with
  respect to every parameter.
  """

  def _draw(self, shape, seed):
    """Samples of the given (broadcast) shape, by inversion of a uniform in (0, 1)."""
    # The smallest normal number as lower bound keeps unbounded quantiles finite.
    tiny = np.finfo(self.dtype.as_numpy_dtype).tiny
    return self._quantile(_uniform(shape, seed, self.dtype, minval=tiny))


class _BetaSmoothing(_Smoothing):
  """A smoothing family with one sharpness parameter β > 0 (exponential, power-function)."""

  _positive_parameters = ("beta",)

  def __init__(self, beta: float | tf.Tensor | tf.Variable, validate_args: bool = False,
               allow_nan_stats: bool = True, name: str | None = None):
    """Builds r(ζ|z=0) of sharpness β.

    Args:
      beta: β > 0: a Python number, or a float tensor or variable whose shape is the batch shape.
      validate_args, allow_nan_stats, name: as for every `tfd.Distribution` (`name` defaults to
        the class's).
    """
    parameters = dict(locals())
    with tf.name_scope(name or type(self).__name__) as name:
      dtype = dtype_util.common_dtype([beta], dtype_hint=tf.float32)
      self._beta = tensor_util.convert_nonref_to_tensor(beta, dtype=dtype, name="beta")
      super().__init__(dtype=dtype,
                       reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(beta=tfp.util.ParameterProperties(
        default_constraining_bijector_fn=lambda: _positive(dtype)))

  @property
  def beta(self) -> tf.Tensor | tf.Variable:
    """The sharpness β (a variable stays a variable)."""
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

  def _log_density(self, x):
    beta = tf.convert_to_tensor(self.beta)
    return tf.math.log(beta) - beta * x - tf.math.log(-tf.math.expm1(-beta))

  def _cdf_inside(self, x):
    return tf.math.expm1(-self.beta * x) / tf.math.expm1(-self.beta)

  def _survival_inside(self, x):
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

  def _log_density(self, x):
    beta = tf.convert_to_tensor(self.beta)
    floor = np.finfo(self.dtype.as_numpy_dtype).epsneg
    return -tf.math.log(beta) + (tf.math.reciprocal(beta) - 1.) * tf.math.log(tf.maximum(x, floor))

  def _log_cdf_positive(self, x):
    """λ log ζ, with ζ = 0 replaced by 1 so that the unused branch of a `where` stays finite."""
    positive = x > 0.
    return positive, tf.math.log(tf.where(positive, x, 1.)) / self.beta

  def _cdf_inside(self, x):
    positive, log_cdf = self._log_cdf_positive(x)
    return tf.where(positive, tf.exp(log_cdf), 0.)

  def _survival_inside(self, x):
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
  μ = δμ and a learned σ. Densities and quantiles are those of `tfd.Normal`; this class adds
  the implicit gradient of its samples and the interface the overlapping mixture needs.

  ```python
  r = GaussianSmoothing(loc=0., scale=0.2)
  ```
  """

  _low = -np.inf
  _high = np.inf
  _positive_parameters = ("scale",)

  def __init__(self, loc: float | tf.Tensor | tf.Variable, scale: float | tf.Tensor | tf.Variable,
               validate_args: bool = False, allow_nan_stats: bool = True,
               name: str = "GaussianSmoothing"):
    """Builds N(ζ; μ, σ²).

    Args:
      loc: the mean μ; broadcasts with `scale` to the batch shape.
      scale: the standard deviation σ > 0.
      validate_args, allow_nan_stats, name: as for every `tfd.Distribution`.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([loc, scale], dtype_hint=tf.float32)
      self._loc = tensor_util.convert_nonref_to_tensor(loc, dtype=dtype, name="loc")
      self._scale = tensor_util.convert_nonref_to_tensor(scale, dtype=dtype, name="scale")
      self._normal = tfd.Normal(self._loc, self._scale)
      super().__init__(dtype=dtype,
                       reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(loc=tfp.util.ParameterProperties(),
                scale=tfp.util.ParameterProperties(
                    default_constraining_bijector_fn=lambda: _positive(dtype)))

  @property
  def loc(self) -> tf.Tensor | tf.Variable:
    """The mean μ (a variable stays a variable)."""
    return self._loc

  @property
  def scale(self) -> tf.Tensor | tf.Variable:
    """The standard deviation σ (a variable stays a variable)."""
    return self._scale

  def _log_density(self, x):
    return self._normal.log_prob(x)

  def _cdf_inside(self, x):
    return self._normal.cdf(x)

  def _survival_inside(self, x):
    return self._normal.survival_function(x)

  def _quantile(self, p):
    return self._normal.quantile(p)

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

  _positive_parameters = ("beta",)
  _probability_parameters = ("eps",)

  def __init__(self, beta: float | tf.Tensor | tf.Variable,
               eps: float | tf.Tensor | tf.Variable = 0.05, validate_args: bool = False,
               allow_nan_stats: bool = True, name: str = "UniformExponentialSmoothing"):
    """Builds the mixture of U[0, 1] (weight ε) and the truncated exponential of sharpness β.

    Args:
      beta: β > 0 of the exponential component; broadcasts with `eps` to the batch shape.
      eps: the uniform component's weight ε, in (0, 1).
      validate_args, allow_nan_stats, name: as for every `tfd.Distribution`.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([beta, eps], dtype_hint=tf.float32)
      self._beta = tensor_util.convert_nonref_to_tensor(beta, dtype=dtype, name="beta")
      self._eps = tensor_util.convert_nonref_to_tensor(eps, dtype=dtype, name="eps")
      self._exponential = ExponentialSmoothing(self._beta, validate_args=validate_args)
      super().__init__(dtype=dtype,
                       reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(
        beta=tfp.util.ParameterProperties(
            default_constraining_bijector_fn=lambda: _positive(dtype)),
        eps=tfp.util.ParameterProperties(
            default_constraining_bijector_fn=tfp.bijectors.Sigmoid))

  @property
  def beta(self) -> tf.Tensor | tf.Variable:
    """The sharpness β of the exponential component (a variable stays a variable)."""
    return self._beta

  @property
  def eps(self) -> tf.Tensor | tf.Variable:
    """The weight ε of the uniform component (a variable stays a variable)."""
    return self._eps

  def _log_density(self, x):
    eps = tf.convert_to_tensor(self.eps)
    return tfp.math.log_add_exp(tf.math.log(eps),
                                tf.math.log1p(-eps) + self._exponential.log_prob(x))

  def _cdf_inside(self, x):
    return self.eps * x + (1. - self.eps) * self._exponential.cdf(x)

  def _survival_inside(self, x):
    return self.eps * (1. - x) + (1. - self.eps) * self._exponential.survival_function(x)

  def _draw(self, shape, seed):
    component_seed, value_seed = tfp.random.split_seed(seed)
    uniform = _uniform(shape, value_seed, self.dtype)
    is_uniform = _uniform(shape, component_seed, self.dtype) < self.eps
    return tf.where(is_uniform, uniform, self._exponential.quantile(uniform))

  def _mean(self):
    return 0.5 * self.eps + (1. - self.eps) * self._exponential.mean()


# --------------------------------------------------------------------------------------------
# Relaxed posteriors q(ζ|x).
# --------------------------------------------------------------------------------------------

class _Relaxation(_OnInterval):
  """What every relaxed posterior offers besides the distribution methods.

  Subclasses provide `logits`, the support `low`, `high`, and the smoothing terms `log_ratio`
  (b(ζ) of SPEC §3.1) and `smoothing_log_prob` (the summands of c(ζ)), which are defined on the
  support.
  """

  @property
  def logits(self) -> tf.Tensor | tf.Variable:
    """The logits l of q(z=1|x) = σ(l)."""
    return self._logits

  def conditional_probs(self, zeta: tf.Tensor,
                        name: str = "conditional_probs") -> tf.Tensor:
    """q(z=1|ζ, x) = q r(ζ|1) / ((1 − q) r(ζ|0) + q r(ζ|1)) = σ(l + log r(ζ|1) − log r(ζ|0)).

    Args:
      zeta: ζ in the support, broadcastable with `logits` (e.g. a sample).
      name: name scope of the ops.

    Returns:
      The probabilities, elementwise in the broadcast shape of `zeta` and `logits`.
    """
    with tf.name_scope(name):
      return tf.sigmoid(self.logits + self.log_ratio(zeta))

  def discrete(self) -> tfd.Bernoulli:
    """The factorial Bernoulli q(z|x) that ζ relaxes (binary int32 samples, as tfd.Bernoulli).

    Returns:
      A `tfd.Bernoulli` with this distribution's `logits`.
    """
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

  def __init__(self, logits: tf.Tensor | tf.Variable, smoothing: _Smoothing,
               mirrored: bool = True, validate_args: bool = False, allow_nan_stats: bool = True,
               name: str = "OverlappingMixture"):
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
                       reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(logits=tfp.util.ParameterProperties(),
                smoothing=tfp.util.BatchedComponentProperties())

  @property
  def smoothing(self) -> _Smoothing:
    """r(ζ|z=0)."""
    return self._smoothing

  @property
  def mirrored(self) -> bool:
    """True if r(ζ|1) = r(1 − ζ|0) (mirrored), False if r(ζ|1) = r(ζ − 1|0) (shifted)."""
    return self._mirrored

  @property
  def low(self) -> float:
    """Lower end of the support: the lower of those of r(ζ|0) and r(ζ|1)."""
    low, high = self.smoothing.low, self.smoothing.high
    return min(low, 1. - high if self._mirrored else low + 1.)

  @property
  def high(self) -> float:
    """Upper end of the support: the higher of those of r(ζ|0) and r(ζ|1)."""
    low, high = self.smoothing.low, self.smoothing.high
    return max(high, 1. - low if self._mirrored else high + 1.)

  def _parameter_control_dependencies(self, is_init):
    checks = list(super()._parameter_control_dependencies(is_init))
    if not is_init:  # At construction the smoothing checked itself; variables are checked at use.
      checks += self.smoothing._parameter_control_dependencies(is_init=False)  # pylint: disable=protected-access
    return checks

  def _to_component_zero(self, x):
    """The argument at which r(·|0) evaluates r(x|1)."""
    return 1. - x if self._mirrored else x - 1.

  def _component_one_cdf(self, x):
    if self._mirrored:
      return self.smoothing.survival_function(1. - x)
    return self.smoothing.cdf(x - 1.)

  def smoothing_log_prob(self, zeta: tf.Tensor,
                         name: str = "smoothing_log_prob") -> tf.Tensor:
    """log r(ζ|z=0), elementwise.

    Args:
      zeta: ζ, broadcastable with `logits`.
      name: name scope of the ops.

    Returns:
      log r(ζ|0) in the broadcast shape of `zeta` and `logits` (−∞ outside r's support).
    """
    with tf.name_scope(name):
      return self.smoothing.log_prob(zeta) * tf.ones_like(self.logits)

  def log_ratio(self, zeta: tf.Tensor, name: str = "log_ratio") -> tf.Tensor:
    """b(ζ) = log r(ζ|z=1) − log r(ζ|z=0), elementwise (NaN where both densities vanish).

    Args:
      zeta: ζ, broadcastable with `logits`.
      name: name scope of the ops.

    Returns:
      b(ζ) in the broadcast shape of `zeta` and `logits`.
    """
    with tf.name_scope(name):
      zeta = tf.convert_to_tensor(zeta, dtype=self.dtype)
      return (self.smoothing.log_prob(self._to_component_zero(zeta))
              - self.smoothing.log_prob(zeta)) * tf.ones_like(self.logits)

  def _log_density(self, x):
    logits = tf.convert_to_tensor(self.logits)
    return tfp.math.log_add_exp(
        -tf.nn.softplus(logits) + self.smoothing.log_prob(x),
        -tf.nn.softplus(-logits) + self.smoothing.log_prob(self._to_component_zero(x)))

  def _cdf_inside(self, x):
    logits = tf.convert_to_tensor(self.logits)
    cdf_zero = self.smoothing.cdf(x)
    cdf_one = self._component_one_cdf(x)
    # F = R0 + q (R1 − R0) = R1 − (1 − q)(R1 − R0). The implicit gradient differentiates F in l,
    # and σ's derivative σ(1 − σ) is accurate in float32 only where σ ≤ ½, so l enters through
    # whichever of q, 1 − q is the smaller.
    return tf.where(logits < 0., cdf_zero + tf.sigmoid(logits) * (cdf_one - cdf_zero),
                    cdf_one - tf.sigmoid(-logits) * (cdf_one - cdf_zero))

  def _draw(self, shape, seed):
    bernoulli_seed, smoothing_seed = tfp.random.split_seed(seed)
    z = _uniform(shape, bernoulli_seed, self.dtype) < tf.sigmoid(self.logits)
    zeta0 = self.smoothing._draw(shape, smoothing_seed)  # pylint: disable=protected-access
    return tf.where(z, 1. - zeta0 if self._mirrored else 1. + zeta0, zeta0)

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
  spike's mass), log q + log r(ζ|1) for 0 < ζ ≤ 1 and −∞ outside [0, 1]. Likewise `smoothing_log_prob` is log r(ζ|0) =
  0 at ζ = 0 and log 0 for ζ > 0, and `log_ratio` is −log 0 for ζ > 0 and log 0 at ζ = 0, with log 0
  represented by the finite −1e30; `conditional_probs` is therefore exactly 1[ζ > 0].

  ```python
  q = SpikeAndExponential(logits, beta=5.)
  zeta = q.sample(seed=[0, 1])  # exactly 0 with probability 1 − q
  ```
  """

  def __init__(self, logits: tf.Tensor | tf.Variable, beta: float | tf.Tensor | tf.Variable,
               validate_args: bool = False, allow_nan_stats: bool = True,
               name: str = "SpikeAndExponential"):
    """Builds the relaxation.

    Args:
      logits: float tensor, the logits l of q(z=1|x); broadcasts with `beta` to the batch shape.
      beta: β > 0 of the exponential slab r(ζ|1).
      validate_args, allow_nan_stats, name: as for every `tfd.Distribution`.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([logits, beta], dtype_hint=tf.float32)
      self._logits = tensor_util.convert_nonref_to_tensor(logits, dtype=dtype, name="logits")
      self._beta = tensor_util.convert_nonref_to_tensor(beta, dtype=dtype, name="beta")
      self._exponential = ExponentialSmoothing(self._beta, validate_args=validate_args)
      super().__init__(dtype=dtype,
                       reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(logits=tfp.util.ParameterProperties(),
                beta=tfp.util.ParameterProperties(
                    default_constraining_bijector_fn=lambda: _positive(dtype)))

  @property
  def beta(self) -> tf.Tensor | tf.Variable:
    """The sharpness β of the slab (a variable stays a variable)."""
    return self._beta

  _positive_parameters = ("beta",)

  def _probs(self):
    return tf.clip_by_value(tf.sigmoid(self.logits), _SPIKE_PROB_CLIP, 1. - _SPIKE_PROB_CLIP)

  def smoothing_log_prob(self, zeta: tf.Tensor,
                         name: str = "smoothing_log_prob") -> tf.Tensor:
    """log r(ζ|z=0): 0 on the spike, log 0 (as −1e30) elsewhere.

    Args:
      zeta: ζ, broadcastable with `logits`.
      name: name scope of the ops.

    Returns:
      0 where ζ ≤ 0 and −1e30 where ζ > 0, in the broadcast shape of `zeta` and `logits`.
    """
    with tf.name_scope(name):
      zeta = tf.convert_to_tensor(zeta, dtype=self.dtype)
      log_zero = tf.constant(_LOG_ZERO, self.dtype)
      return tf.where(zeta > 0., log_zero, 0.) * tf.ones_like(self.logits)

  def log_ratio(self, zeta: tf.Tensor, name: str = "log_ratio") -> tf.Tensor:
    """log r(ζ|1) − log r(ζ|0) = ±∞ (as ∓1e30), the sign telling the spike from the slab.

    Args:
      zeta: ζ, broadcastable with `logits`.
      name: name scope of the ops.

    Returns:
      1e30 where ζ > 0 (the slab) and −1e30 where ζ ≤ 0 (the spike), in the broadcast shape of
      `zeta` and `logits`.
    """
    with tf.name_scope(name):
      zeta = tf.convert_to_tensor(zeta, dtype=self.dtype)
      log_zero = tf.constant(_LOG_ZERO, self.dtype)
      return tf.where(zeta > 0., -log_zero, log_zero) * tf.ones_like(self.logits)

  def _log_density(self, x):
    q = self._probs()
    return tf.where(x > 0., tf.math.log(q) + self._exponential.log_prob(1. - x),
                    tf.math.log1p(-q))

  def _cdf_inside(self, x):
    q = self._probs()
    return 1. - q + q * self._exponential.survival_function(1. - x)

  def _sample_n(self, n, seed=None):
    q = self._probs()
    beta = tf.convert_to_tensor(self.beta)
    shape = tf.concat([[n], self.batch_shape_tensor()], axis=0)
    v = _uniform(shape, seed, self.dtype)
    slab = v < q
    # t = (ρ − 1 + q)/q ∈ (0, 1] on the slab; the spike branch gets t = 1 so that its unused
    # value and gradient stay finite. (1/β) log(1 + (e^β − 1) t) = 1 + (1/β) log(t + (1 − t) e^{−β})
    # never overflows, and q − v is exact where v is close to q.
    t = tf.where(slab, (q - v) / q, 1.)
    return self._clip(tf.where(slab, 1. + tf.math.log(t + (1. - t) * tf.exp(-beta)) / beta, 0.))

  def _mean(self):
    return self._probs() * (1. - self._exponential.mean())


# --------------------------------------------------------------------------------------------
# Entry points.
# --------------------------------------------------------------------------------------------

def _check_positive(name, key, value):
  """β, σ given as Python numbers are checked here, whatever `validate_args` says."""
  if value is None:
    raise ValueError(f"{name!r} needs {key}, a positive number or float tensor; got None.")
  if isinstance(value, (int, float, np.number)) and not 0 < value < np.inf:
    raise ValueError(f"{key} must be a positive finite number; got {value!r}.")


def _check_keywords(name, kw, allowed):
  unknown = sorted(set(kw) - set(allowed))
  if unknown:
    raise ValueError(f"Unknown argument(s) {unknown} for {name!r}; allowed: {sorted(allowed)}.")


def smoothing(name: str, beta: float | tf.Tensor, validate_args: bool = False,
              **kw: float | tf.Tensor) -> tfd.Distribution:
  """The smoothing distribution r(ζ|z=0) of family `name`, parameterized by β (SPEC §2).

  Args:
    name: one of "exponential", "power", "gaussian" (N(0, 1/β)), "uniform_exponential".
    beta: positive float or float tensor, the sharpness β.
    validate_args: Python bool; if True, tensor parameters are checked by assertion ops
      (for "gaussian", through σ = β^{−1/2}), and so are the points given to `log_prob`/`cdf`.
      False by default, as in TFP: Python numbers are checked here regardless.
    **kw: `eps` (default 0.05, in (0, 1)) for "uniform_exponential"; nothing for the others.

  Returns:
    A `tfd.Distribution` with reparameterized `sample`, `log_prob`, `prob`, `cdf` and support
    bounds `low`, `high`.

  Raises:
    ValueError: unknown name or keyword, β ≤ 0, ε outside (0, 1) (Python numbers).
    tf.errors.InvalidArgumentError: the same for tensors, with `validate_args=True`.
  """
  if name not in SMOOTHINGS:
    raise ValueError(f"Unknown smoothing {name!r}; allowed values: {', '.join(SMOOTHINGS)}.")
  _check_positive(name, "beta", beta)
  _check_keywords(name, kw, ("eps",) if name == "uniform_exponential" else ())
  if name == "exponential":
    return ExponentialSmoothing(beta, validate_args=validate_args)
  if name == "power":
    return PowerSmoothing(beta, validate_args=validate_args)
  if name == "gaussian":
    beta = tf.convert_to_tensor(beta, dtype_hint=tf.float32)
    return GaussianSmoothing(loc=tf.zeros([], beta.dtype), scale=tf.math.rsqrt(beta),
                             validate_args=validate_args)
  eps = kw.get("eps", 0.05)
  if isinstance(eps, (int, float, np.number)) and not 0 < eps < 1:
    raise ValueError(f"eps must lie in the open interval (0, 1); got {eps!r}.")
  return UniformExponentialSmoothing(beta, eps=eps, validate_args=validate_args)


def posterior(name: str, logits: tf.Tensor, beta: float | tf.Tensor | None = None,
              validate_args: bool = False, **kw: float | tf.Tensor) -> tfd.Distribution:
  """The relaxed posterior q(ζ|x) for Bernoulli logits `logits` (batch shape = logits' shape).

  Args:
    name: "spike_exp" (DVAE), "exponential", "power", "gaussian", "uniform_exponential" (mirrored
      mixtures of `smoothing(name, beta)`), or "shifted_gaussian" (DVAE#'s Gaussian integral:
      components N(ζ; z + δμ, σ²)).
    logits: float tensor, the logits l of q(z=1|x).
    beta: positive float or tensor; required by all but "shifted_gaussian", which ignores it.
    validate_args: Python bool, as for `smoothing`; reaches the smoothing too. False by default.
    **kw: `eps` for "uniform_exponential"; `delta_mu` (default 0) and `scale` (σ, required) for
      "shifted_gaussian", tensors broadcastable to `logits`.

  Returns:
    A distribution with `sample`, `log_prob`, `prob`, `cdf`, `log_ratio`, `smoothing_log_prob`,
    `conditional_probs`, `discrete()`, `logits` and support bounds `low`, `high`; `sample` has
    implicit reparameterization gradients to `logits`, β, `delta_mu` and `scale`.

  Raises:
    ValueError: unknown name or keyword, missing β or `scale`, β ≤ 0 or σ ≤ 0 (Python numbers).
    tf.errors.InvalidArgumentError: invalid tensor parameters, with `validate_args=True`.
  """
  if name not in POSTERIORS:
    raise ValueError(f"Unknown posterior {name!r}; allowed values: {', '.join(POSTERIORS)}.")
  if name == "shifted_gaussian":
    _check_keywords(name, kw, ("delta_mu", "scale"))
    _check_positive(name, "scale", kw.get("scale"))
    logits = tf.convert_to_tensor(logits, dtype_hint=tf.float32)
    return OverlappingMixture(
        logits, GaussianSmoothing(loc=tf.cast(kw.get("delta_mu", 0.), logits.dtype),
                                  scale=tf.cast(kw["scale"], logits.dtype),
                                  validate_args=validate_args),
        mirrored=False, validate_args=validate_args)
  _check_positive(name, "beta", beta)
  if name == "spike_exp":
    _check_keywords(name, kw, ())
    return SpikeAndExponential(logits, beta, validate_args=validate_args)
  logits = tf.convert_to_tensor(logits, dtype_hint=tf.float32)
  return OverlappingMixture(
      logits, smoothing(name, tf.cast(beta, logits.dtype), validate_args=validate_args, **kw),
      validate_args=validate_args)


# The smoothing families r(ζ|z=0) a model may be given as objects (`dvae.model.DVAE`).
SMOOTHING_TYPES = (ExponentialSmoothing, PowerSmoothing, GaussianSmoothing,
                   UniformExponentialSmoothing)


def smoothing_config(distribution: _Smoothing) -> dict:
  """A JSON-able description of a smoothing object (`smoothing_from_config` rebuilds it).

  Args:
    distribution: an instance of one of `SMOOTHING_TYPES` with constant (Python number or
      scalar tensor) parameters.

  Returns:
    {"class_name": the class's name, "parameters": {parameter: float}}.

  Raises:
    TypeError: for another type.
  """
  if not isinstance(distribution, SMOOTHING_TYPES):
    raise TypeError(f"a smoothing to save must be one of "
                    f"{', '.join(t.__name__ for t in SMOOTHING_TYPES)}, got "
                    f"{type(distribution).__name__}")
  parameters = {name: float(tf.get_static_value(tf.convert_to_tensor(value)))
                for name, value in distribution.parameters.items()
                if name not in ("validate_args", "allow_nan_stats", "name")}
  return {"class_name": type(distribution).__name__, "parameters": parameters}


def smoothing_from_config(config: dict) -> _Smoothing:
  """The smoothing object that `smoothing_config` described; only `SMOOTHING_TYPES` are made.

  Raises:
    ValueError: for an unknown class name or parameters that are not numbers.
  """
  types = {t.__name__: t for t in SMOOTHING_TYPES}
  name, parameters = config.get("class_name"), config.get("parameters")
  if name not in types or not isinstance(parameters, dict) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in parameters.values()):
    raise ValueError(f"not a smoothing configuration: {config!r}; class_name must be one of "
                     f"{', '.join(types)} with numeric parameters")
  return types[name](**parameters)
