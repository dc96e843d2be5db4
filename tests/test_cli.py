"""The command line: bad input is refused cleanly, and a killed run resumes and finishes."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--struct=1-layer-lin", "--sampler=pcd", "--num_chains=20", "--num_sweeps=2",
        "--train_batch_size=20", "--eval_batch_size=500", "--periodic_eval_iw_samples=2",
        "--eval_iw_samples=2", "--final_log_z_betas=100"]


def run_cli(args, env=None, timeout=300):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "run_training.py"), *args], capture_output=True,
      text=True, timeout=timeout, cwd=REPO,
      env=dict(os.environ, DVAE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3", **(env or {})))


class BadInputTest(tf.test.TestCase, parameterized.TestCase):
  """Each row: exit status 2, one line on stderr naming the problem, nothing written."""

  def setUp(self):
    super().setUp()
    self.tmp = self.get_temp_dir()
    self.log_dir = os.path.join(self.tmp, "logs")

  def write(self, name, content, mode="w"):
    path = os.path.join(self.tmp, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
      f.write(content)
    return path

  def assertRefused(self, args, expected, env=None):
    result = run_cli([f"--log_dir={self.log_dir}", *args], env=env)
    self.assertEqual(result.returncode, 2, result.stderr)
    lines = result.stderr.strip().splitlines()
    self.assertLen(lines, 1, result.stderr)
    self.assertIn(expected, lines[0])
    self.assertNotIn("Traceback", result.stderr)
    self.assertFalse(os.path.exists(self.log_dir))

  @parameterized.named_parameters(
      ("unreadable_json", '{"k": 1,', "JSON"),
      ("unknown_key", '{"num_train_steps": 10}', "num_train_steps"),
      ("wrong_type", '{"k": "five"}', "k"),
      ("unknown_dataset", '{"dataset": "cifar"}', "cifar"),
      ("unknown_struct", '{"struct": "3-layer"}', "3-layer"),
      ("unknown_baseline", '{"baseline": "dvae_sharp"}', "dvae_sharp"),
      ("unknown_sampler", '{"sampler": "gibbs"}', "gibbs"),
      ("k_below_one", '{"k": 0}', "k"),
      ("non_positive_beta", '{"beta": -1.0}', "beta"),
      ("eval_batch_zero", '{"eval_batch_size": 0}', "eval_batch_size"),
  )
  def test_bad_hparams_file_is_refused(self, content, expected):
    self.assertRefused([f"--hparams={self.write('h.json', content)}"], expected)

  def test_missing_hparams_file_is_refused(self):
    self.assertRefused(["--hparams=no_such_config"], "no_such_config")

  def test_bad_flag_value_is_refused(self):
    self.assertRefused(["--k=abc"], "k")

  def test_unknown_flag_is_refused(self):
    self.assertRefused(["--num_train_steps=3"], "num_train_steps")

  def test_missing_data_offline_names_the_file(self):
    empty = os.path.join(self.tmp, "empty")
    os.makedirs(empty)
    self.assertRefused(["--dataset=omniglot", f"--data_dir={empty}"], "chardata.mat")

  def test_wrong_sha256_is_refused(self):
    data_dir = os.path.join(self.tmp, "amat")
    for split in ("train", "valid", "test"):
      self.write(f"amat/binarized_mnist_{split}.amat", "0 1\n")
    self.assertRefused([f"--data_dir={data_dir}"], "sha256")

  def test_truncated_npz_is_refused(self):
    source = os.path.join(REPO, "dvae", "data", "binarized_mnist.npz")
    with open(source, "rb") as f:
      head = f.read(100_000)
    self.write("trunc/binarized_mnist.npz", head, mode="wb")
    self.assertRefused([f"--data_dir={os.path.join(self.tmp, 'trunc')}"], "binarized_mnist.npz")

  def test_misshaped_arrays_are_refused(self):
    packed = np.zeros([10, 50], np.uint8)
    path = os.path.join(self.tmp, "shape", "binarized_mnist.npz")
    os.makedirs(os.path.dirname(path))
    np.savez(path, train=packed, valid=packed, test=packed, train_shape=[10, 400],
             valid_shape=[10, 400], test_shape=[10, 400])
    self.assertRefused([f"--data_dir={os.path.dirname(path)}"], "784")

  def test_non_binary_values_are_refused(self):
    data_dir = os.path.join(self.tmp, "grey")
    row = " ".join(["0.5"] * 784) + "\n"
    for split in ("train", "valid", "test"):
      self.write(f"grey/binarized_mnist_{split}.amat", row * 3)
    result = run_cli([f"--log_dir={self.log_dir}", f"--data_dir={data_dir}"])
    # The published hash is checked first; either refusal names the files and exits 2.
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertLen(result.stderr.strip().splitlines(), 1)

  def test_unwritable_log_dir_is_refused(self):
    blocker = self.write("a_file", "not a directory")
    result = run_cli([f"--log_dir={os.path.join(blocker, 'logs')}", "--num_train_iter=1"])
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertIn("log_dir", result.stderr)
    self.assertLen(result.stderr.strip().splitlines(), 1)

  def test_existing_export_dir_needs_overwrite(self):
    export_dir = os.path.join(self.tmp, "export")
    os.makedirs(export_dir)
    self.assertRefused([f"--export_dir={export_dir}"], "--overwrite")


class HelpTest(tf.test.TestCase):

  def test_help_lists_every_flag_with_meaning_and_default(self):
    from dvae import config  # pylint: disable=g-import-not-at-top
    for flag in ("--help", "--helpfull"):
      result = run_cli([flag], timeout=60)
      self.assertEqual(result.returncode, 0, result.stderr)
      for name in ["hparams", "overwrite", *config.HELP]:
        match = re.search(rf"--(\[no\])?{name}: (.*?)(?=\n  --|\Z)", result.stdout, re.S)
        self.assertIsNotNone(match, f"{flag} does not list --{name}")
        self.assertRegex(match.group(2), r"\(default", f"--{name} has no default")


class CommandLineRunTest(tf.test.TestCase):

  def test_flag_overrides_file_and_run_writes_results(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli(["--hparams=quickstart", f"--log_dir={log_dir}", "--num_train_iter=4",
                      "--eval_every=4", *TINY])
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("overrides", result.stdout)
    run = re.search(r"^new run in (\S+)$", result.stdout, re.M).group(1)
    with open(os.path.join(run, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(results["steps"], 4)
    self.assertTrue(np.isfinite(results["test_nll"]))
    self.assertEqual(results["hparams"]["num_chains"], 20)


class CrashSafetyTest(tf.test.TestCase):

  # Slow (~1 min): three kills of the command line; the default suite kills a run in
  # test_reliability.py and test_run_integrity.py.
  @pytest.mark.slow
  def test_run_killed_repeatedly_resumes_and_finishes(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    args = ["--hparams=quickstart", f"--log_dir={log_dir}", "--num_train_iter=600",
            "--eval_every=300", "--checkpoint_every_steps=20", *TINY]
    run = None
    env = dict(os.environ, DVAE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    # SIGKILL once the run's latest checkpoint reaches a given step: mid-training (100), the
    # evaluation at step 300, and mid-training after that (500); each run resumes the previous
    # one. Watching the checkpoints rather than a timer or the progress lines makes the test
    # independent of the machine's speed and of how steps are grouped into Keras epochs.
    for kill_at in (100, 300, 500):
      process = subprocess.Popen(
          [sys.executable, os.path.join(REPO, "run_training.py"), *args], cwd=REPO, env=env,
          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
      for line in process.stdout:
        match = re.match(r"(new run|resuming the run) in (.*)", line)
        if match:
          run = match.group(2).strip()
          break
      latest = os.path.join(run, "checkpoints", "latest")
      deadline = time.monotonic() + 240
      while process.poll() is None and time.monotonic() < deadline:
        state = tf.train.get_checkpoint_state(latest) if os.path.isdir(latest) else None
        if state and int(state.model_checkpoint_path.rsplit("-", 1)[1]) >= kill_at:
          process.send_signal(signal.SIGKILL)
          break
        time.sleep(0.05)
      process.wait()
      self.assertEqual(process.returncode, -signal.SIGKILL)
      self.assertFalse(os.path.exists(os.path.join(run, "results.json")))
    result = run_cli(args)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("resumed from", result.stdout)
    with open(os.path.join(run, "results.json")) as f:
      self.assertEqual(json.load(f)["steps"], 600)



class StartUpRefusalTest(tf.test.TestCase):
  """Refused before TensorFlow loads: exit 2, one line, nothing deleted or written."""

  def assertOneLine(self, result, status, *expected):
    self.assertEqual(result.returncode, status, result.stdout + result.stderr)
    lines = result.stderr.strip().splitlines()
    self.assertLen(lines, 1, result.stderr)
    for text in expected:
      self.assertIn(text, lines[0])

  def test_export_dir_equal_to_the_log_dir_or_a_foreign_folder_is_never_deleted(self):
    root = self.get_temp_dir()
    log_dir = os.path.join(root, "logs")
    keep = os.path.join(log_dir, "previous_run.txt")
    os.makedirs(log_dir)
    with open(keep, "w") as f:
      f.write("keep")
    for export_dir, expected in ((log_dir, "of its own"), (root, "of its own"),
                                 (".", "not a model exported by this program")):
      result = run_cli([f"--log_dir={log_dir}", f"--export_dir={export_dir}", "--overwrite",
                        "--num_train_iter=1"])
      self.assertOneLine(result, 2, expected)
    foreign = os.path.join(root, "photos")
    os.makedirs(foreign)
    result = run_cli([f"--log_dir={log_dir}", f"--export_dir={foreign}", "--overwrite"])
    self.assertOneLine(result, 2, "not a model exported by this program")
    self.assertTrue(os.path.isfile(keep))
    self.assertTrue(os.path.isdir(foreign))

  def test_malformed_flags_are_one_line(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    for flags, expected in (
        (["--sampler=dimod", "--dimod_sampler=..x"], "not an import path"),
        ([f"--num_chains={'9' * 5000}"], "num_chains"),
        (["--prior=chimera", "--graph_size=1e23"], "graph_size"),
        (["--graph_size=" + "1" * 30, "--prior=chimera"], "graph_size"),
        (["--distribute=multi_worker"], "TF_CONFIG")):
      result = run_cli([f"--log_dir={log_dir}", *flags], env={"TF_CONFIG": "{"})
      self.assertOneLine(result, 2, expected)
    self.assertFalse(os.path.exists(log_dir))

  def test_ctrl_c_while_starting_is_one_line(self):
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "run_training.py"),
         f"--log_dir={os.path.join(self.get_temp_dir(), 'logs')}", "--num_train_iter=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, DVAE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3"))
    time.sleep(1.5)  # importing TensorFlow
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    self.assertEqual(process.returncode, 130, stderr)
    self.assertLen(stderr.strip().splitlines(), 1, stderr)
    self.assertIn("interrupted", stderr)


if __name__ == "__main__":
  tf.test.main()
