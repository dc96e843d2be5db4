"""Small synthetic data and configurations shared by the end-to-end tests."""

import dataclasses

import numpy as np

from dvae import config, data


def synthetic_dataset(num_train=200, num_eval=20, seed=0):
  """Binary 28×28 images: noisy copies of four stroke prototypes, so there is structure to learn."""
  rng = np.random.default_rng(seed)
  prototypes = np.zeros([4, 28, 28], np.float32)
  prototypes[0, 4:24, 12:16] = 1
  prototypes[1, 12:16, 4:24] = 1
  prototypes[2, 6:22, 6:22] = np.eye(16, dtype=np.float32)
  prototypes[3, 6:22, 6:22] = np.eye(16, dtype=np.float32)[::-1]
  prototypes = prototypes.reshape(4, 784)

  def draw(n):
    images = prototypes[rng.integers(0, 4, n)]
    flips = rng.random(images.shape) < 0.03
    return np.abs(images - flips).astype(np.float32)

  train = draw(num_train)
  return data.Dataset(train=train, valid=draw(num_eval), test=draw(num_eval),
                      train_mean=train.mean(axis=0), dynamic_binarization=False,
                      image_shape=(28, 28))


def tiny_hparams(log_dir, **overrides):
  """A configuration small enough to train for a few steps in a test."""
  values = dict(dataset="binarized_mnist", struct="1-layer-lin", baseline="dvaes_power", k=1,
                sampler="pcd", num_chains=20, num_sweeps=2, num_train_iter=1000,
                train_batch_size=20, eval_batch_size=10, eval_iw_samples=20,
                periodic_eval_iw_samples=10, eval_every=1000, final_log_z_betas=200,
                log_dir=str(log_dir))
  values.update(overrides)
  hparams, _ = config.load_hparams(None, values)
  return hparams


def replace(hparams, **changes):
  return dataclasses.replace(hparams, **changes)
