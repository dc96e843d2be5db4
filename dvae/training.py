"""The training run: `model.fit` with Keras's and the project's callbacks, and results.json
(SPEC §5).

A run lives in its run directory (`dvae.runs.run_directory`), which it shares with no other
configuration and no other process:

    checkpoints/latest/   the two newest states, for resuming (model, chains, optimizer, best
                          record, clocks); a damaged newest one is skipped for the one before
    checkpoints/best/     the state with the best validation NLL so far
    summaries/            TensorBoard event files (Keras's epoch scalars in train/ and
                          validation/, the run's own scalars and images beside them)
    eval_history.jsonl    one line per periodic evaluation (step, validation/test NLL, log Z)
    results.json          the final evaluation of the best checkpoint and the run's hparams

In a multi-worker run (`distribute="multi_worker"`) every worker runs the same steps, saves
included, since saving and evaluating take part in the strategy's collective operations; only
the chief (`dvae.runs.is_chief`) writes to the run directory, the other workers write to a
temporary directory that is removed when the run object goes. Every worker resumes from the run
directory's checkpoints, so resuming a multi-worker run needs `log_dir` on a file system that
all workers see.

One epoch of `fit` ends at each multiple of `eval_every` and at the run's last step
(`epoch_plan`), and is validated (Keras's validation, with `val_loss` the validation NLL at
`periodic_eval_iw_samples` samples and a freshly estimated log Z); the latest checkpoint is saved
after each validation and every `checkpoint_every_steps` steps within epochs
(`dvae.callbacks.Checkpoints`). Each call of `fit`'s compiled loop runs
n = gcd(`steps_per_execution`, the `fit` call's steps per epoch) steps, so that epochs end
between calls; the model is compiled again where n changes.

Running the same configuration again resumes from `checkpoints/latest`. All model randomness
is stateless and keyed by (seed, step), so the noise of a resumed step is the noise it would
have had without the interruption, and so is the training data (`dvae.data.train_dataset` from
the step reached): a resumed run trains on the batches of an uninterrupted one.
"""

import dataclasses
import functools
import math
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dvae import callbacks as callbacks_lib
from dvae import data as data_lib
from dvae import config, evaluation, runs
from dvae.model import DVAE, kl_warm_up

# The training terms in the order a non-finite value is reported.
TERMS = ("weight_decay", "reconstruction", "kl", "loss")


class NonFiniteError(RuntimeError):
  """A loss term became NaN or infinite."""


