"""The observation models p(x|ζ) of the decoder: Bernoulli, Gaussian and categorical pixels.

The decoder network maps the latents (and the condition, if any) to outputs h; a likelihood
turns h into the distribution of the D observed values, independent across dimensions:

* `Bernoulli`: binary x_d, log p(x|h) = Σ_d x_d h_d − softplus(h_d) (h the logits).
* `Gaussian`: real x_d, log p(x|h) = Σ_d −½((x_d − h_d)/σ_d)² − log σ_d − ½ log 2π, with σ_d
  fixed or learned per dimension (σ_d = softplus(s_d) + σ_min, s_d trainable).
* `Categorical`: x_d ∈ {0, …, K−1}, h = [D·K] logits, log p(x|h) = Σ_d log softmax(h_d)_{x_d}.

Each is a Keras layer (the Gaussian's learned scales are its weights) with `log_prob(x, h)`
[B], `mean(h)` [B, D] (E[x|h]: the reconstruction or generated image), `sample(h, seed)`
[B, D] and `num_outputs(num_dims)`, the decoder's output width.
"""

from __future__ import annotations

import abc
import math
import typing

import keras
import tensorflow as tf

if typing.TYPE_CHECKING:
  from collections.abc import Sequence

  import numpy as np

# The learned Gaussian scale never drops below this (a density on data with a constant
# dimension would otherwise grow without bound).
MIN_SCALE = 1e-3


