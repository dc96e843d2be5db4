"""Run integrity end to end: one configuration and one process per run directory, checkpoints
that survive damage and kills, requests the machine cannot serve refused before training."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import tensorflow as tf
from absl.testing import parameterized

import helpers
from dvae import config, runs, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(hparams="quickstart", struct="1-layer-lin", sampler="pcd", num_chains=20,
            num_sweeps=2, train_batch_size=20, eval_batch_size=500, periodic_eval_iw_samples=2,
            eval_iw_samples=2, num_train_iter=2, eval_every=2, final_log_z_betas=100)


def arguments(**flags):
  return [f"--{key}={value}" for key, value in {**TINY, **flags}.items()]


def run_directory(**flags):
  values = {key: value for key, value in {**TINY, **flags}.items() if key != "hparams"}
  return runs.run_directory(config.load_hparams(TINY["hparams"], values)[0])


def run_cli(args, timeout=300):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "run_training.py"), *args], capture_output=True,
      text=True, timeout=timeout, cwd=REPO,
      env=dict(os.environ, DVAE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3"))


def listing(root):
  """Every file under `root` with its size and modification time."""
  found = {}
  for folder, _, names in os.walk(root):
    for name in names:
      status = os.stat(os.path.join(folder, name))
      found[os.path.join(folder, name)] = (status.st_size, status.st_mtime_ns)
  return found


def _quiet(_):
  pass


class CommandLineRunIntegrityTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.log_dir = os.path.join(self.get_temp_dir(), "logs")

  def assertRefused(self, result, *expected):
    self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
    lines = result.stderr.strip().splitlines()
    self.assertLen(lines, 1, result.stderr)
    for text in expected:
      self.assertIn(text, lines[0])
    self.assertNotIn("Traceback", result.stderr)

  def test_resume_safe_change_resumes_and_result_changing_mismatch_is_refused(self):
    first = run_cli(arguments(log_dir=self.log_dir))
    self.assertEqual(first.returncode, 0, first.stderr)
    directory = run_directory(log_dir=self.log_dir)
    self.assertIn(f"new run in {directory}", first.stdout)

    longer = run_cli(arguments(log_dir=self.log_dir, num_train_iter=4, eval_every=4))
    self.assertEqual(longer.returncode, 0, longer.stderr)
    self.assertIn(f"resuming the run in {directory}", longer.stdout)
    self.assertIn("num_train_iter changed from 2 to 4 (resume-safe)", longer.stdout)
    self.assertRegex(longer.stdout, r"resumed from .*ckpt-2 at step 2")
    with open(os.path.join(directory, "results.json")) as f:
      self.assertEqual(json.load(f)["steps"], 4)

    # The stored configuration as an older version of the code would have left it.
    stored = runs.read_config(directory)
    stored["num_sweeps"] = 5
    runs.write_json_atomically(os.path.join(directory, runs.CONFIG), stored)
    before = listing(self.log_dir)
    self.assertRefused(run_cli(arguments(log_dir=self.log_dir, num_train_iter=4)),
                       "num_sweeps: run has 5, command gives 2", directory)
    self.assertEqual(listing(self.log_dir), before)

  def test_second_process_is_refused_naming_the_holder(self):
    script = textwrap.dedent(f"""
        import time
        from dvae import config, runs
        values = {{k: v for k, v in {TINY!r}.items() if k != "hparams"}}
        hp = config.load_hparams("quickstart", dict(values, log_dir={self.log_dir!r}))[0]
        run = runs.open_run(hp)
        time.sleep(600)
        """)
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
      self.assertIn("new run", holder.stdout.readline())
      before = listing(self.log_dir)
      self.assertRefused(run_cli(arguments(log_dir=self.log_dir)),
                         f"in use by process {holder.pid}", run_directory(log_dir=self.log_dir))
      self.assertEqual(listing(self.log_dir), before)
    finally:
      holder.send_signal(signal.SIGKILL)
      holder.wait()

  @parameterized.named_parameters(
      ("k", dict(k=100_000), "lower --k or --train_batch_size"),
      ("num_chains", dict(num_chains=1_000_000_000, sampler="pa"), "lower --num_chains"),
      ("export_dir", dict(export_dir="/proc/nope"), "pass a writable --export_dir"),
  )
  def test_request_the_machine_cannot_serve_is_refused_before_training(self, flags, expected):
    result = run_cli(arguments(log_dir=self.log_dir, **flags))
    self.assertRefused(result, expected)
    self.assertFalse(os.path.exists(self.log_dir))

  def test_out_of_memory_during_training_is_one_line_and_keeps_the_last_checkpoint(self):
    # The machine's memory cannot be exhausted safely in a test: the training step raises
    # TensorFlow's out-of-memory error itself once two steps have been checkpointed.
    script = textwrap.dedent(f"""
        import sys
        import tensorflow as tf
        import run_training
        from dvae import training
        fit = training.Run.fit
        def fit_then_run_out_of_memory(self, verbose=2):
          fit(self, verbose)
          raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        training.Run.fit = fit_then_run_out_of_memory
        run_training.main(["run_training.py", *{arguments(log_dir=self.log_dir)!r}])
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, timeout=300,
                            env=dict(os.environ, DVAE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3"))
    self.assertEqual(result.returncode, 1, result.stderr)
    # Above the last line: the native log lines of the script's own `import tensorflow`.
    self.assertNotIn("Traceback", result.stderr)
    self.assertRegex(result.stderr.strip().splitlines()[-1],
                     r"^error: out of memory at step 2 \(OOM when allocating tensor\); last "
                     r"checkpoint kept: .*ckpt-2; lower --k")
    latest = os.path.join(run_directory(log_dir=self.log_dir), "checkpoints", "latest")
    self.assertEqual(training.saved_checkpoints(tf.train.CheckpointManager(
        tf.train.Checkpoint(), latest, max_to_keep=2))[-1], os.path.join(latest, "ckpt-2"))


class CheckpointRecoveryTest(tf.test.TestCase):
  """Two latest checkpoints are kept; a damaged newest one falls back to the one before."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dataset = helpers.synthetic_dataset()
    cls.trained = tempfile.mkdtemp()
    training.Run(cls.hparams(cls.trained), cls.dataset, log=_quiet).fit(verbose=0)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.trained)
    super().tearDownClass()

  @staticmethod
  def hparams(log_dir):
    return helpers.tiny_hparams(log_dir, num_train_iter=3, eval_every=1000,
                                checkpoint_every_steps=1)

  def setUp(self):
    super().setUp()
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    shutil.copytree(self.trained, log_dir)
    self.hp = self.hparams(log_dir)
    self.latest = os.path.join(runs.run_directory(self.hp), "checkpoints", "latest")

  def files(self, step):
    return sorted(glob.glob(os.path.join(self.latest, f"ckpt-{step}.*")))

  def resume(self):
    lines = []
    step = training.Run(self.hp, self.dataset, log=lines.append).restore_latest()
    return step, [line for line in lines if line.startswith("warning")]

  def test_two_latest_checkpoints_are_kept(self):
    self.assertEqual(
        sorted(os.path.basename(path) for path in glob.glob(os.path.join(self.latest, "*.index"))),
        ["ckpt-2.index", "ckpt-3.index"])

  def test_truncated_data_file_falls_back_to_the_checkpoint_before(self):
    data = next(path for path in self.files(3) if ".data-" in path)
    os.truncate(data, os.path.getsize(data) // 2)
    step, warnings = self.resume()
    self.assertEqual(step, 2)
    self.assertLen(warnings, 1)
    self.assertRegex(warnings[0], r"ckpt-3 .* is damaged; resuming from .*ckpt-2$")

  def test_missing_index_falls_back_to_the_checkpoint_before(self):
    os.remove(os.path.join(self.latest, "ckpt-3.index"))
    step, warnings = self.resume()
    self.assertEqual(step, 2)
    self.assertLen(warnings, 1)
    self.assertIn("index file is missing", warnings[0])

  def test_no_readable_checkpoint_is_refused_and_nothing_is_deleted(self):
    for step in (2, 3):
      data = next(path for path in self.files(step) if ".data-" in path)
      os.truncate(data, 10)
    before = listing(self.latest)
    with self.assertRaisesRegex(runs.RunError, r"^no readable checkpoint: .*ckpt-3.*ckpt-2.*"
                                               r"nothing was deleted"):
      self.resume()
    self.assertEqual(listing(self.latest), before)

  def test_kill_during_checkpoint_writing_leaves_a_resumable_run(self):
    # A process that does nothing but write checkpoints is killed at arbitrary moments, so
    # the kills land inside saves; every time the next process resumes from a whole one.
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, "tests")
        import helpers
        from dvae import training
        hp = helpers.tiny_hparams({self.hp.log_dir!r}, num_train_iter=3, eval_every=1000,
                                  checkpoint_every_steps=1)
        run = training.Run(hp, helpers.synthetic_dataset(), log=print)
        run.restore_latest()
        print("saving", flush=True)
        while True:
          run.model.optimizer.iterations.assign_add(1)
          run.save_latest()
        """)
    reached = 3
    for delay in (0.2, 0.9):
      process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                                 stdout=subprocess.PIPE, text=True,
                                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
      for line in process.stdout:
        if line.startswith("saving"):
          break
      try:
        process.wait(timeout=delay)
      except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
      step, _ = self.resume()
      self.assertGreaterEqual(step, reached)
      reached = step


if __name__ == "__main__":
  tf.test.main()
