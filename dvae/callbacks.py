"""What a training run needs from `model.fit` beyond Keras's own callbacks (SPEC §5).

Keras's callbacks do the generic work (TensorBoard scalars of the epoch logs, TerminateOnNaN,
progress lines); these do the rest:

    Evaluation    at every validated epoch: the test split's IW estimate, one line of
                  eval_history.jsonl, TensorBoard scalars `eval/*` and a log line
    Summaries     the run's own scalars (KL coefficient, β, the prior's, running log Z) and
                  image summaries (inputs beside reconstructions, samples of the prior)
    Checkpoints   the latest state every `every_steps` steps or `every_secs` seconds, and the
                  state with the best validation NLL (`val_loss`), both atomic and resumable
    TrainingClock the training time and the wall time of the run over all its sessions
    StopOnSignal  SIGTERM / SIGINT: save at the end of the current step, then stop

The step of every record is the optimizer's iteration count: the number of training steps
taken, which survives restarts with the checkpoint. Keras calls the batch hooks once per call
of the compiled training loop, every `steps_per_execution` steps (a hparam): a "step" below
is such a call, after which a time-based checkpoint is saved or a signal stops training.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import typing
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from dvae import evaluation, runs

if typing.TYPE_CHECKING:
  from dvae.model import DVAE


def image_tiles(images: tf.Tensor | np.ndarray, rows: int, columns: int,
                image_shape: Sequence[int]) -> tf.Tensor:
  """[≤ rows·columns, H·W] images → one [1, H·rows, W·columns, 1] tiled image (blank-padded).

  Args:
    images: [N, H·W] row-major images, N ≤ rows·columns (any beyond are dropped).
    rows: tiles down.
    columns: tiles across.
    image_shape: (H, W).

  Returns:
    [1, H·rows, W·columns, 1], image i at tile (i // columns, i % columns), blank (0) where
    there are fewer images than tiles.
  """
  height, width = image_shape
  images = images[:rows * columns]
  images = tf.pad(images, [[0, rows * columns - tf.shape(images)[0]], [0, 0]])
  images = tf.reshape(images, [rows, columns, height, width])
  tiled = tf.reshape(tf.transpose(images, [0, 2, 1, 3]),
                     [1, height * rows, width * columns, 1])
  return tiled


def image_summaries(model: DVAE, images: np.ndarray, image_shape: Sequence[int],
                    prefix: str = "", conditions: np.ndarray | None = None) -> None:
  """Writes `images` beside their reconstructions and 100 decoded states of the prior's chains
  as 10 × 10 tiles (to the default summary writer).

  A conditional model needs `conditions` [N, C], those of `images`: the reconstructions use
  their own, and the samples the first rows' in turn (the N rows repeated as needed).

  Args:
    model: the `dvae.model.DVAE`.
    images: [N, D] images, of which the first 50 are shown; D = H·W.
    image_shape: (H, W).
    prefix: the summaries' name prefix ("final/" for the final evaluation's).
    conditions: [N, C] conditions of `images` for a conditional model, else None.
  """
  num_samples = min(100, model.prior_machine.num_chains)
  inputs = images = tf.constant(images[:50])
  condition = None
  if conditions is not None:
    inputs = {"x": images, "condition": tf.constant(conditions[:50], tf.float32)}
    condition = tf.constant(np.resize(np.asarray(conditions, np.float32),
                                      [num_samples, np.shape(conditions)[1]]))
  pairs = tf.reshape(tf.stack([images, model(inputs)], axis=1), [-1, model.num_dims])
  tf.summary.image(f"{prefix}inputs_and_reconstructions",
                   image_tiles(pairs, 10, 10, image_shape))
  samples = model.generate(num_samples, condition=condition)
  tf.summary.image(f"{prefix}samples", image_tiles(samples, 10, 10, image_shape))


def _step(model):
  return int(model.optimizer.iterations.numpy())


def scalars(name: str, value: typing.Any) -> None:
  """Writes `value` as the scalar `name`, or a vector (one per label, `dvae.clamped`) as the
  scalars `name`/label_y."""
  values = np.asarray(value, np.float64)
  if values.ndim == 0:
    tf.summary.scalar(name, values)
    return
  for label, entry in enumerate(values.reshape(-1)):
    tf.summary.scalar(f"{name}/label_{label}", entry)


def _numbers(value):
  """A number with 3 decimals, or a list of them (one per label, `dvae.clamped`)."""
  if isinstance(value, list):
    return "[" + ", ".join(f"{entry:.3f}" for entry in value) + "]"
  return f"{value:.3f}"


def _finite(logs):
  return all(math.isfinite(value) for value in logs.values())


class Evaluation(keras.callbacks.Callback):
  """After each validation (`val_loss` in the epoch logs), scores the test split too.

  Keras's validation (`model.evaluate`, which re-estimates log Z for the current parameters)
  has just given the validation NLL; this adds the test split with the same k, appends
  {step, log_z, log_z_stderr, val_nll, val_neg_elbo, test_nll, test_neg_elbo} to `history_path`
  and writes them as TensorBoard scalars `eval/*`.

  Args:
    test_images: [N, D] binary images.
    num_samples: k, importance samples per image.
    batch_size: images per evaluation batch.
    history_path: the JSON-lines file to append to.
    summary_dir: TensorBoard directory.
    log: a function of one line.
    test_conditions: [N, C] conditions of `test_images` for a conditional model, else None.
  """

  def __init__(self, test_images: np.ndarray, num_samples: int, batch_size: int,
               history_path: str, summary_dir: str, log: Callable[[str], None],
               test_conditions: np.ndarray | None = None):
    super().__init__()
    self.test_images, self.num_samples, self.batch_size = test_images, num_samples, batch_size
    self.test_conditions = test_conditions
    self.history_path, self.log = history_path, log
    self.writer = tf.summary.create_file_writer(summary_dir)

  def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
    """After a validated epoch with finite logs: evaluates the test split and records both.

    Args:
      epoch: the epoch's index.
      logs: the epoch logs, with `val_loss` and `val_neg_elbo` when it was validated.
    """
    logs = logs or {}
    if "val_loss" not in logs or not _finite(logs):
      return
    model = self.model
    test = evaluation.evaluate(model, self.test_images, self.num_samples, self.batch_size,
                               conditions=self.test_conditions)
    # log Z: a number, or one per label under a label-conditional prior (`dvae.clamped`).
    record = {"step": _step(model), "log_z": model.prior_machine.log_z.numpy().tolist(),
              "log_z_stderr": model.prior_machine.log_z_stderr.numpy().tolist(),
              "val_nll": logs["val_loss"], "val_neg_elbo": logs["val_neg_elbo"],
              "test_nll": test["nll"], "test_neg_elbo": test["neg_elbo"]}
    append_record(self.history_path, record)
    with self.writer.as_default(step=record["step"]):
      for name, value in record.items():
        if name != "step":
          scalars(f"eval/{name}", value)
    self.writer.flush()
    self.log(f"step {record['step']}: log Z {_numbers(record['log_z'])} ± "
             f"{_numbers(record['log_z_stderr'])}, val NLL {record['val_nll']:.2f}, "
             f"test NLL {record['test_nll']:.2f}")


def read_records(path: str) -> list[typing.Any]:
  """The records of a JSON-lines history, skipping a line a killed writer cut short.

  Args:
    path: the history file.

  Returns:
    The decoded lines in order (the dicts a run writes); empty if the file does not exist.

  Raises:
    dvae.runs.RunError: `path` is a symbolic link.
    OSError: the file exists but cannot be read.
  """
  records = []
  try:
    with runs.open_no_follow(path, os.O_RDONLY) as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except ValueError:
          continue
  except FileNotFoundError:
    pass
  return records


def append_record(path: str, record: dict[str, typing.Any]) -> None:
  """Adds `record` to the JSON-lines history at `path` by writing the file anew and renaming it.

  Records of its step and later ones are dropped: a session killed after an evaluation but
  before the checkpoint that follows it evaluates that step again when it resumes, so each
  step keeps one record, the last.

  Args:
    path: the history file (created if missing).
    record: a JSON-able dict with an integer `step`.

  Raises:
    dvae.runs.RunError: `path` or its temporary file is a symbolic link.
    OSError: the file cannot be written (the temporary file is removed, the history is left
      as it was).
  """
  kept = [old for old in read_records(path)
          if isinstance(old, dict) and isinstance(old.get("step"), int)
          and old["step"] < record["step"]]
  temporary = f"{path}.tmp-{os.getpid()}"
  try:
    with runs.open_no_follow(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL) as f:
      f.writelines(json.dumps(line) + "\n" for line in [*kept, record])
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.lexists(temporary):
      os.remove(temporary)
    raise


class Summaries(keras.callbacks.Callback):
  """At each epoch end: the run's own scalars and image summaries, at the training step.

  Scalars: `train/kl_coefficient`, `train/beta`, `train/running_log_z` and
  `train/running_log_z_stderr` (the prior's running estimate at the epoch's last step),
  `prior/negative_phase_lag` (the epoch's mean, nats per step: how far the sampler's states
  trail the model, `dvae.boltzmann`), `prior/*` (the prior's own, e.g. λ and the smallest
  eigenvalue for the Gaussian integral). Images, when the data are
  images of `image_shape` (H, W) (flat data has no picture to show): the first 50 `images`
  beside their reconstructions, and 100 states of the prior's chains decoded. A conditional
  model gets `conditions`, those of `images` (`image_summaries`).

  Args:
    summary_dir: TensorBoard directory.
    images: [N, D] images to show with their reconstructions (the validation split).
    image_shape: (H, W) of the images, or None for flat data (no image summaries).
    conditions: [N, C] conditions of `images` for a conditional model, else None.
  """

  def __init__(self, summary_dir: str, images: np.ndarray,
               image_shape: Sequence[int] | None, conditions: np.ndarray | None = None):
    super().__init__()
    self.writer = tf.summary.create_file_writer(summary_dir)
    self.images, self.image_shape, self.conditions = images, image_shape, conditions

  def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
    """Writes the scalars and images at the training step, unless the logs are not finite.

    Args:
      epoch: the epoch's index.
      logs: the epoch logs (`negative_phase_lag` is read from them).
    """
    model = self.model
    logs = logs or {}
    if not _finite(logs):
      return
    step = model.optimizer.iterations
    with self.writer.as_default(step=_step(model)):
      tf.summary.scalar("train/kl_coefficient", model.kl_coefficient(step))
      if model.beta is not None:
        tf.summary.scalar("train/beta", model.beta)
      scalars("train/running_log_z", model.prior_machine.running_log_z)
      scalars("train/running_log_z_stderr", model.prior_machine.running_log_z_stderr)
      if "negative_phase_lag" in logs:
        tf.summary.scalar("prior/negative_phase_lag", logs["negative_phase_lag"])
      for name, value in model.prior.summaries().items():
        tf.summary.scalar(f"prior/{name}", value)
      if self.image_shape is not None:
        image_summaries(model, self.images, self.image_shape, conditions=self.conditions)
    self.writer.flush()


class TrainingClock(keras.callbacks.Callback):
  """Accumulates the seconds spent in training steps and the run's wall time in variables.

  Args:
    train_seconds, wall_seconds: float64 variables that the checkpoints carry across sessions.
  """

  def __init__(self, train_seconds: tf.Variable, wall_seconds: tf.Variable):
    super().__init__()
    self.train_seconds, self.wall_seconds = train_seconds, wall_seconds
    self._session = (time.monotonic(), float(wall_seconds.numpy()))
    self._began = None

  def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
    """Notes when the call of the training loop begins."""
    self._began = time.monotonic()

  def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
    """Adds the call's seconds to `train_seconds`."""
    self.train_seconds.assign_add(time.monotonic() - self._began)

  def tick(self) -> None:
    """Brings `wall_seconds` up to now."""
    started, before = self._session
    self.wall_seconds.assign(before + time.monotonic() - started)


