"""Train and evaluate one DVAE configuration.

    python run_training.py --hparams=hparams/omniglot.json [--k=5 --baseline=dvaes_gi ...]
    python run_training.py --help          (this text and every flag; --helpfull adds absl's)

`--hparams` is a JSON file (a bare name is looked up in hparams/); every hparam is also a flag,
and a flag overrides the file. Bad input (hparams, data, paths) ends with one line on stderr and
exit status 2 before anything is written; a run that goes numerically wrong stops with status 1
and keeps its last good checkpoint. Re-running the same command resumes the run.
"""

import contextlib
import os
import select
import signal
import sys
import tempfile
import textwrap
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The original stderr: while TensorFlow loads, fd 2 is held back (`_native_stderr_held_back`).
_STDERR = os.dup(2)


def _say(line):
  """Writes one line to the original stderr, whoever holds fd 2 now."""
  os.write(_STDERR, f"{line}\n".encode())


def _interrupted(signum, frame):
  """Ctrl-C outside training (which saves and stops on it itself): one line, no traceback."""
  del signum, frame
  _say("error: interrupted (Ctrl-C); run the command again to start or resume the run")
  os._exit(130)  # pylint: disable=protected-access


if __name__ == "__main__":
  signal.signal(signal.SIGINT, _interrupted)

from absl import flags  # pylint: disable=g-import-not-at-top
# absl.logging (which TensorFlow loads) defines --log_dir itself; load it first and share it.
from absl import logging as _  # pylint: disable=g-import-not-at-top,unused-import

from dvae import config, runs  # pylint: disable=g-import-not-at-top

_FLAG_DEFINERS = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def _define_flags():
  flags.DEFINE_string("hparams", None, "JSON file of hparams, or a bare name in hparams/ "
                      "(default: none, every hparam at its default).")
  flags.DEFINE_boolean("overwrite", False, "Replace an existing --export_dir (default false).")
  for name, hint in typing.get_type_hints(config.HParams).items():
    kind = next(t for t in (bool, int, float, str) if t in (hint, *typing.get_args(hint)))
    meaning = f"Hparam {name} ({kind.__name__}), overrides the file: {config.HELP[name]}."
    if name in flags.FLAGS:  # --log_dir, which absl.logging defines; the hparam owns it here.
      flags.FLAGS[name].help = meaning
      continue
    _FLAG_DEFINERS.get(kind, flags.DEFINE_boolean)(name, None, meaning)


def _print_help(full):
  """The module docstring and this program's flags (`full`: then every flag, absl's too)."""
  print(__doc__)
  print("Flags:")
  for name in ["hparams", "overwrite", *typing.get_type_hints(config.HParams)]:
    print(textwrap.fill(f"--{name}: {flags.FLAGS[name].help}", width=100,
                        initial_indent="  ", subsequent_indent="      "))
  if full:
    print("\nAll flags, with absl's:")
    print(flags.FLAGS.get_help())


