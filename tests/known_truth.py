"""Synthetic data whose exact log-likelihood is known, and a small DVAE# composed from plain
Keras layers to fit it (the likelihood and condition tests)."""

import keras
import numpy as np
from scipy.special import logsumexp

from dvae.clamped import ClampedLabelMachine
from dvae.model import DVAE
from dvae.rbm import RBM


def gaussian_mixture(num, rng, num_dims=4, scale=0.5):
  """x ~ ½ N(−2·1, σ²I) + ½ N(2·1, σ²I): rows [num, D] and their exact log p(x)."""
  means = np.stack([-2.0 * np.ones(num_dims), 2.0 * np.ones(num_dims)])
  component = rng.integers(0, 2, num)
  x = means[component] + scale * rng.normal(size=[num, num_dims])
  log_component = (-0.5 * np.sum(((x[:, None, :] - means[None]) / scale) ** 2, axis=-1)
                   - num_dims * (np.log(scale) + 0.5 * np.log(2 * np.pi)))
  return x.astype(np.float32), logsumexp(log_component + np.log(0.5), axis=-1)


def gaussian_baseline(train, test):
  """Test log-likelihood of independent per-dimension Gaussians fitted to `train`."""
  mean, std = train.mean(axis=0), train.std(axis=0)
  return np.sum(-0.5 * ((test - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), -1)


def conditional_gaussians(num, rng, num_classes=4, num_dims=4, scale=0.5):
  """c uniform over `num_classes` one-hot labels, x | c ~ N(μ_c, σ²I) with μ_{c,d} = ±3 by bit
  (d mod 2) of c: (x, c, the exact log p(x|c), μ [num_classes, D])."""
  bits = (np.arange(num_classes)[:, None] >> (np.arange(num_dims) % 2)[None]) & 1
  means = 3.0 * (2.0 * bits - 1.0)
  label = rng.integers(0, num_classes, num)
  x = means[label] + scale * rng.normal(size=[num, num_dims])
  log_p = (-0.5 * np.sum(((x - means[label]) / scale) ** 2, -1)
           - num_dims * (np.log(scale) + 0.5 * np.log(2 * np.pi)))
  condition = np.eye(num_classes, dtype=np.float32)[label]
  return x.astype(np.float32), condition, log_p, means


def categorical_mixture(num, rng, num_dims=6, num_classes=4, peak=0.7):
  """x_d ∈ {0..K−1} from a two-component mixture of categorical products whose components
  put `peak` on class d mod K (component 0) or K − 1 − (d mod K) (component 1): rows and log p(x)."""
  probs = np.full([2, num_dims, num_classes], (1 - peak) / (num_classes - 1))
  for d in range(num_dims):
    probs[0, d, d % num_classes] = peak
    probs[1, d, num_classes - 1 - d % num_classes] = peak
  component = rng.integers(0, 2, num)
  cumulative = np.cumsum(probs[component], axis=-1)
  x = (rng.random([num, num_dims, 1]) > cumulative).sum(-1)
  log_component = np.log(probs[:, np.arange(num_dims), x]).sum(-1).T  # [num, 2]
  return x.astype(np.float32), logsumexp(log_component + np.log(0.5), axis=-1)


def categorical_baseline(train, test, num_classes):
  """Test log-likelihood of independent per-dimension categoricals fitted to `train`."""
  counts = np.stack([(train == k).sum(0) for k in range(num_classes)], -1) + 1.0
  log_p = np.log(counts / counts.sum(-1, keepdims=True))
  return log_p[np.arange(train.shape[1]), test.astype(int)].sum(-1)


def bernoulli_mixture(num, rng, num_dims=8, peak=0.9):
  """x ∈ {0,1}^D from ½ Π Bern(p) + ½ Π Bern(1 − p), p alternating peak / 1 − peak."""
  p = np.where(np.arange(num_dims) % 2 == 0, peak, 1 - peak)
  probs = np.stack([p, 1 - p])
  component = rng.integers(0, 2, num)
  x = (rng.random([num, num_dims]) < probs[component]).astype(np.float32)
  log_component = (x[:, None] * np.log(probs) + (1 - x[:, None]) * np.log1p(-probs)).sum(-1)
  return x, logsumexp(log_component + np.log(0.5), axis=-1)


def bernoulli_baseline(train, test):
  p = np.clip(train.mean(0), 1e-3, 1 - 1e-3)
  return (test * np.log(p) + (1 - test) * np.log1p(-p)).sum(-1)


class LatentsOnly(keras.layers.Layer):
  """The first `width` columns of its input: a decoder's first layer that ignores the condition."""

  def __init__(self, width, **kwargs):
    super().__init__(**kwargs)
    self.width = width

  def call(self, inputs):
    return inputs[:, :self.width]


def small_dvae(num_dims, likelihood, condition_dims=0, seed=0, units=2, hidden=32,
               clamped_labels=False, decoder_sees_condition=True):
  """A DVAE# (power relaxation, β = 30) with an RBM of 2·units units, composed from Dense layers;
  with `clamped_labels` the RBM's biases are the label's (`ClampedLabelMachine`, the condition a
  one-hot label), and without `decoder_sees_condition` the decoder sees z alone."""
  init = lambda i: keras.initializers.GlorotUniform(seed + i)
  encoder = keras.Sequential([keras.layers.Dense(hidden, "tanh", kernel_initializer=init(0)),
                              keras.layers.Dense(2 * units, kernel_initializer=init(1))])
  decoder = keras.Sequential(([] if decoder_sees_condition else [LatentsOnly(2 * units)]) + [
      keras.layers.Dense(hidden, "tanh", kernel_initializer=init(2)),
      keras.layers.Dense(likelihood.num_outputs(num_dims), kernel_initializer=init(3))])
  prior = RBM(units, units, num_chains=100, num_sweeps=5)
  if clamped_labels:
    prior = ClampedLabelMachine(prior, condition_dims)
  return DVAE(encoder, decoder, prior, num_dims, relaxation="power", beta=30.0,
              likelihood=likelihood, condition_dims=condition_dims, seed=seed)


def fit_and_score(model, train, test, epochs=40, batch_size=100, k=1000, learning_rate=3e-3):
  """Trains `model` on `train` and returns its test log-likelihood per example (IW, k samples,
  exact log Z)."""
  model.compile(keras.optimizers.Adam(learning_rate, epsilon=1e-3), eval_iw_samples=k)
  model.fit(train, batch_size=batch_size, epochs=epochs, verbose=0)
  model.prior_machine.update_log_z("exact")
  nll, _ = model.evaluate(test, batch_size=250, verbose=0)
  return -nll