class Likelihood(keras.layers.Layer, abc.ABC):
  """The base of the observation models; subclasses define the methods below.

  Args:
    data_mean: optional per-dimension mean x̄ [D] of the training data; where the subclass
      supports it, the decoder's outputs are read relative to x̄ (Bernoulli: the logit bias
      logit(clip(x̄, 0.001, 0.999)), Gaussian: means h + x̄), so an untrained decoder (h ≈ 0)
      starts at the data's marginals.
    **kwargs: the arguments of every `keras.layers.Layer` (`name`, `dtype`, ...).
  """

  def __init__(self, data_mean: Sequence[float] | np.ndarray | None = None,
               **kwargs: typing.Any):
    super().__init__(**kwargs)
    self.data_mean = None if data_mean is None else [float(v) for v in data_mean]

  def get_config(self) -> dict[str, typing.Any]:
    """The layer's config (`keras.layers.Layer.get_config`) with `data_mean` as a list."""
    return {**super().get_config(), "data_mean": self.data_mean}

  def build(self, input_shape: tf.TensorShape | Sequence[int | None]) -> None:
    """Creates the weights: the data mean's non-trainable variable, if there is a data mean.

    Args:
      input_shape: shape of the decoder's outputs h, [B, `num_outputs(D)`].
    """
    if self.data_mean is not None:
      # A variable, not a constant: graph optimisation would otherwise fold the constant
      # terms of h + log x̄ − log(1 − x̄) together and round differently.
      self.data_mean_variable = self.add_weight(
          shape=[len(self.data_mean)], trainable=False, name="data_mean",
          initializer=keras.initializers.Constant(self.data_mean))
    self.built = True

  def _data_mean(self):
    return tf.convert_to_tensor(self.data_mean_variable)


  def num_outputs(self, num_dims: int) -> int:
    """Width of the decoder's output for D = `num_dims` observed values.

    Args:
      num_dims: D.

    Returns:
      D here; subclasses with several outputs per value return more.
    """
    return num_dims

  @abc.abstractmethod
  def log_prob(self, x: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """log p(x|h) per example [B] for x [B, D] and decoder outputs h.

    Args:
      x: [B, D] observed values.
      outputs: [B, `num_outputs(D)`] decoder outputs h.

    Returns:
      [B] log-likelihoods, summed over the D values.
    """

  @abc.abstractmethod
  def mean(self, outputs: tf.Tensor) -> tf.Tensor:
    """E[x|h] [B, D].

    Args:
      outputs: [B, `num_outputs(D)`] decoder outputs h.

    Returns:
      [B, D] expected values: the reconstruction or generated image.
    """

  @abc.abstractmethod
  def sample(self, outputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """x ~ p(x|h) [B, D] float32, with a stateless seed int32 [2].

    Args:
      outputs: [B, `num_outputs(D)`] decoder outputs h.
      seed: stateless int32 [2] seed; the same seed gives the same draws.

    Returns:
      [B, D] float32 draws.
    """

  def check_data(self, x: np.ndarray) -> str | None:
    """One line saying why the numpy array `x` [N, D] cannot be data of this model, or None.

    Args:
      x: [N, D] values (one split of the data).

    Returns:
      The reason, for the user, or None when every value is one this model can give
      (always None here).
    """
    return None


@keras.saving.register_keras_serializable(package="dvae")
class Bernoulli(Likelihood):
  """Binary pixels: p(x_d = 1|h) = σ(h_d + b_d), b = logit(clip(x̄, 0.001, 0.999)) given the
  data mean x̄, else 0."""


  def logits(self, outputs: tf.Tensor) -> tf.Tensor:
    """h + b, the logits of p(x|h).

    Args:
      outputs: [B, D] decoder outputs h.

    Returns:
      [B, D] logits.
    """
    if self.data_mean is None:
      return outputs
    mean = tf.clip_by_value(self._data_mean(), 0.001, 0.999)
    return outputs + tf.math.log(mean) - tf.math.log1p(-mean)

  def log_prob(self, x: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Σ_d x_d l_d − softplus(l_d) [B], l = `logits(outputs)` (`Likelihood.log_prob`)."""
    return -tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=self.logits(outputs)), axis=-1)

  def mean(self, outputs: tf.Tensor) -> tf.Tensor:
    """σ(l) [B, D], the probabilities of x_d = 1 (`Likelihood.mean`)."""
    return tf.sigmoid(self.logits(outputs))

  def sample(self, outputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """0/1 draws [B, D] float32 (`Likelihood.sample`)."""
    uniform = tf.random.stateless_uniform(tf.shape(outputs), seed)
    return tf.cast(uniform < self.mean(outputs), tf.float32)

  def check_data(self, x: np.ndarray) -> str | None:
    """Refuses values other than 0 and 1 (`Likelihood.check_data`)."""
    if not ((x == 0) | (x == 1)).all():
      return "the Bernoulli likelihood needs 0/1 values"
    return None


@keras.saving.register_keras_serializable(package="dvae")
class Gaussian(Likelihood):
  """Real values: x_d ~ N(h_d + x̄_d, σ_d²), h the decoder's outputs (x̄ = 0 without a data mean).

  Args:
    scale: a fixed σ for every dimension, or None to learn σ_d = softplus(s_d) + 1e-3 per
      dimension (s_d starting where σ_d = 1).
    data_mean: x̄ [D], or None (see `Likelihood`).
    **kwargs: the arguments of every `keras.layers.Layer`.

  Raises:
    ValueError: `scale` is not positive.
  """


  def __init__(self, scale: float | None = None,
               data_mean: Sequence[float] | np.ndarray | None = None, **kwargs: typing.Any):
    super().__init__(data_mean=data_mean, **kwargs)
    if scale is not None and not scale > 0:
      raise ValueError(f"scale must be positive or None (learned), got {scale!r}")
    self.fixed_scale = None if scale is None else float(scale)

  def build(self, input_shape: tf.TensorShape | Sequence[int | None]) -> None:
    """Creates the data mean's variable, and the raw scales s [D] when σ is learned.

    Args:
      input_shape: shape of the decoder's outputs h, [B, D].
    """
    super().build(input_shape)
    if self.fixed_scale is None:
      # softplus(s) = 1 − MIN_SCALE at s = log(e^{1 − MIN_SCALE} − 1).
      start = math.log(math.expm1(1.0 - MIN_SCALE))
      self.raw_scale = self.add_weight(shape=[int(input_shape[-1])], name="raw_scale",
                                       initializer=keras.initializers.Constant(start))
    self.built = True

  def get_config(self) -> dict[str, typing.Any]:
    """The layer's config with the fixed `scale` (None when learned)."""
    return {**super().get_config(), "scale": self.fixed_scale}

  def scale(self) -> tf.Tensor:
    """σ [D] (or a scalar when fixed).

    Returns:
      float32 σ: the fixed scale, or softplus(s) + `MIN_SCALE` of the learned raw scales s.
    """
    if self.fixed_scale is not None:
      return tf.constant(self.fixed_scale, tf.float32)
    return tf.nn.softplus(self.raw_scale) + MIN_SCALE

  def log_prob(self, x: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Σ_d −½((x_d − μ_d)/σ_d)² − log σ_d − ½ log 2π [B], μ = `mean(outputs)`
    (`Likelihood.log_prob`)."""
    scale = self.scale()
    z = (x - self.mean(outputs)) / scale
    per_dim = -0.5 * tf.square(z) - tf.math.log(scale) - 0.5 * math.log(2 * math.pi)
    return tf.reduce_sum(per_dim, axis=-1)

  def mean(self, outputs: tf.Tensor) -> tf.Tensor:
    """h + x̄ [B, D] (h without a data mean) (`Likelihood.mean`)."""
    return outputs if self.data_mean is None else outputs + self._data_mean()

  def sample(self, outputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """μ + σ ε [B, D], ε ~ N(0, 1) (`Likelihood.sample`)."""
    return self.mean(outputs) + self.scale() * tf.random.stateless_normal(tf.shape(outputs), seed)


@keras.saving.register_keras_serializable(package="dvae")
class Categorical(Likelihood):
  """K-valued pixels x_d ∈ {0, …, K−1}: p(x_d = k|h) = softmax(h_d)_k, h [B, D·K] logits.

  Args:
    num_classes: K ≥ 2.
    **kwargs: the arguments of every `keras.layers.Layer`; `data_mean` must be None.

  Raises:
    ValueError: K is not an integer ≥ 2, or a `data_mean` is given.
  """


  def __init__(self, num_classes: int, **kwargs: typing.Any):
    super().__init__(**kwargs)
    if self.data_mean is not None:
      raise ValueError("the categorical likelihood takes no data_mean")
    if int(num_classes) != num_classes or num_classes < 2:
      raise ValueError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    self.num_classes = int(num_classes)

  def get_config(self) -> dict[str, typing.Any]:
    """The layer's config with `num_classes`."""
    return {**super().get_config(), "num_classes": self.num_classes}

  def num_outputs(self, num_dims: int) -> int:
    """D·K: K logits per value (`Likelihood.num_outputs`)."""
    return num_dims * self.num_classes

  def logits(self, outputs: tf.Tensor) -> tf.Tensor:
    """The decoder outputs as [B, D, K] logits.

    Args:
      outputs: [B, D·K] decoder outputs h.

    Returns:
      [B, D, K] logits, value d's K logits consecutive in h.
    """
    return tf.reshape(outputs, [tf.shape(outputs)[0], -1, self.num_classes])

  def log_prob(self, x: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Σ_d log softmax(h_d)_{x_d} [B] (`Likelihood.log_prob`)."""
    log_p = tf.nn.log_softmax(self.logits(outputs), axis=-1)
    picked = tf.gather(log_p, tf.cast(x, tf.int32), axis=-1, batch_dims=2)
    return tf.reduce_sum(picked, axis=-1)

  def mean(self, outputs: tf.Tensor) -> tf.Tensor:
    """Σ_k k softmax(h_d)_k [B, D], the expected level (`Likelihood.mean`)."""
    probs = tf.nn.softmax(self.logits(outputs), axis=-1)
    return tf.reduce_sum(probs * tf.range(self.num_classes, dtype=probs.dtype), axis=-1)

  def sample(self, outputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Levels 0 … K−1 [B, D] float32 (`Likelihood.sample`)."""
    logits = tf.reshape(outputs, [-1, self.num_classes])
    draws = tf.random.stateless_categorical(logits, 1, seed)
    return tf.cast(tf.reshape(draws, [tf.shape(outputs)[0], -1]), tf.float32)

  def check_data(self, x: np.ndarray) -> str | None:
    """Refuses values that are not integers in [0, K − 1] (`Likelihood.check_data`)."""
    if not ((x == x.astype(int)) & (x >= 0) & (x < self.num_classes)).all():
      return (f"the categorical likelihood with {self.num_classes} classes needs integer "
              f"values in [0, {self.num_classes - 1}]")
    return None


LIKELIHOODS = ("bernoulli", "gaussian", "categorical")


def get(identifier: str | Likelihood, data_mean: Sequence[float] | np.ndarray | None = None,
        num_classes: int | None = None) -> Likelihood:
  """A likelihood from a name of `LIKELIHOODS` or itself.

  Args:
    identifier: "bernoulli", "gaussian" (learned scales), "categorical", or a `Likelihood`.
    data_mean: x̄ for the Bernoulli and Gaussian likelihoods (see `Likelihood`).
    num_classes: K, for the categorical likelihood.

  Returns:
    `identifier` itself when it is a `Likelihood`, else a new one named "likelihood".

  Raises:
    ValueError: an unknown name, or "categorical" without `num_classes`.
  """
  if isinstance(identifier, Likelihood):
    return identifier
  if identifier == "bernoulli":
    return Bernoulli(data_mean=data_mean, name="likelihood")
  if identifier == "gaussian":
    return Gaussian(data_mean=data_mean, name="likelihood")
  if identifier == "categorical":
    if num_classes is None:
      raise ValueError("the categorical likelihood needs the number of classes K")
    return Categorical(num_classes, name="likelihood")
  raise ValueError(f"unknown likelihood {identifier!r}; allowed: {', '.join(LIKELIHOODS)}, "
                   "or a dvae.likelihoods.Likelihood")
