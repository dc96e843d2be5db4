"""DVAE as a Keras model: checkpoints, .keras files, export, fit with Keras's callbacks, a log Z
that is current wherever it enters a reported number, and the run's schedule outside the model."""

import csv
import os
import re

import keras
import numpy as np
import tensorflow as tf

import helpers
from dvae.model import DVAE, kl_warm_up

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(log_dir, lr=1e-2, **overrides):
  hparams = helpers.tiny_hparams(log_dir, **overrides)
  model = DVAE.from_hparams(hparams, helpers.synthetic_dataset().train_mean)
  model.compile(keras.optimizers.Adam(lr, epsilon=1e-3), eval_iw_samples=5)
  return model


def _trained(log_dir, steps=6, **overrides):
  model = _model(log_dir, **overrides)
  images = np.concatenate([helpers.synthetic_dataset().train] * (1 + steps // 10))
  model.fit(images, batch_size=20, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
  return model


def _values(model):
  return {v.path: v.numpy() for v in model.variables}


class SavingTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dataset = helpers.synthetic_dataset()
    self.images = tf.constant(self.dataset.valid)

  def assertSameModel(self, restored, model):
    self.assertEqual(sorted(_values(restored)), sorted(_values(model)))
    for path, value in _values(model).items():
      self.assertAllEqual(_values(restored)[path], value, msg=path)
    self.assertAllEqual(restored.discrete_log_weights(self.images, 4, [3, 4]),
                        model.discrete_log_weights(self.images, 4, [3, 4]))

  def test_checkpoint_of_the_model_alone_restores_every_variable(self):
    # The Gaussian-integral baseline with two latent layers has every kind of variable: two
    # encoders, the decoder, GI scales, RBM parameters, chains and log Z.
    model = _trained(self.get_temp_dir(), baseline="dvaes_gi", struct="2-layer-nonlin")
    model.prior_machine.update_log_z("ais", num_betas=20, num_samples=16, seed=[0, 1])
    path = tf.train.Checkpoint(model=model).write(os.path.join(self.get_temp_dir(), "ckpt"))
    fresh = _model(os.path.join(self.get_temp_dir(), "fresh"), baseline="dvaes_gi",
                   struct="2-layer-nonlin")
    self.assertNotAllClose(fresh.encoder_nets[1].get_weights()[0],
                           model.encoder_nets[1].get_weights()[0])
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    self.assertSameModel(fresh, model)

  def test_save_weights_round_trips_every_variable(self):
    model = _trained(self.get_temp_dir(), baseline="dvaes_gi", struct="2-layer-nonlin")
    path = os.path.join(self.get_temp_dir(), "model.weights.h5")
    model.save_weights(path)
    fresh = _model(os.path.join(self.get_temp_dir(), "fresh"), baseline="dvaes_gi",
                   struct="2-layer-nonlin")
    fresh.load_weights(path)
    self.assertSameModel(fresh, model)

  def test_keras_file_loads_the_same_model_and_compile_settings(self):
    model = _trained(self.get_temp_dir(), baseline="dvaes_gi", struct="2-layer-nonlin")
    model.compile(keras.optimizers.Adam(1e-3), kl_coefficient=kl_warm_up(100),
                  eval_iw_samples=7)
    model.optimizer.build(model.trainable_variables)
    path = os.path.join(self.get_temp_dir(), "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    self.assertIsInstance(loaded, DVAE)
    self.assertSameModel(loaded, model)
    self.assertEqual(loaded.eval_iw_samples, 7)
    self.assertAllClose(loaded.kl_coefficient(15), 0.5)

  def test_model_export_serves_reconstructions(self):
    model = _model(self.get_temp_dir())
    path = os.path.join(self.get_temp_dir(), "export")
    model.export(path, verbose=False)
    loaded = tf.saved_model.load(path)
    self.assertAllClose(loaded.serve(self.images), model(self.images), atol=1e-6)

  def test_image_size_comes_from_the_training_mean(self):
    hparams = helpers.tiny_hparams(self.get_temp_dir())
    model = DVAE.from_hparams(hparams, np.full(100, 0.3, np.float32))
    model.compile(eval_iw_samples=2)
    images = (np.random.default_rng(0).random([40, 100]) < 0.3).astype(np.float32)
    model.fit(images, batch_size=20, epochs=1, verbose=0)
    self.assertEqual(model(images).shape, (40, 100))
    self.assertTrue(np.isfinite(model.evaluate(images, batch_size=20, verbose=0)[0]))


class FitTest(tf.test.TestCase):

  def test_fit_with_keras_callbacks_logs_epoch_means_and_keeps_the_best_model(self):
    dataset = helpers.synthetic_dataset()
    model = _model(self.get_temp_dir(), num_chains=20)
    tmp = self.get_temp_dir()
    batch_losses = []
    checkpoint = keras.callbacks.ModelCheckpoint(os.path.join(tmp, "best.keras"),
                                                 save_best_only=True)
    early = keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)
    history = model.fit(
        dataset.train, batch_size=20, epochs=3, shuffle=False, verbose=0,
        validation_data=dataset.valid, validation_batch_size=10,
        callbacks=[checkpoint, early, keras.callbacks.TerminateOnNaN(),
                   keras.callbacks.CSVLogger(os.path.join(tmp, "log.csv")),
                   keras.callbacks.TensorBoard(os.path.join(tmp, "tb")),
                   keras.callbacks.LambdaCallback(
                       on_train_batch_end=lambda batch, logs: batch_losses.append(logs))])
    self.assertEqual(set(history.history), {"loss", "reconstruction", "kl", "weight_decay",
                                            "log_z", "log_z_stderr", "negative_phase_lag",
                                            "val_loss", "val_neg_elbo"})
    # Each epoch's entry is the mean over its 10 steps: the last running mean of the epoch.
    for epoch in range(3):
      self.assertAllClose(history.history["loss"][epoch], batch_losses[10 * epoch + 9]["loss"])
    # Both callbacks minimise the validation NLL (`val_loss`) without being told how.
    self.assertEqual(checkpoint.monitor, "val_loss")
    self.assertAllClose(checkpoint.best, min(history.history["val_loss"]))
    self.assertTrue(early.monitor_op(1.0, 2.0))
    self.assertTrue(os.path.exists(os.path.join(tmp, "best.keras")))
    with open(os.path.join(tmp, "log.csv")) as f:
      rows = list(csv.DictReader(f))
    self.assertLen(rows, 3)
    self.assertNotIn("log_z_surrogate", rows[0])

  def test_backup_and_restore_resumes_at_the_same_step_with_the_same_chains(self):
    dataset = helpers.synthetic_dataset()

    class Kill(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
          raise KeyboardInterrupt

    def fit(model, backup, extra=()):
      return model.fit(dataset.train, batch_size=20, epochs=3, shuffle=False, verbose=0,
                       callbacks=[keras.callbacks.BackupAndRestore(backup), *extra])

    uninterrupted = _model(os.path.join(self.get_temp_dir(), "a"))
    fit(uninterrupted, os.path.join(self.get_temp_dir(), "backup_a"))
    interrupted = _model(os.path.join(self.get_temp_dir(), "b"))
    backup = os.path.join(self.get_temp_dir(), "backup_b")
    with self.assertRaises(KeyboardInterrupt):
      fit(interrupted, backup, [Kill()])
    saved_chains = interrupted.prior_machine.chains.numpy()
    # The same call in a new process: a fresh model resumes from the backup.
    resumed = _model(os.path.join(self.get_temp_dir(), "c"))
    steps = []
    fit(resumed, backup, [keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: steps.append(
            (int(resumed.optimizer.iterations.numpy()), resumed.prior_machine.chains.numpy())))])
    self.assertEqual(steps[0][0], 20)
    self.assertAllEqual(steps[0][1], saved_chains)
    for path, value in _values(uninterrupted).items():
      self.assertAllClose(_values(resumed)[path], value, atol=1e-5, msg=path)


class LogZTest(tf.test.TestCase):

  def test_evaluate_after_fit_scores_with_a_log_z_of_the_current_parameters(self):
    dataset = helpers.synthetic_dataset()
    model = _trained(self.get_temp_dir(), steps=10, lr=5e-2)
    self.assertFalse(model.prior_machine.log_z_is_current())
    nll = model.evaluate(dataset.valid, batch_size=10, verbose=0)[0]
    self.assertTrue(model.prior_machine.log_z_is_current())
    automatic, automatic_stderr = model.prior_machine.log_z.numpy(), model.prior_machine.log_z_stderr.numpy()
    # The same score with log Z estimated by hand first (another seed): the NLL moves by
    # exactly the difference of the two estimates, which agree within their errors.
    log_z, stderr = (float(v) for v in model.prior_machine.update_log_z("ais", seed=[5, 6]))
    self.assertAllClose(model.evaluate(dataset.valid, batch_size=10, verbose=0)[0],
                        nll + log_z - automatic, atol=1e-3)
    self.assertLess(abs(log_z - automatic), 4 * (stderr + automatic_stderr) + 0.02)

  def test_running_log_z_of_the_training_loss_follows_the_parameters(self):
    # 60 steps at the paper's learning rate: the running log Z of the loss (for the parameters
    # at the start of the last step) agrees with an AIS estimate for those parameters.
    model = _trained(self.get_temp_dir(), steps=60, lr=3e-3, num_chains=200, num_sweeps=5)
    self.assertEqual(int(model.optimizer.iterations.numpy()), 60)
    rbm = model.prior_machine
    rbm.set_weights([*np.split(rbm.running_log_z_parameters.numpy(), [100, 200])[:2],
                     rbm.running_log_z_parameters.numpy()[200:].reshape(100, 100),
                     *rbm.get_weights()[3:]])
    log_z, stderr = (float(v) for v in rbm.log_z_ais(num_betas=1000, num_samples=1024,
                                                     seed=[1, 1]))
    running = float(rbm.running_log_z.numpy())
    self.assertLess(abs(running - log_z),
                    4 * (stderr + float(rbm.running_log_z_stderr.numpy())) + 0.1)


class ScheduleTest(tf.test.TestCase):

  def test_kl_warm_up_and_evaluation_samples_are_compile_arguments(self):
    dataset = helpers.synthetic_dataset()
    # Built for a run of 1000 steps (the hparams), trained for a warm-up of 30.
    model = _model(self.get_temp_dir(), num_train_iter=1000)
    model.compile(keras.optimizers.Adam(1e-3), kl_coefficient=kl_warm_up(100),
                  eval_iw_samples=1)
    model.fit(dataset.train, batch_size=20, epochs=1, steps_per_epoch=3, verbose=0)
    self.assertAllClose(model.kl_coefficient(model.optimizer.iterations), 0.1)
    self.assertAllClose(model.kl_coefficient(1000), 1.0)
    # With one importance sample the IW bound is the ELBO.
    logs = model.evaluate(dataset.valid, batch_size=10, verbose=0, return_dict=True)
    self.assertAllClose(logs["loss"], logs["neg_elbo"], rtol=1e-6)


class ReadmeExampleTest(tf.test.TestCase):

  def test_readme_library_example_runs(self):
    with open(os.path.join(REPO, "README.md")) as f:
      readme = f.read()
    section = readme[readme.index("## Library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    cwd = os.getcwd()
    os.chdir(self.get_temp_dir())
    try:
      exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
    finally:
      os.chdir(cwd)
    self.assertTrue(os.path.exists(os.path.join(self.get_temp_dir(), "dvae.keras")))


if __name__ == "__main__":
  tf.test.main()