class Checkpoints(keras.callbacks.Callback):
  """The latest state (for resuming) and the best state (lowest `val_loss`, the validation NLL).

  The latest is saved after each step (each call of the compiled loop) that passes a multiple
  of `every_steps` or ends `every_secs` after the last save, and at the end of an epoch that
  was validated (after the validation, so that a resumed run does not repeat it) or whose
  save is due. Nothing is saved
  from an epoch whose logs are not finite: the last good checkpoint stays.

  Args:
    save_latest: saves the latest state.
    best: a `tf.train.CheckpointManager` of a `tf.train.Checkpoint` that holds the model,
      `best_val_nll` and `best_step`.
    best_val_nll, best_step: variables of the best validation NLL so far and its step.
    every_steps, every_secs: how often the latest state is saved.
    any_worker: a function of a bool: whether it holds on any worker of a multi-worker run
      (all of them save when the time has come on one).
  """

  def __init__(self, save_latest: Callable[[], None], best: tf.train.CheckpointManager,
               best_val_nll: tf.Variable, best_step: tf.Variable, every_steps: int,
               every_secs: float, any_worker: Callable[[bool], bool] = bool):
    super().__init__()
    self.any_worker = any_worker
    self._save_latest, self.best = save_latest, best
    self.best_val_nll, self.best_step = best_val_nll, best_step
    self.every_steps, self.every_secs = every_steps, every_secs
    self._last_save = time.monotonic()
    self._period = None  # the step // every_steps of the last save
    self._epoch_end = None  # the step at which the current epoch ends

  def save_latest(self) -> None:
    """Saves the latest state now and restarts the clocks of `every_steps` and `every_secs`."""
    self._save_latest()
    self._last_save = time.monotonic()
    self._period = _step(self.model) // self.every_steps

  def _due(self):
    step = _step(self.model)
    if self._period is None:
      self._period = step // self.every_steps
    return (time.monotonic() - self._last_save >= self.every_secs
            or step // self.every_steps > self._period)

  def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
    """Notes the step at which the epoch ends (where `on_epoch_end` saves instead)."""
    self._epoch_end = _step(self.model) + self.params["steps"]

  def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
    """Saves the latest state when a save is due on any worker and the logs are finite."""
    # At the epoch's end `on_epoch_end` saves, after the validation.
    if _step(self.model) == self._epoch_end:
      return
    if self.any_worker(self._due()) and _finite(logs or {}):
      self.save_latest()

  def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
    """Saves the best state on a new lowest `val_loss`, and the latest after a validation or
    when due; nothing when the logs are not finite."""
    logs = logs or {}
    if not _finite(logs):
      return
    step = _step(self.model)
    if "val_loss" in logs and logs["val_loss"] < self.best_val_nll.numpy():
      self.best_val_nll.assign(logs["val_loss"])
      self.best_step.assign(step)
      self.best.save(checkpoint_number=step)
    if "val_loss" in logs or self.any_worker(self._due()):
      self.save_latest()


class Interrupted(Exception):
  """Training stopped on SIGTERM or SIGINT after saving its state."""


class StopOnSignal(keras.callbacks.Callback):
  """On SIGTERM or SIGINT during `fit`: calls `save()` after the current step, then raises
  `Interrupted`. The previous handlers are restored when training ends.

  `any_worker` (a function of a bool: whether it holds on any worker of a multi-worker run)
  makes every worker stop at the same step when one has received the signal.

  Args:
    save: saves the state (called once, before `Interrupted` is raised).
    any_worker: whether a flag holds on any worker (`bool` for a one-process run).
    signals: the signals handled.

  Raises:
    Interrupted: from the batch hook after a signal was received (on any worker).
  """

  def __init__(self, save: Callable[[], None], any_worker: Callable[[bool], bool] = bool,
               signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)):
    super().__init__()
    self.save, self.any_worker, self.signals = save, any_worker, signals
    self._received, self._previous = None, {}

  def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
    """Installs the handlers, which note the signal received."""
    def receive(signum, frame):
      del frame
      self._received = signum

    self._previous = {s: signal.signal(s, receive) for s in self.signals}

  def _stop_if_received(self):
    if self.any_worker(self._received is not None):
      self.on_train_end()
      self.save()
      cause = (signal.Signals(self._received).name if self._received is not None
               else "a signal to another worker")
      raise Interrupted(f"stopped by {cause} at step {_step(self.model)}")

  def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
    """Saves and raises `Interrupted` if a signal was received (on any worker).

    Raises:
      Interrupted: after saving.
    """
    self._stop_if_received()

  def on_test_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
    """As `on_train_batch_end`, after each batch of the validation.

    Raises:
      Interrupted: after saving.
    """
    self._stop_if_received()

  def on_train_end(self, logs: dict[str, float] | None = None) -> None:
    """Restores the signal handlers that were there before training."""
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
