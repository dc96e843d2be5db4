"""A user's own data through `run_training.py` (#11): a synthetic set whose true NLL is known
exactly, images of a size other than 28×28, D = 1000, and bad files refused in one line."""

import glob
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_MODEL = ["--struct=1-layer-nonlin", "--latent_units=16", "--hidden_units=64",
               "--sampler=pcd", "--num_chains=100", "--num_sweeps=5", "--train_batch_size=100"]
TINY_RUN = ["--struct=1-layer-lin", "--latent_units=8", "--sampler=pcd", "--num_chains=20",
            "--num_sweeps=2", "--train_batch_size=10", "--num_train_iter=4", "--eval_every=4",
            "--periodic_eval_iw_samples=2", "--eval_iw_samples=3"]


def run_cli(args, timeout=600):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "run_training.py"), *args], capture_output=True,
      text=True, timeout=timeout, cwd=REPO,
      env=dict(os.environ, DVAE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3"))


class BernoulliMixture:
  """p(x) = Σ_c π_c Π_d μ_cd^{x_d} (1 − μ_cd)^{1−x_d}: C product-Bernoulli components with
  uniform π and μ_cd ∈ {ε, 1 − ε} on random patterns (SPEC §9, known-truth data)."""

  def __init__(self, num_dims, num_components, epsilon, seed):
    self.rng = np.random.default_rng(seed)
    patterns = self.rng.random([num_components, num_dims]) < 0.5
    self.mu = np.where(patterns, 1 - epsilon, epsilon)
    self.log_pi = np.full(num_components, -np.log(num_components))

  def sample(self, n):
    components = self.rng.integers(0, len(self.log_pi), n)
    return (self.rng.random([n, self.mu.shape[1]]) < self.mu[components]).astype(np.uint8)

  def log_prob(self, x):
    """Exact log p(x) per row, a log-sum-exp over the components."""
    log_px_given_c = x @ np.log(self.mu).T + (1 - x) @ np.log1p(-self.mu).T
    return logsumexp(self.log_pi + log_px_given_c, axis=1)


def independent_bits_nll(train, test):
    """−mean log p(x) on `test` of independent bits at the (clipped) training mean."""
    mean = np.clip(train.mean(axis=0), 1e-3, 1 - 1e-3)
    return float(-(test @ np.log(mean) + (1 - test) @ np.log1p(-mean)).mean())


def results_of(log_dir):
  (path,) = glob.glob(os.path.join(log_dir, "*", "*", "*", "*", "*", "results.json"))
  with open(path) as f:
    return json.load(f), os.path.dirname(path)


class KnownTruthTest(tf.test.TestCase):

  def train_on_mixture(self, num_dims, num_components, num_steps, extra=()):
    mixture = BernoulliMixture(num_dims, num_components, epsilon=0.05, seed=0)
    train, valid, test = mixture.sample(5000), mixture.sample(1000), mixture.sample(2000)
    path = os.path.join(self.get_temp_dir(), "mixture.npz")
    np.savez(path, train=train, valid=valid, test=test)
    log_p = mixture.log_prob(test)
    true_nll = float(-log_p.mean())
    stderr = float(log_p.std(ddof=1) / np.sqrt(len(log_p)))
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli([f"--dataset={path}", f"--log_dir={log_dir}", *SMALL_MODEL,
                      f"--num_train_iter={num_steps}", f"--eval_every={num_steps}",
                      "--eval_iw_samples=200", "--periodic_eval_iw_samples=20", *extra])
    self.assertEqual(result.returncode, 0, result.stderr)
    results, run = results_of(log_dir)
    self.assertRegex(os.path.relpath(run, log_dir),
                     r"^mixture/1-layer-nonlin/dvaes_power/k1/seed0-[0-9a-f]{8}$")
    return results["test_nll"], true_nll, stderr, independent_bits_nll(train, test)

  def test_test_nll_lies_above_the_truth_and_well_below_independent_bits(self):
    # D = 20, C = 5: true NLL 5.44 ± 0.06, independent bits 11.02; measured 6.31 after 300
    # steps (5.53 after 3000).
    nll, truth, stderr, independent = self.train_on_mixture(20, 5, num_steps=300)
    self.assertGreater(nll, truth - stderr)
    self.assertLess(nll, truth + 0.25 * (independent - truth))

  @pytest.mark.slow
  def test_longer_training_on_a_larger_mixture_approaches_the_truth(self):
    # D = 64, C = 16: true NLL 15.43 ± 0.11, independent bits 42.47; measured 15.72.
    nll, truth, stderr, independent = self.train_on_mixture(
        64, 16, num_steps=5000, extra=["--latent_units=32", "--hidden_units=128"])
    self.assertGreater(nll, truth - stderr)
    self.assertLess(nll, truth + 0.1 * (independent - truth))


class AnyShapeTest(tf.test.TestCase):
  """Short runs: D comes from the data in the model, evaluation, summaries and export."""

  def write(self, **arrays):
    path = os.path.join(self.get_temp_dir(), "shapes.npz")
    np.savez(path, **arrays)
    return path

  def run_and_export(self, path, extra=()):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    export_dir = os.path.join(self.get_temp_dir(), "export")
    result = run_cli([f"--dataset={path}", f"--log_dir={log_dir}",
                      f"--export_dir={export_dir}", *TINY_RUN, *extra])
    self.assertEqual(result.returncode, 0, result.stderr)
    results, run = results_of(log_dir)
    self.assertTrue(np.isfinite(results["test_nll"]))
    self.assertTrue(np.isfinite(results["val_nll"]))
    images = {}
    for event_file in glob.glob(os.path.join(run, "summaries", "**", "events.*"), recursive=True):
      for event in tf.compat.v1.train.summary_iterator(event_file):
        for value in event.summary.value:
          if value.metadata.plugin_data.plugin_name == "images":
            # An image summary holds width, height, then the encoded images.
            width, height = tf.make_ndarray(value.tensor)[:2]
            images[value.tag] = (int(height), int(width))
    return results, tf.saved_model.load(export_dir), images

  def test_images_of_12_by_20_train_and_keep_their_shape_in_summaries_and_export(self):
    rng = np.random.default_rng(0)
    train, test = rng.random([60, 12, 20]) < 0.3, rng.random([13, 12, 20]) < 0.3
    results, loaded, images = self.run_and_export(self.write(train=train, test=test))
    self.assertEqual(results["hparams"]["eval_batch_size"], 1000)
    self.assertAllEqual(loaded.image_shape(), [12, 20])
    self.assertEqual(loaded.decode(tf.zeros([3, 8])).shape, (3, 240))
    self.assertEqual(loaded.log_likelihood(tf.zeros([2, 240]), 3, tf.constant([0, 0])).shape,
                     (2,))
    # 10 × 10 tiles of 12 × 20 images.
    self.assertEqual(images["final/samples"], (120, 200))
    self.assertEqual(images["final/inputs_and_reconstructions"], (120, 200))

  def test_d_1000_trains_evaluates_a_short_last_batch_and_exports_flat(self):
    rng = np.random.default_rng(1)
    x = (rng.random([90, 1000]) < 0.2).astype(np.float32)
    results, loaded, images = self.run_and_export(
        self.write(train=x[:60], valid=x[60:77], test=x[77:]), extra=["--eval_batch_size=5"])
    self.assertEqual(results["hparams"]["eval_batch_size"], 5)
    self.assertEqual(loaded.sample(4, tf.constant([0, 1])).shape, (4, 1000))
    self.assertEqual(loaded.log_likelihood(tf.zeros([2, 1000]), 3, tf.constant([0, 0])).shape,
                     (2,))
    with self.assertRaises((ValueError, TypeError)):  # The signature is [None, 1000].
      loaded.log_likelihood(tf.zeros([2, 784]), 3, tf.constant([0, 0]))
    self.assertFalse(hasattr(loaded, "image_shape"))
    self.assertEmpty(images, "flat data has no image summaries")


class BadFileTest(tf.test.TestCase):
  """Through the command line: exit status 2, one line on stderr, nothing written."""

  def test_a_pickle_is_refused_in_one_line_and_nothing_is_written(self):
    # Every other bad file takes the same path (tests/test_data.py lists them).
    path = os.path.join(self.get_temp_dir(), "bad.npz")
    with open(path, "wb") as f:
      pickle.dump({"train": [[0, 1]]}, f)
    expected = "pickled Python objects"
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli([f"--dataset={path}", f"--log_dir={log_dir}"])
    self.assertEqual(result.returncode, 2, result.stderr)
    lines = result.stderr.strip().splitlines()
    self.assertLen(lines, 1, result.stderr)
    self.assertIn(expected, lines[0])
    self.assertIn(path, lines[0])
    self.assertFalse(os.path.exists(log_dir))


if __name__ == "__main__":
  tf.test.main()
