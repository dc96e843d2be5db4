"""The training run: fit loop, periodic evaluation, checkpoints, summaries, results.json (SPEC §5).

A run lives in `<log_dir>/<dataset>/<struct>/<baseline>/<k>/`:

    checkpoints/latest/   the newest state, for resuming (model, chains, optimizer, step, best record)
    checkpoints/best/     the state with the best validation NLL so far
    summaries/            TensorBoard event files
    eval_history.jsonl    one line per periodic evaluation (step, validation/test NLL, log Z)
    results.json          the final evaluation of the best checkpoint and the run's hparams

Running the same configuration again resumes from `checkpoints/latest`. All randomness is
stateless and keyed by (seed, step), so the noise of a resumed step is the noise it would
have had without the interruption.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from dvae import data as data_lib
from dvae import evaluation
from dvae.model import DVAE

# Steps between progress lines and scalar summaries.
LOG_EVERY = 100


class NonFiniteError(RuntimeError):
  """A loss term or the gradient became NaN or infinite."""


def run_directory(hparams):
  """Where the run of `hparams` keeps its checkpoints, summaries and results."""
  return os.path.join(hparams.log_dir, hparams.dataset_name, hparams.struct, hparams.baseline,
                      str(hparams.k))


def make_strategy(name):
  """The tf.distribute strategy for `distribute` = "none", "mirrored" or "multi_worker".

  "mirrored" replicates over the local devices; "multi_worker" over the workers that the
  TF_CONFIG environment variable describes. Each replica trains on its share of the global
  batch with its own sampler noise; gradients are summed across replicas.
  """
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def learning_rate_schedule(base_lr, num_train_iter):
  """lr/10 until 2% of training, lr until 60%, lr/3 until 75%, lr/10 until 95%, lr/33 after."""
  boundaries = [int(f * num_train_iter) for f in (0.02, 0.6, 0.75, 0.95)]
  values = [base_lr / 10, base_lr, base_lr / 3, base_lr / 10, base_lr / 33]
  return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def write_json_atomically(path, content):
  """Writes JSON to a temporary name and renames it, so `path` is never half-written."""
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "w") as f:
    json.dump(content, f, indent=2, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


def image_tiles(images, rows, columns, image_shape):
  """[≤ rows·columns, H·W] images → one [1, H·rows, W·columns, 1] tiled image (blank-padded)."""
  height, width = image_shape
  images = images[:rows * columns]
  images = tf.pad(images, [[0, rows * columns - tf.shape(images)[0]], [0, 0]])
  images = tf.reshape(images, [rows, columns, height, width])
  tiled = tf.reshape(tf.transpose(images, [0, 2, 1, 3]),
                     [1, height * rows, width * columns, 1])
  return tiled


class Trainer:
  """Trains and evaluates one configuration.

  Args:
    hparams: a validated `dvae.config.HParams`.
    dataset: a `dvae.data.Dataset`.
    log: callable taking one line of progress text.
  """

  def __init__(self, hparams, dataset, log=print):
    self.hparams = hparams
    self.dataset = dataset
    self.log = log
    self.directory = run_directory(hparams)
    self.strategy = make_strategy(hparams.distribute)
    with self.strategy.scope():
      self.model = DVAE(hparams, dataset.train_mean)
      self.model.compile(optimizer=keras.optimizers.Adam(
          learning_rate_schedule(hparams.base_lr, hparams.num_train_iter), epsilon=1e-3))
      self.model.optimizer.build(self.model.trainable_variables)
      self.best_val_nll = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
      self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
      self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
      self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    checkpoint = tf.train.Checkpoint(
        model=self.model, optimizer=self.model.optimizer, best_val_nll=self.best_val_nll,
        best_step=self.best_step, train_seconds=self.train_seconds,
        wall_seconds=self.wall_seconds)
    self.latest = tf.train.CheckpointManager(
        checkpoint, os.path.join(self.directory, "checkpoints", "latest"), max_to_keep=1)
    self.best = tf.train.CheckpointManager(
        checkpoint, os.path.join(self.directory, "checkpoints", "best"), max_to_keep=1)
    self.writer = tf.summary.create_file_writer(os.path.join(self.directory, "summaries"))
    self._train_step = tf.function(self._distributed_train_step)
    self._clock = (time.monotonic(), 0.0)

  def _distributed_train_step(self, batch):
    """One training step on every replica; the logs averaged over replicas."""
    logs = self.strategy.run(self.model.train_step, args=(batch,))
    return {name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in logs.items()}

  def batches(self, seed):
    """The endless training batches, split across replicas."""
    return iter(self.strategy.experimental_distribute_dataset(
        data_lib.train_dataset(self.dataset, self.hparams.train_batch_size, seed=seed)))

  @property
  def step(self):
    return int(self.model.optimizer.iterations.numpy())

  def restore_latest(self):
    """Resumes from the latest checkpoint if there is one; returns the step reached."""
    if self.latest.latest_checkpoint:
      self.latest.checkpoint.restore(self.latest.latest_checkpoint).assert_existing_objects_matched()
      self.log(f"resumed from {self.latest.latest_checkpoint} at step {self.step}")
    self._clock = (time.monotonic(), float(self.wall_seconds.numpy()))
    return self.step

  def _tick(self):
    """Brings `wall_seconds` (wall time of the run over all its sessions) up to now."""
    started, before = self._clock
    self.wall_seconds.assign(before + time.monotonic() - started)

  def save_latest(self):
    self._tick()
    self.latest.save(checkpoint_number=self.step)

  def _check_finite(self, logs):
    for term in ("weight_decay", "log_z_surrogate", "reconstruction", "kl", "loss", "grad_norm"):
      if not np.isfinite(logs[term]):
        name = {"grad_norm": "gradients", "log_z_surrogate": "log Z surrogate"}.get(term, term)
        kept = self.latest.latest_checkpoint or "none (no checkpoint was written yet)"
        raise NonFiniteError(
            f"non-finite {name} at step {self.step}; training stopped, last good checkpoint "
            f"kept: {kept}")

  def _summaries(self, logs):
    with self.writer.as_default(step=self.step):
      for name, value in logs.items():
        tf.summary.scalar(f"train/{name}", value)
      tf.summary.scalar("train/beta", self.hparams.beta)
      for name, value in self.model.prior.summaries().items():
        tf.summary.scalar(f"prior/{name}", value)

  def evaluate(self, num_samples_valid, num_samples_test, tag):
    """Re-estimates log Z, evaluates validation and test, and writes summaries."""
    log_z, log_z_stderr = (float(v) for v in self.model.rbm.update_log_z("ais"))
    batch = self.hparams.eval_batch_size
    results = {"log_z": log_z, "log_z_stderr": log_z_stderr}
    for split, images, k in (("val", self.dataset.valid, num_samples_valid),
                             ("test", self.dataset.test, num_samples_test)):
      for name, value in evaluation.evaluate(self.model, images, k, batch).items():
        results[f"{split}_{name}"] = value
    with self.writer.as_default(step=self.step):
      for name, value in results.items():
        tf.summary.scalar(f"{tag}/{name}", value)
      shape = self.dataset.image_shape
      if shape is not None:  # Flat data has no picture to show.
        inputs = tf.constant(self.dataset.valid[:50])
        pairs = tf.reshape(tf.stack([inputs, self.model(inputs)], axis=1),
                           [-1, self.dataset.num_dims])
        tf.summary.image(f"{tag}/inputs_and_reconstructions", image_tiles(pairs, 10, 10, shape))
        tf.summary.image(f"{tag}/samples", image_tiles(self.model.generate(100), 10, 10, shape))
    self.log(f"step {self.step}: log Z {log_z:.3f} ± {log_z_stderr:.3f}, "
             f"val NLL {results['val_nll']:.2f}, test NLL {results['test_nll']:.2f}")
    return results

  def _append_history(self, results):
    """One line of `eval_history.jsonl` per periodic evaluation: the learning curve."""
    with open(os.path.join(self.directory, "eval_history.jsonl"), "a") as f:
      f.write(json.dumps({"step": self.step, **results}) + "\n")

  def fit(self):
    """Trains up to `num_train_iter` steps with periodic evaluation and checkpoints."""
    hp = self.hparams
    start = self.restore_latest()
    batches = self.batches(seed=hp.seed * 1_000_003 + start)
    last_save_time = last_log_time = time.monotonic()
    last_log_step = start
    while self.step < hp.num_train_iter:
      began = time.monotonic()
      logs = {name: float(value) for name, value in self._train_step(next(batches)).items()}
      self.train_seconds.assign_add(time.monotonic() - began)
      self._check_finite(logs)
      step = self.step
      if step % LOG_EVERY == 0 or step == hp.num_train_iter:
        now = time.monotonic()
        rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
        eta = (hp.num_train_iter - step) / max(rate, 1e-9)
        self.log(f"step {step}/{hp.num_train_iter} loss {logs['loss']:.3f} "
                 f"{rate:.1f} steps/s ETA {eta / 60:.1f} min")
        self._summaries(logs)
        last_log_step, last_log_time = step, now
      if step % hp.eval_every == 0 or step == hp.num_train_iter:
        results = self.evaluate(hp.periodic_eval_iw_samples, hp.periodic_eval_iw_samples,
                                tag="eval")
        self._append_history(results)
        if results["val_nll"] < self.best_val_nll.numpy():
          self.best_val_nll.assign(results["val_nll"])
          self.best_step.assign(step)
          self.best.save(checkpoint_number=step)
        self.save_latest()
        last_save_time = time.monotonic()
      elif (step % hp.checkpoint_every_steps == 0
            or time.monotonic() - last_save_time >= hp.checkpoint_every_secs):
        self.save_latest()
        last_save_time = time.monotonic()
    self.writer.flush()

  def final_evaluation(self):
    """Restores the best checkpoint and evaluates it (SPEC §5); writes results.json."""
    hp = self.hparams
    steps = self.step
    self._tick()
    train_seconds = float(self.train_seconds.numpy())
    wall_seconds = float(self.wall_seconds.numpy())
    if self.best.latest_checkpoint:
      self.best.checkpoint.restore(self.best.latest_checkpoint).assert_existing_objects_matched()
    results = self.evaluate(hp.periodic_eval_iw_samples, hp.eval_iw_samples, tag="final")
    results.update(
        steps=steps, best_step=int(self.best_step.numpy()), wall_seconds=wall_seconds,
        train_seconds=train_seconds,
        steps_per_second=steps / train_seconds if train_seconds > 0 else None,
        val_iw_samples=hp.periodic_eval_iw_samples, test_iw_samples=hp.eval_iw_samples,
        hparams=dataclasses.asdict(hp))
    write_json_atomically(os.path.join(self.directory, "results.json"), results)
    self.writer.flush()
    return results
