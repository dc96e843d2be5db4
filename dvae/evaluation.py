"""Importance-weighted estimates of log p(x) for the discrete model (SPEC §3.1, §5).

For each image, with k samples z_j ~ q(z|x) and
log w_j = log p(x|z_j) − E(z_j) − log Z − log q(z_j|x),

    log p(x) ≈ log (1/k) Σ_j w_j        (the IW estimate; its mean is a lower bound that
                                         tightens as k grows),
    ELBO(x)  ≈ (1/k) Σ_j log w_j.

log Z enters every log w_j alike, so the standard error of the log Z estimate moves every image's
NLL by the same amount: it is reported beside the NLL (`log_z_stderr`). AIS and population
annealing are stochastic lower bounds on log Z in expectation, which makes the NLL optimistic.

The k samples of one image batch are drawn in chunks so that k = 4000 over 10,000 images fits
in memory: the log-sum-exp is accumulated across chunks in float64.

For a conditional model (`condition_dims` > 0) every image comes with its condition c, and the
estimates are of log p(x|c), with q(z|x, c) and p(x|z, c).
"""

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from dvae import data

if TYPE_CHECKING:
  from dvae.model import DVAE

# Values (images × samples × pixels) pushed through the networks at once: 100,000 rows of
# MNIST's 784 pixels, fewer rows for wider data.
MAX_VALUES = 100_000 * 784


def samples_per_call(num_samples: int, batch_size: int, num_dims: int,
                     max_rows: int | None = None) -> int:
  """Importance samples per image drawn in one call: as many as keep images × samples within
  `max_rows`, at least one.

  Args:
    num_samples: k, the importance samples per image wanted in all.
    batch_size: images per batch.
    num_dims: D, the values per image.
    max_rows: bound on images × samples per call; by default MAX_VALUES // D.

  Returns:
    The samples per image of one call, in [1, `num_samples`].
  """
  if max_rows is None:
    max_rows = MAX_VALUES // num_dims
  return max(1, min(num_samples, max_rows // batch_size))


def evaluate(model: "DVAE", images: np.ndarray, num_samples: int, batch_size: int, seed: int = 0,
             max_rows: int | None = None,
             conditions: np.ndarray | None = None) -> dict[str, float]:
  """Negative ELBO and negative IW log-likelihood, averaged over `images`, in nats.

  Args:
    model: a `dvae.model.DVAE`; its prior's log Z is re-estimated first if it is not current
      (`ensure_current_log_z` of `model.prior_machine`, with the settings of `compile(log_z=...)`).
    images: [N, D] data rows (binary for the Bernoulli likelihood).
    num_samples: k, importance samples per image.
    batch_size: images per batch.
    seed: integer; the same seed gives the same estimate.
    max_rows: bound on images × samples evaluated in one call; by default MAX_VALUES // D.
    conditions: [N, C] conditions of the images for a conditional model (`condition_dims` C
      > 0), the NLL then being −log p(x|c); None for an unconditional one.

  Returns:
    dict with `neg_elbo`, `nll`, and the `log_z` and `log_z_stderr` they used (Python floats).

  Raises:
    ValueError: `conditions` given to an unconditional model, missing for a conditional one,
      or not one row of width C per image.
  """
  condition_dims = getattr(model, "condition_dims", 0)
  if (conditions is None) != (condition_dims == 0):
    raise ValueError(
        f"the model takes a condition of width {condition_dims}: pass conditions [N, "
        f"{condition_dims}]" if condition_dims else
        "the model has no condition (condition_dims=0); pass no conditions")
  if conditions is not None and np.shape(conditions)[1:] != (condition_dims,):
    raise ValueError(f"conditions must be [N, {condition_dims}], got shape "
                     f"{list(np.shape(conditions))}")
  model.prior_machine.ensure_current_log_z()
  chunk = samples_per_call(num_samples, batch_size, np.shape(images)[1], max_rows)
  log_weights = tf.function(model.discrete_log_weights, reduce_retracing=True)
  log_sum, mean_log_w = [], []
  call = 0
  for batch in data.eval_dataset(images, batch_size, conditions):
    batch, condition = (batch, None) if conditions is None else (batch["x"], batch["condition"])
    lse = np.full(batch.shape[0], -np.inf)
    total = np.zeros(batch.shape[0])
    for first in range(0, num_samples, chunk):
      log_w = log_weights(batch, min(chunk, num_samples - first),
                          tf.constant([seed, call], tf.int32),
                          condition=condition).numpy().astype(np.float64)
      call += 1
      top = log_w.max(axis=1)
      lse = np.logaddexp(lse, top + np.log(np.exp(log_w - top[:, None]).sum(axis=1)))
      total += log_w.sum(axis=1)
    log_sum.append(lse)
    mean_log_w.append(total / num_samples)
  return {"neg_elbo": float(-np.concatenate(mean_log_w).mean()),
          "nll": float(-(np.concatenate(log_sum) - np.log(num_samples)).mean()),
          # A number, or one per label under a label-conditional prior.
          "log_z": model.prior_machine.log_z.numpy().tolist(),
          "log_z_stderr": model.prior_machine.log_z_stderr.numpy().tolist()}
