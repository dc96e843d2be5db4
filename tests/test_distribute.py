"""Training under tf.distribute.MirroredStrategy on two logical CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

# Logical devices must be configured before TensorFlow initialises, so the comparison runs in
# a fresh process.
SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import helpers
    from dvae import data, training
    dataset = helpers.synthetic_dataset()
    losses = {{}}
    for distribute in ("none", "mirrored"):
      hp = helpers.tiny_hparams({log_dir!r} + "/" + distribute, distribute=distribute,
                                num_train_iter=1_000_000, base_lr=2e-2)
      run = training.Run(hp, dataset, log=lambda _: None)
      # Epochs of one step: the history holds every step's loss.
      history = run.model.fit(data.train_dataset(dataset, hp.train_batch_size, seed=0),
                              steps_per_epoch=1, epochs=30, verbose=0)
      losses[distribute] = history.history["loss"]
      losses[distribute + "_replicas"] = run.strategy.num_replicas_in_sync
      if distribute == "mirrored":
        chains = run.strategy.experimental_local_results(run.model.prior_machine.chains.value)
        losses["chains_differ"] = bool(tf.reduce_any(chains[0] != chains[1]))
        # The evaluation after mirrored training scores with a log Z of the final parameters.
        run.model.evaluate(data.eval_dataset(dataset.valid, 10), verbose=0)
        losses["log_z_current"] = run.model.prior_machine.log_z_is_current()
    print(json.dumps(losses))
""")


class MirroredTrainingTest(tf.test.TestCase):

  def test_mirrored_run_follows_single_device_loss_trajectory(self):
    script = SCRIPT.format(repo=REPO, tests=TESTS, log_dir=self.get_temp_dir())
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, cwd=REPO,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    self.assertEqual(losses["none_replicas"], 1)
    self.assertEqual(losses["mirrored_replicas"], 2)
    single, mirrored = np.array(losses["none"]), np.array(losses["mirrored"])
    # Same global batch of 20, same data order, same initial weights; the replicas draw their
    # own posterior and sampler noise and normalise their own half-batches, so the two
    # trajectories agree up to that noise: within 5% at every step and 2% on average.
    relative = np.abs(mirrored - single) / single
    self.assertLess(relative.max(), 0.05)
    self.assertLess(relative.mean(), 0.02)
    self.assertTrue(losses["chains_differ"], "each replica should keep its own chains")
    self.assertTrue(losses["log_z_current"])


if __name__ == "__main__":
  tf.test.main()