@functools.cache
def make_strategy(name: str) -> tf.distribute.Strategy:
  """The tf.distribute strategy for `distribute` = "none", "mirrored" or "multi_worker".

  "mirrored" replicates over the local devices; "multi_worker" over the workers that the
  TF_CONFIG environment variable describes. Each replica trains on its share of the global
  batch with its own sampler noise; gradients are summed across replicas.

  One instance per name and process: the multi-worker strategy configures the collective
  operations, which TensorFlow allows only before its runtime starts, so a program creates it
  first (as run_training.py does) and every later call returns that instance.

  Args:
    name: "none", "mirrored" or "multi_worker" (any other name: as "none").

  Returns:
    The strategy; for "none" the default one (no distribution).
  """
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def learning_rate_schedule(base_lr: float, num_train_iter: int
                           ) -> keras.optimizers.schedules.LearningRateSchedule:
  """lr/10 until 2% of training, lr until 60%, lr/3 until 75%, lr/10 until 95%, lr/33 after.

  Args:
    base_lr: lr, the peak learning rate.
    num_train_iter: T, the run's training steps.

  Returns:
    A piecewise-constant schedule of the optimizer's step.
  """
  boundaries = [int(f * num_train_iter) for f in (0.02, 0.6, 0.75, 0.95)]
  values = [base_lr / 10, base_lr, base_lr / 3, base_lr / 10, base_lr / 33]
  return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def epoch_plan(hparams: config.HParams, start: int) -> list[tuple[int, int, int]]:
  """The `fit` calls that train from step `start` to `num_train_iter`, as a list of
  (first epoch, number of epochs, steps per epoch).

  Epoch e is steps e·E + 1 … min((e + 1)·E, T) for E = `eval_every` and T = `num_train_iter`:
  a session that starts mid-epoch first completes that epoch, then runs the whole epochs, then
  the shorter last one when E does not divide T.

  Args:
    hparams: the run's hparams (`eval_every` and `num_train_iter` are read).
    start: the step reached.

  Returns:
    (first epoch, number of epochs, steps per epoch) per `fit` call, in order; empty when
    `start` is T or more.
  """
  every, total = hparams.eval_every, hparams.num_train_iter
  plan, step = [], start
  if step % every and step < total:
    end = min((step // every + 1) * every, total)
    plan.append((step // every, 1, end - step))
    step = end
  whole = (total - step) // every
  if whole:
    plan.append((step // every, whole, every))
    step += whole * every
  if step < total:
    plan.append((step // every, 1, total - step))
  return plan


def saved_checkpoints(manager: tf.train.CheckpointManager) -> list[str]:
  """The checkpoint prefixes of `manager`'s directory, oldest first.

  Those its state file lists, and any others whose files are there (a state file lost with a
  copy, a save killed before it was recorded), so that none is overlooked and silently replaced.

  Args:
    manager: the checkpoints' manager.

  Returns:
    The prefixes ("<directory>/ckpt-<step>"), by step.
  """
  prefixes = set(manager.checkpoints)
  for path in tf.io.gfile.glob(os.path.join(manager.directory, "ckpt-*")):
    match = re.fullmatch(r"(ckpt-\d+)\.(index|data-\d+-of-\d+)", os.path.basename(path))
    if match:
      prefixes.add(os.path.join(manager.directory, match.group(1)))
  return sorted(prefixes, key=lambda prefix: int(prefix.rsplit("-", 1)[1]))


def verify_checkpoint(prefix: str) -> None:
  """Reads every tensor of the checkpoint `prefix`; raises ValueError naming what is damaged.

  Args:
    prefix: the checkpoint's prefix ("<directory>/ckpt-<step>").

  Raises:
    ValueError: its index file is missing, or a file or tensor cannot be read (the message is
      the first line of the reader's error).
  """
  if not tf.io.gfile.exists(f"{prefix}.index"):
    raise ValueError("its index file is missing")
  try:
    reader = tf.train.load_checkpoint(prefix)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  except (tf.errors.OpError, IndexError, ValueError) as e:
    raise ValueError(f"unreadable: {str(e).strip().splitlines()[0]}") from None


class Run:
  """Trains and evaluates one configuration through `model.fit`.

  A conditional `dataset` (`condition_dims` C > 0, a user's file with conditions) makes a
  conditional model of p(x|c): training, evaluation and the image summaries give it each
  image's condition (the samples shown take the first validation rows' conditions).

  Args:
    hparams: a resolved `dvae.config.HParams`.
    dataset: a `dvae.data.Dataset`.
    log: a function of one line (progress, evaluations, resumption).

  Raises:
    dvae.runs.RunError: the chief's run directory holds a symbolic link where a run's file or
      folder goes (`runs.refuse_links`).

  Attributes:
    directory: the run directory.
    chief: whether this process writes the run's files (not a non-chief multi-worker worker).
    output: where this process writes: `directory` for the chief, else a temporary directory.
    model: the `dvae.model.DVAE` being trained.
  """

  def __init__(self, hparams: config.HParams, dataset: data_lib.Dataset,
               log: Callable[[str], None] = print):
    self.hparams, self.dataset, self.log = hparams, dataset, log
    self.directory = runs.run_directory(hparams)
    self.chief = hparams.distribute != "multi_worker" or runs.is_chief()
    if self.chief:
      self.output = self.directory
      if os.path.isdir(self.directory):
        runs.refuse_links(self.directory)
    else:
      self._scratch = tempfile.TemporaryDirectory(prefix="dvae-worker-")
      self.output = self._scratch.name
    self.strategy = make_strategy(hparams.distribute)
    with self.strategy.scope():
      # The categorical likelihood's K: the data's levels 0 … K−1.
      num_classes = (max(int(split.max()) for split in (
          dataset.train, dataset.valid, dataset.test)) + 1
                     if hparams.likelihood == "categorical" else None)
      self.model = DVAE.from_hparams(hparams, dataset.train_mean, num_classes=num_classes,
                                     condition_dims=dataset.condition_dims)
      self._compile(keras.optimizers.Adam(
          learning_rate_schedule(hparams.base_lr, hparams.num_train_iter), epsilon=1e-3))
      self.model.optimizer.build(self.model.trainable_variables)
      self.best_val_nll = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
      self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
      self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
      self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    checkpoint = tf.train.Checkpoint(
        model=self.model, best_val_nll=self.best_val_nll, best_step=self.best_step,
        train_seconds=self.train_seconds, wall_seconds=self.wall_seconds)
    checkpoints = os.path.join(self.output, "checkpoints")
    self.latest = tf.train.CheckpointManager(checkpoint, os.path.join(checkpoints, "latest"),
                                             max_to_keep=2)
    self.best = tf.train.CheckpointManager(checkpoint, os.path.join(checkpoints, "best"),
                                           max_to_keep=1)
    # The chief's checkpoints, which every worker resumes from.
    self.resume_from = self.latest if self.chief else tf.train.CheckpointManager(
        checkpoint, os.path.join(self.directory, "checkpoints", "latest"), max_to_keep=2)
    self.clock = callbacks_lib.TrainingClock(self.train_seconds, self.wall_seconds)

  @property
  def step(self) -> int:
    """The training steps taken, the optimizer's iteration count."""
    return int(self.model.optimizer.iterations.numpy())

  def _compile(self, optimizer, steps_per_execution=1):
    """Compiles the model with the run's KL warm-up and periodic evaluation samples.

    Compiling again with the model's own `optimizer` keeps the optimizer's state (its step
    count and moments); Keras retraces the training loop for the new `steps_per_execution`.
    """
    hp = self.hparams
    with self.strategy.scope():
      self.model.compile(optimizer=optimizer, kl_coefficient=kl_warm_up(hp.num_train_iter),
                         eval_iw_samples=hp.periodic_eval_iw_samples,
                         steps_per_execution=steps_per_execution)

  def _execute_in_calls_of(self, steps):
    """Sets the steps per call of `fit`'s compiled loop for epochs of `steps` steps.

    Keras runs ⌈steps / n⌉ whole calls of n steps per epoch, past the epoch's end unless n
    divides `steps`; n is gcd(steps_per_execution, `steps`), logged when it is not the
    requested value.
    """
    requested = self.hparams.steps_per_execution
    n = math.gcd(requested, steps)
    if n != requested:
      self.log(f"steps_per_execution {n} instead of {requested} for epochs of {steps} steps "
               "(it has to divide them)")
    if n != self.model.steps_per_execution:
      self._compile(self.model.optimizer, n)

  def _restore(self, manager):
    """Restores the newest readable checkpoint of `manager`; returns it (None if it has none).

    Raises:
      runs.RunError: when it has checkpoints but none can be read, or the newest readable one
        holds other variables than this model's (written by another version of the program).
    """
    prefix = runs.newest_readable(saved_checkpoints(manager), verify_checkpoint, self.log)
    if prefix:
      try:
        manager.checkpoint.restore(prefix).assert_existing_objects_matched()
      except AssertionError:
        raise runs.RunError(
            f"the checkpoint {prefix} does not hold this model's variables (it was written by "
            f"another version of the program); move {self.directory} away, or train elsewhere "
            "(--log_dir)") from None
    return prefix

  def _sum_over_replicas(self, value):
    """The sum of the float64 scalar `value` over all replicas of all workers."""
    if not hasattr(self, "_replica_sum"):
      strategy = self.strategy
      self._replica_sum = tf.function(lambda value: strategy.reduce(
          tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(value,)), axis=None))
    return float(self._replica_sum(tf.constant(value, tf.float64)))

  def any_worker(self, flag: bool) -> bool:
    """Whether `flag` holds on any worker of the run (`flag` itself in a one-process run).

    What makes a worker save (a checkpoint's time come, a signal received) has to make every
    worker save at the same step: saving reads the replicas' metrics, a collective operation.

    Args:
      flag: this worker's value; every worker of a multi-worker run calls this at once.

    Returns:
      True if it is true on any worker.
    """
    if self.hparams.distribute != "multi_worker":
      return flag
    return self._sum_over_replicas(float(flag)) > 0

  def restore_latest(self) -> int:
    """Resumes from the newest readable checkpoint if there is one; returns the step reached.

    Returns:
      The training steps taken by the restored state (0 for a new run).

    Raises:
      runs.RunError: when the workers of a multi-worker run did not all resume at one step
        (the others could not read the chief's checkpoints), or checkpoints exist but none
        can be read.
    """
    prefix = self._restore(self.resume_from)
    if prefix:
      self.log(f"resumed from {prefix} at step {self.step}")
    steps = self._sum_over_replicas(self.step)
    if steps != self.step * self.strategy.num_replicas_in_sync:
      raise runs.RunError(
          f"the workers resumed at different steps (this one at {self.step}): each resumes "
          f"from the chief's checkpoints in {self.directory}, so --log_dir must be on a file "
          "system that every worker sees")
    self.clock = callbacks_lib.TrainingClock(self.train_seconds, self.wall_seconds)
    return self.step

  def save_latest(self) -> None:
    """Saves the current state (with the clocks brought up to now) as the latest checkpoint."""
    self.clock.tick()
    self.latest.save(checkpoint_number=self.step)

  def callbacks(self) -> list[keras.callbacks.Callback]:
    """Keras's callbacks and the project's (`dvae.callbacks`), in the order they must run.

    Returns:
      The callbacks for `model.fit`: the last logs' record, TerminateOnNaN, the clock, the
      periodic evaluation, the summaries, TensorBoard, the checkpoints and the signal handler.
    """
    hp = self.hparams
    summaries = os.path.join(self.output, "summaries")
    checkpoints = callbacks_lib.Checkpoints(
        self.save_latest, self.best, self.best_val_nll, self.best_step,
        hp.checkpoint_every_steps, hp.checkpoint_every_secs, self.any_worker)
    self.last_logs = {}
    return [
        keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: self.last_logs.update(logs)),
        keras.callbacks.TerminateOnNaN(),
        self.clock,
        callbacks_lib.Evaluation(
            self.dataset.test, hp.periodic_eval_iw_samples, hp.eval_batch_size,
            os.path.join(self.output, "eval_history.jsonl"), summaries, self.log,
            test_conditions=self.dataset.test_cond),
        callbacks_lib.Summaries(summaries, self.dataset.valid, self.dataset.image_shape,
                                conditions=self.dataset.valid_cond),
        keras.callbacks.TensorBoard(summaries),
        checkpoints,
        callbacks_lib.StopOnSignal(self.save_latest, self.any_worker),
    ]

  def fit(self, verbose: int = 2) -> None:
    """Trains up to `num_train_iter` steps with periodic evaluation and checkpoints.

    Args:
      verbose: Keras's `fit` verbosity (2: one line per epoch).

    Raises:
      NonFiniteError: a training term became non-finite; the last good checkpoint is kept.
      dvae.callbacks.Interrupted: SIGTERM or SIGINT; the state was saved.
    """
    hp = self.hparams
    start = self.restore_latest()
    fit = dict(callbacks=self.callbacks(), shuffle=False, verbose=verbose,
               validation_data=data_lib.eval_dataset(self.dataset.valid, hp.eval_batch_size,
                                                     self.dataset.valid_cond))
    for first, epochs, steps in epoch_plan(hp, start):
      self._execute_in_calls_of(steps)
      batches = data_lib.train_dataset(self.dataset, hp.train_batch_size, seed=hp.seed,
                                       start_step=self.step)
      self.model.fit(batches, steps_per_epoch=steps, initial_epoch=first, epochs=first + epochs,
                     **fit)
      self._check_finite()

  def _check_finite(self):
    for term in TERMS:
      if not math.isfinite(self.last_logs.get(term, 0.0)):
        kept = self.latest.latest_checkpoint or "none (no checkpoint was written yet)"
        raise NonFiniteError(
            f"non-finite {term} at step {self.step}; training stopped, last good checkpoint "
            f"kept: {kept}")

  def final_evaluation(self) -> dict[str, Any]:
    """Restores the best checkpoint, re-estimates log Z, evaluates (SPEC §5); writes results.json
    to `output` (the run directory, or a non-chief worker's temporary one).

    A conditional run's NLLs are of p(x|c), each image scored with its own condition.

    Returns:
      The results as written: `log_z`, `log_z_stderr`, `val_nll`, `val_neg_elbo`, `test_nll`,
      `test_neg_elbo`, the log Z estimate and its check, the steps, clocks and hparams (and
      `condition_dims` for a conditional run).

    Raises:
      runs.RunError: no checkpoint at all can be read.
    """
    hp = self.hparams
    steps = self.step
    self.clock.tick()
    train_seconds = float(self.train_seconds.numpy())
    wall_seconds = float(self.wall_seconds.numpy())
    try:
      self._restore(self.best)
    except runs.RunError as e:
      # The latest state is readable (training reached here): evaluate it rather than nothing.
      self.log(f"warning: the best checkpoint cannot be read ({e}); evaluating the latest "
               f"state, step {steps}, instead")
      self.best_step.assign(steps)
    # A dense AIS, its bias checked against one with 10× fewer temperatures (log_z_check).
    machine = self.model.prior_machine
    log_z, log_z_stderr, log_z_check = machine.log_z_ais_checked(
        hp.final_log_z_betas, seed=[hp.seed, steps])
    machine.set_log_z(log_z, log_z_stderr, method="ais_checked", num_betas=hp.final_log_z_betas,
                      num_samples=log_z_check["num_samples"], schedule=log_z_check["schedule"],
                      seed=[hp.seed, steps])
    log_z, log_z_stderr = float(log_z), float(log_z_stderr)
    results = {"log_z": log_z, "log_z_stderr": log_z_stderr}
    for split, images, conditions, k in (
        ("val", self.dataset.valid, self.dataset.valid_cond, hp.periodic_eval_iw_samples),
        ("test", self.dataset.test, self.dataset.test_cond, hp.eval_iw_samples)):
      scores = evaluation.evaluate(self.model, images, k, hp.eval_batch_size,
                                   conditions=conditions)
      for name in ("neg_elbo", "nll"):
        results[f"{split}_{name}"] = scores[name]
    writer = tf.summary.create_file_writer(os.path.join(self.output, "summaries"))
    with writer.as_default(step=steps):
      for name, value in results.items():
        tf.summary.scalar(f"final/{name}", value)
      if self.dataset.image_shape is not None:
        callbacks_lib.image_summaries(self.model, self.dataset.valid, self.dataset.image_shape,
                                      prefix="final/", conditions=self.dataset.valid_cond)
    writer.close()
    self.log(f"final (best step {int(self.best_step.numpy())}): log Z {log_z:.3f} ± "
             f"{log_z_stderr:.3f}, val NLL {results['val_nll']:.2f}, "
             f"test NLL {results['test_nll']:.2f} (± {log_z_stderr:.3f} from log Z, shared)")
    results.update(
        # The NLLs subtract this log Z: its standard error moves them all by the same amount.
        nll_log_z_stderr=log_z_stderr,
        log_z_estimate={name: np.asarray(value).tolist()
                        for name, value in machine.log_z_estimate.items()},
        steps=steps, best_step=int(self.best_step.numpy()), wall_seconds=wall_seconds,
        train_seconds=train_seconds,
        steps_per_second=steps / train_seconds if train_seconds > 0 else None,
        val_iw_samples=hp.periodic_eval_iw_samples, test_iw_samples=hp.eval_iw_samples,
        log_z_check=log_z_check,
        hparams=dataclasses.asdict(hp))
    if self.dataset.condition_dims:
      results["condition_dims"] = self.dataset.condition_dims
    runs.write_json_atomically(os.path.join(self.output, "results.json"), results)
    return results

  def wait_for_workers(self) -> None:
    """Returns when every worker of the run has called it (at once without other workers).

    A worker that ends while another is still working makes TensorFlow's coordination
    service report it as crashed; the workers end together after this.
    """
    self._sum_over_replicas(1.0)
