"""`--likelihood=` on the command line: real-valued and K-level data from a `.npz` file train
end to end; a likelihood that cannot apply is refused in one line."""

import os

import numpy as np
import tensorflow as tf

from test_own_data import TINY_RUN, results_of, run_cli


class LikelihoodCliTest(tf.test.TestCase):

  def run_file(self, name, arrays, likelihood):
    path = os.path.join(self.get_temp_dir(), f"{name}.npz")
    np.savez(path, **arrays)
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli([f"--dataset={path}", f"--likelihood={likelihood}",
                      f"--log_dir={log_dir}", *TINY_RUN])
    self.assertEqual(result.returncode, 0, result.stderr)
    results, _ = results_of(log_dir)
    self.assertEqual(results["hparams"]["likelihood"], likelihood)
    return results

  def test_real_values_train_with_the_gaussian_likelihood(self):
    rng = np.random.default_rng(0)
    readings = lambda n: (rng.normal(size=[n, 6]) * 3.0 + 10.0).astype(np.float32)
    results = self.run_file("readings", {"train": readings(60), "test": readings(10)},
                            "gaussian")
    self.assertTrue(np.isfinite(results["test_nll"]))

  def test_levels_train_with_the_categorical_likelihood(self):
    rng = np.random.default_rng(0)
    levels = lambda n: rng.integers(0, 5, [n, 3, 4]).astype(np.uint8)
    results = self.run_file("levels", {"train": levels(60), "test": levels(10)}, "categorical")
    self.assertTrue(np.isfinite(results["test_nll"]))

  def test_non_bernoulli_likelihood_of_a_published_set_is_refused(self):
    result = run_cli(["--likelihood=gaussian", "--dataset=binarized_mnist", *TINY_RUN])
    self.assertEqual(result.returncode, 2)
    self.assertIn("likelihood gaussian", result.stderr)
    self.assertLessEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)

  def test_categorical_values_must_be_levels(self):
    path = os.path.join(self.get_temp_dir(), "bad.npz")
    np.savez(path, train=np.full([20, 4], 0.5), test=np.zeros([5, 4]))
    result = run_cli([f"--dataset={path}", "--likelihood=categorical",
                      f"--log_dir={self.get_temp_dir()}", *TINY_RUN])
    self.assertEqual(result.returncode, 2)
    self.assertIn("integer levels", result.stderr)
