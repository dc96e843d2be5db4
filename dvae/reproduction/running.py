"""Running the cells of a grid as trainer processes, and reading what a run left behind.

The harness appends each run's output to `reproduce.log` in its run directory. A run whose
results.json exists is finished; any other run is started, and the trainer resumes it from its
latest checkpoint, so re-running an interrupted grid finishes it. A failed run does not stop the
others.
"""

import concurrent.futures
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import threading
import time

from dvae import paper
from dvae.reproduction import grids

RUN_LOG = "reproduce.log"
RESULTS = "results.json"
HISTORY = "eval_history.jsonl"


def read_results(cell):
  """The run's results.json as a dict, or None when the run has not finished."""
  try:
    with open(os.path.join(cell.run_dir, RESULTS)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except json.JSONDecodeError:
    # Not a finished run: the trainer, started again, resumes at its last step and rewrites it.
    return None


def mismatch(cell, results):
  """Hparams of the grid that a finished run was not trained with, as 'key: ran X, grid Y'."""
  trained = results.get("hparams", {})
  return [f"{key}: ran {trained[key]!r}, grid {value!r}" for key, value in cell.hparams.items()
          if value is not None and key in trained and trained[key] != value]


def read_history(cell):
  """[(step, val_nll)] of the run's periodic evaluations; a re-evaluated step keeps its last."""
  by_step = {}
  try:
    with open(os.path.join(cell.run_dir, HISTORY)) as f:
      for line in f:
        try:
          record = json.loads(line)
          by_step[int(record["step"])] = float(record["val_nll"])
        except (ValueError, KeyError, TypeError):
          continue  # the last line of a killed run may be cut short
  except FileNotFoundError:
    pass
  return sorted(by_step.items())


class Runner:
  """Runs cells as trainer subprocesses, a few at a time, and reports each as it ends."""

  def __init__(self, trainer, total):
    self.trainer = shlex.split(trainer)
    self.total = total
    self.lock = threading.Lock()
    self.finished = 0

  def say(self, message, error=False):
    with self.lock:
      print(message, file=sys.stderr if error else sys.stdout, flush=True)

  def run(self, cell):
    """Runs one cell to completion; returns None on success, else the reason it failed."""
    os.makedirs(cell.run_dir, exist_ok=True)
    command = self.trainer + cell.trainer_args()
    log_path = os.path.join(cell.run_dir, RUN_LOG)
    self.say(f"start  {cell.label}")
    began = time.monotonic()
    reason = None
    with open(log_path, "a") as log:
      log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
      log.flush()
      try:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
        if status:
          reason = f"exit status {status}"
      except OSError as e:
        reason = f"could not start the trainer: {e}"
        log.write(reason + "\n")
    minutes = (time.monotonic() - began) / 60
    with self.lock:
      self.finished += 1
      progress = f"[{self.finished}/{self.total}]"
    results = None if reason else read_results(cell)
    if results is not None:
      self.say(f"done   {progress} {cell.label}: test NLL {results['test_nll']:.2f} "
               f"({minutes:.1f} min)")
      return None
    reason = reason or f"exit status 0 but no {RESULTS}"
    self.say(f"FAILED {progress} {cell.label}: {reason}; log {log_path}\n"
             + "".join(f"    {line}" for line in _tail(log_path, 5)), error=True)
    return reason

  def run_all(self, pending, workers):
    """Runs `pending` cells with `workers` at once; returns the labels of the failed ones."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      futures = [(pool.submit(self.run, cell), cell) for cell in pending]
      try:
        return [cell.label for future, cell in futures if future.result() is not None]
      except KeyboardInterrupt:
        # The trainers got the same interrupt and save their state; start no new ones.
        pool.shutdown(wait=True, cancel_futures=True)
        raise


def _tail(path, lines):
  with open(path, errors="replace") as f:
    return f.readlines()[-lines:]



@dataclasses.dataclass
class Row:
  cell: grids.Cell
  results: dict
  reused: bool = False  # a row of an earlier publication (--reuse_csv), not a run directory

  def value(self, key):
    return self.cell.hparams.get(key)

  @property
  def paper_nll(self):
    return paper.paper_nll(self.value("dataset"), self.value("k"), self.value("baseline"))

