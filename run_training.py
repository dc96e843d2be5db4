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
import sys
import tempfile
import textwrap
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    except BaseException:
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
  except (config.ConfigError, runs.RunError) as e:
    _fail(e)
  if hparams.export_dir and os.path.exists(hparams.export_dir) and not flags.FLAGS.overwrite:
    _fail(f"export_dir {hparams.export_dir} exists; pass --overwrite to replace it")

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
    runs.check_memory(hparams, dataset.num_dims, hparams.eval_batch_size * samples)
    lock = runs.open_run(hparams, log=log)
  except (data.DataError, runs.RunError) as e:
    _fail(e)
  for note in notes:
    log(note)

  run = training.Run(hparams, dataset, log=log)
  try:
    run.fit()
    results = run.final_evaluation()
  except runs.RunError as e:
    _fail(e)
  except training.NonFiniteError as e:
    _fail(e, status=1)
  except (tf.errors.ResourceExhaustedError, MemoryError) as e:
    kept = run.latest.latest_checkpoint or "none (no checkpoint was written yet)"
    _fail(f"out of memory at step {run.step} ({str(e).strip().splitlines()[0]}); last "
          f"checkpoint kept: {kept}; lower --k, --train_batch_size, --num_chains or "
          "--eval_batch_size", status=1)
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
