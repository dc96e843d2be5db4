"""#15: `steps_per_execution` runs the same training in fewer calls of `fit`'s compiled loop.

Every step's noise is keyed by (seed, step) and the data stream by the step a session starts
at, so a run trained n steps per call has the parameters of one trained a step per call.
"""

import os
import shutil
import signal
import subprocess
import sys
from unittest import mock

import keras
import tensorflow as tf

import helpers
from dvae import callbacks, data, runs, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Epochs of 10 steps: a stop at step 7 leaves a 3-step epoch to complete, which 5 does not divide.
STEPS = dict(num_train_iter=20, eval_every=20, checkpoint_every_steps=10)


def _hparams(log_dir, steps_per_execution):
  return helpers.tiny_hparams(log_dir, steps_per_execution=steps_per_execution, **STEPS)


# The estimates of log Z: the running one sums float64 increments and the AIS of the final
# validation float32 products, both of which XLA may round differently in a graph that runs
# one step per call and in one that runs several.
LOG_Z_ESTIMATES = ("rbm/log_z", "rbm/log_z_stderr", "running_log_z", "running_log_z_stderr",
                   "negative_phase_lag", "path_log_z")


def _state(run):
  """The model's and the optimizer's variables by path (but the estimates of log Z), and the
  last training logs."""
  values = {v.path: v.numpy() for v in run.model.variables if v.path not in LOG_Z_ESTIMATES}
  # The optimizer's name, the first part of its variables' paths, is numbered per process.
  values.update({"optimizer/" + v.path.split("/", 1)[-1]: v.numpy()
                 for v in run.model.optimizer.variables})
  return values, run.last_logs


class SignalAt(keras.callbacks.Callback):
  """Raises SIGINT in this process once training has taken `step` steps."""

  def __init__(self, step):
    super().__init__()
    self.step = step

  def on_train_batch_end(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) == self.step:
      signal.raise_signal(signal.SIGINT)


class StepsPerExecutionTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dataset = helpers.synthetic_dataset()

  def fit(self, log_dir, steps_per_execution):
    """Trains (or resumes) the run in `log_dir`; returns it and its log lines."""
    lines = []
    run = training.Run(_hparams(log_dir, steps_per_execution), self.dataset, log=lines.append)
    run.fit(verbose=0)
    return run, lines

  def assertSameState(self, run, reference):
    (values, logs), (expected_values, expected_logs) = _state(run), _state(reference)
    self.assertEqual(run.step, STEPS["num_train_iter"])
    self.assertEqual(sorted(values), sorted(expected_values))
    for path, value in expected_values.items():
      self.assertAllEqual(values[path], value, msg=path)
    self.assertEqual(logs, expected_logs)

  def test_five_steps_per_call_train_as_one_step_per_call(self):
    reference, _ = self.fit(os.path.join(self.get_temp_dir(), "one"), 1)
    run, lines = self.fit(os.path.join(self.get_temp_dir(), "five"), 5)
    self.assertEqual(run.model.steps_per_execution, 5)
    self.assertEmpty([line for line in lines if "steps_per_execution" in line])
    self.assertSameState(run, reference)

  def test_resumed_mid_epoch_run_completes_the_epoch_a_step_per_call_then_goes_on_by_five(self):
    stopped = os.path.join(self.get_temp_dir(), "stopped")
    run = training.Run(_hparams(stopped, 1), self.dataset, log=lambda line: None)
    own_callbacks = run.callbacks
    run.callbacks = lambda: [SignalAt(7), *own_callbacks()]
    with self.assertRaisesRegex(callbacks.Interrupted, "at step 7"):
      run.fit(verbose=0)
    copies = {n: os.path.join(self.get_temp_dir(), f"resumed{n}") for n in (1, 5)}
    for log_dir in copies.values():
      shutil.copytree(stopped, log_dir)

    reference, _ = self.fit(copies[1], 1)
    run, lines = self.fit(copies[5], 5)
    self.assertEqual(runs.run_directory(run.hparams),
                     runs.run_directory(_hparams(copies[5], 1)))
    self.assertIn("steps_per_execution 1 instead of 5 for epochs of 3 steps (it has to divide "
                  "them)", lines)
    self.assertEqual(run.model.steps_per_execution, 5)
    # Compiled again for 5 steps per call at step 10, the optimizer went on from its state.
    self.assertSameState(run, reference)

  def test_session_resumed_mid_epoch_goes_on_with_the_next_batches(self):
    hp = _hparams(self.get_temp_dir(), 1)
    run = training.Run(hp, self.dataset, log=lambda line: None)
    calls = []
    with mock.patch.object(run, "restore_latest", return_value=7), \
        mock.patch.object(run.model, "fit", side_effect=lambda **kw: calls.append(kw)):
      run.fit()
    self.assertEqual([call["steps_per_epoch"] for call in calls], [3, 10])
    stream = list(data.train_dataset(self.dataset, hp.train_batch_size,
                                     seed=hp.seed * 1_000_003 + 7).take(4))
    self.assertAllEqual(next(iter(calls[0]["x"])), stream[0])
    # The epoch's completion used batches 0–2 of the session's stream; the next call starts at 3.
    self.assertAllEqual(next(iter(calls[1]["x"])), stream[3])

  def test_non_positive_value_is_refused_in_one_line(self):
    for value in (0, -1):
      result = subprocess.run(
          [sys.executable, os.path.join(REPO, "run_training.py"),
           f"--log_dir={os.path.join(self.get_temp_dir(), 'logs')}",
           f"--steps_per_execution={value}"],
          capture_output=True, text=True, timeout=60, cwd=REPO,
          env=dict(os.environ, DVAE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3"))
      self.assertEqual(result.returncode, 2, result.stderr)
      lines = result.stderr.strip().splitlines()
      self.assertLen(lines, 1, result.stderr)
      self.assertIn(f"steps_per_execution={value}", lines[0])
      self.assertIn("≥ 1", lines[0])
      self.assertFalse(os.path.exists(os.path.join(self.get_temp_dir(), "logs")))


if __name__ == "__main__":
  tf.test.main()
