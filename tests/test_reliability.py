"""Numerical safety: non-finite training stops cleanly, extreme inputs stay finite."""

import dataclasses
import json
import os
import signal
import sys
import zipfile

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import helpers
from dvae import callbacks as callbacks_lib
from dvae import config, data, runs, training
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


def _variables(model):
  return {v.path: v.numpy() for v in model.variables}


class ResumeTest(tf.test.TestCase):

  def test_a_run_killed_mid_epoch_and_resumed_equals_the_uninterrupted_run(self):
    dataset = helpers.synthetic_dataset(num_train=50)  # 2.5 batches: epochs of the data wrap
    whole_dir, resumed_dir = (os.path.join(self.get_temp_dir(), name)
                              for name in ("whole", "resumed"))
    whole = training.Run(helpers.tiny_hparams(whole_dir, num_train_iter=6, eval_every=6),
                         dataset, log=_quiet)
    whole.fit(verbose=0)

    hp = helpers.tiny_hparams(resumed_dir, num_train_iter=6, eval_every=6)
    run = training.Run(hp, dataset, log=_quiet)
    callbacks = run.callbacks
    run.callbacks = lambda: [keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: (
        os.kill(os.getpid(), signal.SIGTERM) if run.step == 3 else None)), *callbacks()]
    with self.assertRaises(callbacks_lib.Interrupted):
      run.fit(verbose=0)
    resumed = training.Run(hp, dataset, log=_quiet)
    resumed.fit(verbose=0)
    self.assertEqual(resumed.step, 6)
    expected = _variables(whole.model)
    # Every weight, chain and optimizer slot is equal bit for bit; the log Z estimates (a
    # function of them, re-estimated in another compiled function) to float32 rounding.
    estimates = ("dvae/running_log_z", "rbm/log_z", "rbm/log_z_stderr")
    for path, value in _variables(resumed.model).items():
      if path in estimates:
        self.assertAllClose(value, expected[path], rtol=1e-5, atol=1e-4, msg=path)
      else:
        self.assertAllEqual(value, expected[path], msg=path)
    for got, want in zip(resumed.model.optimizer.variables, whole.model.optimizer.variables):
      self.assertAllEqual(got, want, msg=got.path)

  def test_the_stream_from_a_step_is_the_tail_of_the_stream_from_zero(self):
    dataset = dataclasses.replace(helpers.synthetic_dataset(num_train=7),
                                  dynamic_binarization=True)
    dataset = dataclasses.replace(dataset, train=dataset.train * 0.5)
    whole = [x.numpy() for x in data.train_dataset(dataset, 3, seed=5).take(9)]
    for start in (1, 2, 5):
      tail = [x.numpy() for x in data.train_dataset(dataset, 3, seed=5,
                                                    start_step=start).take(9 - start)]
      for got, want in zip(tail, whole[start:]):
        self.assertAllEqual(got, want)


class EpochTest(tf.test.TestCase):

  def test_epochs_end_at_evaluations_whatever_the_checkpoint_period(self):
    plan = lambda start, **hp: training.epoch_plan(helpers.replace(
        helpers.tiny_hparams("logs"), **hp), start)
    # 1000 steps, evaluations every 1000, checkpoints every 999: one epoch, not 1000.
    self.assertEqual(plan(0, num_train_iter=1000, eval_every=1000, checkpoint_every_steps=999),
                     [(0, 1, 1000)])
    self.assertEqual(plan(0, num_train_iter=20, eval_every=7), [(0, 2, 7), (2, 1, 6)])
    self.assertEqual(plan(3, num_train_iter=20, eval_every=7),
                     [(0, 1, 4), (1, 1, 7), (2, 1, 6)])
    self.assertEqual(plan(20, num_train_iter=20, eval_every=7), [])
    # A run of 2^31 - 1 steps is planned without a list of its epochs.
    self.assertLen(plan(0, num_train_iter=2**31 - 1, eval_every=3), 2)

  def test_step_checkpoints_fall_inside_epochs(self):
    hp = helpers.tiny_hparams(self.get_temp_dir(), num_train_iter=7, eval_every=7,
                              checkpoint_every_steps=3)
    run = training.Run(hp, helpers.synthetic_dataset(), log=_quiet)
    saved, save = [], run.save_latest
    run.save_latest = lambda: (saved.append(run.step), save())
    run.fit(verbose=0)
    self.assertEqual(saved, [3, 6, 7])


def _finished_run(log_dir):
  """(hparams, dataset) of a two-step run trained in `log_dir`."""
  hp = helpers.tiny_hparams(log_dir, num_train_iter=2, eval_every=2)
  dataset = helpers.synthetic_dataset()
  training.Run(hp, dataset, log=_quiet).fit(verbose=0)
  return hp, dataset


