"""Numerical safety: non-finite training stops cleanly, extreme inputs stay finite."""

import dataclasses
import os
import signal

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import helpers
from dvae import callbacks as callbacks_lib
from dvae import config, training
from dvae.model import DVAE


def _quiet(_):
  pass


class NonFiniteTrainingTest(tf.test.TestCase):

  def test_nan_stops_training_naming_step_and_term_and_keeps_last_checkpoint(self):
    hp = helpers.tiny_hparams(self.get_temp_dir(), num_train_iter=5, eval_every=5)
    dataset = helpers.synthetic_dataset()
    training.Run(hp, dataset, log=_quiet).fit(verbose=0)

    # The same run, extended, resumes with a weight corrupted to NaN (as a bad update or a
    # hardware fault would leave it): step 6 must stop the run and name the term.
    run = training.Run(helpers.replace(hp, num_train_iter=10), dataset, log=_quiet)
    restore = run.restore_latest

    def restore_then_corrupt():
      step = restore()
      bias = run.model.decoder_net.layers[-1].bias
      bias.assign(np.full(bias.shape, np.nan, np.float32))
      return step

    run.restore_latest = restore_then_corrupt
    with self.assertRaisesRegex(training.NonFiniteError,
                                r"non-finite reconstruction at step 6; .*ckpt-5"):
      run.fit(verbose=0)

    survivor = training.Run(hp, dataset, log=_quiet)
    self.assertEqual(survivor.restore_latest(), 5)
    for variable in survivor.model.variables:
      self.assertTrue(np.all(np.isfinite(variable.numpy())), variable.path)


class SignalTest(tf.test.TestCase):

  def test_sigterm_saves_mid_epoch_and_the_run_resumes_there_and_finishes(self):
    hp = helpers.tiny_hparams(self.get_temp_dir(), num_train_iter=10, eval_every=10,
                              checkpoint_every_steps=5)
    dataset = helpers.synthetic_dataset()
    run = training.Run(hp, dataset, log=_quiet)
    callbacks = run.callbacks

    def with_terminator():
      terminate = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: (
          os.kill(os.getpid(), signal.SIGTERM) if run.step == 2 else None))
      return [terminate, *callbacks()]

    run.callbacks = with_terminator
    with self.assertRaisesRegex(callbacks_lib.Interrupted, "SIGTERM at step 3"):
      run.fit(verbose=0)
    self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)
    resumed = training.Run(hp, dataset, log=_quiet)
    self.assertEqual(resumed.restore_latest(), 3)
    resumed.fit(verbose=0)
    self.assertEqual(resumed.step, 10)
    self.assertEqual(int(resumed.best_step.numpy()), 10)


class ExtremeInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*config.BASELINES)
  def test_objective_and_gradients_stay_finite_at_extremes(self, baseline):
    beta = 100.0 if baseline != "dvaes_gi" else None
    hp = helpers.tiny_hparams(self.get_temp_dir(), baseline=baseline, k=2, beta=beta,
                              struct="2-layer-nonlin")
    model = DVAE.from_hparams(hp, np.full(784, 0.2, np.float32))
    images = np.concatenate([np.zeros([4, 784]), np.ones([4, 784])]).astype(np.float32)
    for logit in (88.0, -88.0, 0.0):
      for net in model.encoder_nets:
        output = net.layers[-1]
        kernel, bias = output.get_weights()
        output.set_weights([np.zeros_like(kernel), np.full_like(bias, logit)])
      with tf.GradientTape() as tape:
        terms = model.objective_terms(tf.constant(images), tf.constant([1, 2]), 1.0)
      grads = tape.gradient(terms["bound"], model.trainable_variables)
      for name, value in terms.items():
        self.assertTrue(np.all(np.isfinite(value.numpy())), f"{name} at logit {logit}")
      for grad, variable in zip(grads, model.trainable_variables):
        if grad is not None:
          self.assertTrue(np.all(np.isfinite(grad.numpy())), f"{variable.path} at {logit}")
      log_w = model.discrete_log_weights(tf.constant(images), 3, tf.constant([0, 1]))
      self.assertTrue(np.all(np.isfinite(log_w.numpy())), f"log w at logit {logit}")


if __name__ == "__main__":
  tf.test.main()