@contextlib.contextmanager
def _native_stderr_held_back():
  """Holds back what TensorFlow's native libraries print to fd 2 while they load.

  They log informational lines before any Python setting can silence them; the lines are
  shown only if loading fails, so that a refusal of bad input stays one line.
  """
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    except Exception:  # not KeyboardInterrupt: Ctrl-C is one line, without the held lines
      os.dup2(saved, 2)
      held.seek(0)
      sys.stderr.write(held.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def _fail(message, status=2):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


class _StartUpSupervisor:
  """For a multi-worker run: ends it with one line when the workers have not all started within
  `startup_timeout_secs`, or at once on SIGTERM or SIGINT meanwhile.

  TensorFlow waits for the other workers inside native code that holds Python's global lock, so
  no thread or signal handler of the waiting process runs until they come. The process forks
  before TensorFlow loads: the child goes on as the worker and reports through a pipe once it
  has started (`started`); the parent supervises. On the timeout or a signal during start-up the
  parent kills the child, writes one line and exits (2, or 130 for a signal); afterwards it
  passes SIGTERM and SIGINT on to the child and ends with the child's exit status.
  """

  def __init__(self, hparams):
    self.timeout = hparams.startup_timeout_secs
    self.child = None
    self._report = None
    if hparams.distribute != "multi_worker":
      return
    read, write = os.pipe()
    sys.stdout.flush()
    self.child = os.fork()
    if self.child == 0:
      os.close(read)
      self._report = write
      return
    os.close(write)
    self._supervise(read)

  def started(self):
    """Tells the supervising parent that start-up is over (in the worker; once)."""
    if self._report is not None:
      os.write(self._report, b"\1")
      os.close(self._report)
      self._report = None

  def _supervise(self, read):
    """The parent's part; never returns."""
    starting = True

    def on_signal(signum, frame):
      del frame
      if starting:
        os.kill(self.child, signal.SIGKILL)
        _say(f"error: stopped by {signal.Signals(signum).name} while waiting for the workers "
             "of the multi-worker run to start; nothing was trained")
        os._exit(130)  # pylint: disable=protected-access
      os.kill(self.child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
      signal.signal(signum, on_signal)
    # select is resumed after a signal's handler (PEP 475); the handler ends start-up itself.
    ready, _, _ = select.select([read], [], [], self.timeout)
    if not ready:
      os.kill(self.child, signal.SIGKILL)
      os.waitpid(self.child, 0)
      _say(f"error: the workers of the multi-worker run did not all start within "
           f"{self.timeout:g} s (TF_CONFIG lists {os.environ.get('TF_CONFIG')}); start every "
           "worker, or raise --startup_timeout_secs")
      os._exit(2)  # pylint: disable=protected-access
    # A report, or the pipe closed by a child that ended early (its own line is already out).
    starting = not os.read(read, 1)
    _, status = os.waitpid(self.child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # the child was killed by a signal: so is the parent
      signal.signal(-code, signal.SIG_DFL)
      os.kill(os.getpid(), -code)
    os._exit(code)  # pylint: disable=protected-access


def main(argv):
  _define_flags()
  if {"--help", "-h", "--helpshort", "--helpfull", "-?"} & set(argv[1:]):
    _print_help(full="--helpfull" in argv[1:])
    sys.exit(0)
  try:
    flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f"{e}; see --helpfull")
  overrides = {name: flags.FLAGS[name].value for name in typing.get_type_hints(config.HParams)
               if flags.FLAGS[name].present}

  try:
    hparams, notes = config.load_hparams(flags.FLAGS.hparams, overrides)
    runs.check_writable(runs.run_directory(hparams), "log_dir")
    if hparams.export_dir:
      runs.check_writable(hparams.export_dir, "export_dir")
      runs.check_export_dir(hparams.export_dir, hparams.log_dir, flags.FLAGS.overwrite)
    if hparams.distribute == "multi_worker":
      runs.check_tf_config()
  except (config.ConfigError, runs.RunError) as e:
    _fail(e)

  # Before TensorFlow loads (a process that has started TensorFlow must not fork).
  start_up = _StartUpSupervisor(hparams)
  # Imported only now, so that bad hparams are reported before TensorFlow loads.
  with _native_stderr_held_back():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from dvae import (  # pylint: disable=g-import-not-at-top
        callbacks, data, evaluation, export, training)
    # The multi-worker strategy configures collective operations, which only a runtime that
    # has not started yet accepts: it comes before anything that creates a tensor.
    training.make_strategy(hparams.distribute)
    tf.config.list_logical_devices()

  def log(line):
    print(line, flush=True)

  try:
    dataset = data.load_dataset(hparams.dataset, hparams.data_dir, verify=hparams.verify_data,
                                binarization=hparams.binarization,
                                likelihood=hparams.likelihood)
    hparams = config.for_data(hparams, dataset.num_dims)
    samples = evaluation.samples_per_call(
        max(hparams.periodic_eval_iw_samples, hparams.eval_iw_samples), hparams.eval_batch_size,
        dataset.num_dims)
    runs.check_memory(hparams, dataset.num_dims, hparams.eval_batch_size * samples,
                      data_values=sum(x.size for x in (
                          dataset.train, dataset.valid, dataset.test, dataset.train_cond,
                          dataset.valid_cond, dataset.test_cond) if x is not None))
    lock = runs.open_run(hparams, log=log, data_fingerprint=data.fingerprint(dataset))
  except (data.DataError, runs.RunError) as e:
    _fail(e)
  for note in notes:
    log(note)
  if dataset.condition_dims:
    log(f"conditional model p(x|c): the data has conditions of width {dataset.condition_dims}")

  run = None
  try:
    run = training.Run(hparams, dataset, log=log)
    start_up.started()
    run.fit()
    results = run.final_evaluation()
  except runs.RunError as e:
    _fail(e)
  except training.NonFiniteError as e:
    _fail(e, status=1)
  except (tf.errors.OpError, MemoryError, OSError) as e:
    kept = ((run and run.latest.latest_checkpoint) or "none (no checkpoint was written yet)")
    step = run.step if run else 0
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if runs.is_disk_full(e):
      _fail(f"the disk is full at step {step} ({reason}); last checkpoint kept: {kept}; free "
            f"space under {hparams.log_dir} and run the command again to resume", status=1)
    if not isinstance(e, (tf.errors.ResourceExhaustedError, MemoryError)):
      raise
    _fail(f"out of memory at step {step} ({reason}); last checkpoint kept: {kept}; lower --k, "
          "--train_batch_size, --num_chains or --eval_batch_size", status=1)
  except callbacks.Interrupted as e:
    _fail(f"{e}; state saved, re-run to resume", status=130)
  written = (f"results in {os.path.join(lock.directory, 'results.json')}" if run.chief
             else "the chief writes the results")
  print(f"test NLL {results['test_nll']:.3f} (k={hparams.eval_iw_samples}), "
        f"val NLL {results['val_nll']:.3f}, {written}", flush=True)
  if hparams.export_dir and run.chief:
    export.export_model(run.model, hparams.export_dir, overwrite=flags.FLAGS.overwrite,
                        image_shape=dataset.image_shape)
    print(f"SavedModel written to {hparams.export_dir}", flush=True)
  run.wait_for_workers()


if __name__ == "__main__":
  main(sys.argv)