class DamagedBestTest(tf.test.TestCase):

  def test_a_damaged_best_checkpoint_does_not_block_a_finished_run(self):
    hp, dataset = _finished_run(self.get_temp_dir())
    best = os.path.join(runs.run_directory(hp), "checkpoints", "best")
    for name in os.listdir(best):
      if ".data-" in name:
        with open(os.path.join(best, name), "r+b") as f:
          f.truncate(10)
    lines = []
    run = training.Run(hp, dataset, log=lines.append)
    run.fit(verbose=0)
    results = run.final_evaluation()
    self.assertTrue(np.isfinite(results["test_nll"]))
    self.assertEqual(results["best_step"], 2)
    self.assertTrue(any("best checkpoint cannot be read" in line for line in lines), lines)


class OtherVersionCheckpointTest(tf.test.TestCase):

  def test_a_checkpoint_of_other_variables_is_refused_in_one_line(self):
    hp, dataset = _finished_run(self.get_temp_dir())
    latest = os.path.join(runs.run_directory(hp), "checkpoints", "latest")
    for name in os.listdir(latest):
      os.remove(os.path.join(latest, name))
    # As an older version of the program would have written it: other variables.
    other = tf.train.Checkpoint(model=tf.train.Checkpoint(rbm=tf.Variable(1.0)))
    tf.train.CheckpointManager(other, latest, max_to_keep=1).save(checkpoint_number=2)
    with self.assertRaisesRegex(runs.RunError, "written by another version of the program"):
      training.Run(hp, dataset, log=_quiet).fit(verbose=0)


class EvalHistoryTest(tf.test.TestCase):

  def test_a_step_evaluated_again_after_a_kill_keeps_one_record(self):
    path = os.path.join(self.get_temp_dir(), "eval_history.jsonl")
    for step in (10, 20):
      callbacks_lib.append_record(path, {"step": step, "val_nll": 1.0})
    with open(path, "a") as f:
      f.write('{"step": 30, "val')  # cut short by a kill
    # Resumed from the checkpoint of step 10, the run evaluates step 20 again.
    callbacks_lib.append_record(path, {"step": 20, "val_nll": 2.0})
    records = callbacks_lib.read_records(path)
    self.assertEqual(records, [{"step": 10, "val_nll": 1.0}, {"step": 20, "val_nll": 2.0}])
    self.assertEqual(os.listdir(self.get_temp_dir()), ["eval_history.jsonl"])


class CraftedModelFileTest(tf.test.TestCase):

  def save_with(self, **changes):
    hp = helpers.tiny_hparams(self.get_temp_dir())
    model = DVAE.from_hparams(hp, helpers.synthetic_dataset().train_mean)
    model.compile(keras.optimizers.Adam(1e-3))
    path = os.path.join(self.get_temp_dir(), "model.keras")
    model.save(path)
    crafted = os.path.join(self.get_temp_dir(), "crafted.keras")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(crafted, "w") as target:
      for item in source.infolist():
        content = source.read(item)
        if item.filename == "config.json":
          stored = json.loads(content)
          stored["config"]["prior"]["config"].update(changes)
          content = json.dumps(stored)
        target.writestr(item, content)
    return crafted

  def test_a_crafted_num_chains_is_refused_before_allocation(self):
    path = self.save_with(num_chains=4_000_000_000)
    with self.assertRaisesRegex(Exception, "num_chains"):
      keras.models.load_model(path, safe_mode=True)

  def test_crafted_units_are_refused_before_allocation(self):
    path = self.save_with(num_left=4_000_000, num_right=4_000_000)
    with self.assertRaisesRegex(Exception, "lower num_chains or the units"):
      keras.models.load_model(path, safe_mode=True)

  def test_a_dimod_sampler_named_in_a_file_is_not_imported_on_load(self):
    module = "dvae_test_planted_sampler"
    folder = self.get_temp_dir()
    with open(os.path.join(folder, f"{module}.py"), "w") as f:
      f.write("raise SystemExit('imported')\n")
    sys.path.insert(0, folder)
    self.addCleanup(sys.path.remove, folder)
    path = self.save_with(sampler={"dimod_sampler": f"{module}.Sampler",
                                   "inverse_temperature": 1.0,
                                   "estimate_inverse_temperature": True, "sample_kwargs": {}})
    try:
      keras.models.load_model(path, safe_mode=True)
    except Exception:  # pylint: disable=broad-except
      pass  # whether it loads or not, it must not have run the module
    self.assertNotIn(module, sys.modules)
