"""Run integrity without TensorFlow: identity, stored configuration, lock, checkpoints, memory."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest

from dvae import config, runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hparams(log_dir, **overrides):
  values = dict(struct="1-layer-lin", sampler="pcd", num_chains=20, num_sweeps=2,
                num_train_iter=100, log_dir=log_dir)
  values.update(overrides)
  return config.load_hparams(None, values)[0]


def listing(root):
  """Every file under `root` with its size and modification time."""
  return {os.path.join(folder, name): (os.stat(os.path.join(folder, name)).st_size,
                                       os.stat(os.path.join(folder, name)).st_mtime_ns)
          for folder, _, names in os.walk(root) for name in names}


class RunDirectoryTest(absltest.TestCase):

  def test_directory_is_readable_and_spells_the_main_hparams(self):
    directory = runs.run_directory(hparams("logs", k=5, seed=3))
    self.assertRegex(directory, r"^logs/binarized_mnist/1-layer-lin/dvaes_power/k5/"
                                r"seed3-[0-9a-f]{8}$")

  def test_seeds_and_other_result_changing_hparams_get_their_own_directories(self):
    base = hparams("logs")
    others = [hparams("logs", seed=1), hparams("logs", num_sweeps=5), hparams("logs", beta=7.0),
              hparams("logs", sampler="pa"), hparams("logs", base_lr=1e-3),
              hparams("logs", train_batch_size=50), hparams("logs", num_chains=30)]
    directories = {runs.run_directory(hp) for hp in [base, *others]}
    self.assertLen(directories, 1 + len(others))

  def test_seeds_of_one_configuration_share_the_digest(self):
    names = [os.path.basename(runs.run_directory(hparams("logs", seed=seed)))
             for seed in (0, 1, 2)]
    self.assertEqual({name.split("-")[1] for name in names}, {runs.digest(hparams("logs"))})

  def test_resume_safe_hparams_keep_the_directory(self):
    base = runs.run_directory(hparams("logs"))
    for change in (dict(num_train_iter=5000), dict(eval_iw_samples=10),
                   dict(periodic_eval_iw_samples=7), dict(eval_every=50),
                   dict(checkpoint_every_steps=3), dict(checkpoint_every_secs=9.0),
                   dict(export_dir="elsewhere"), dict(eval_batch_size=500),
                   dict(steps_per_execution=10)):
      self.assertEqual(runs.run_directory(hparams("logs", **change)), base, change)

  def test_a_field_unknown_to_this_module_changes_the_identity(self):
    extended = dataclasses.make_dataclass(
        "Extended", [("new_option", int, 0)], bases=(config.HParams,), frozen=True)
    base = hparams("logs")
    plain = extended(**dataclasses.asdict(base))
    changed = extended(**dataclasses.asdict(base), new_option=1)
    self.assertEqual(runs.run_directory(plain), runs.run_directory(base))
    self.assertNotEqual(runs.run_directory(changed), runs.run_directory(base))
    self.assertIn("new_option", runs.identity(changed))

  def test_a_data_file_is_named_by_its_stem_and_identified_by_its_path(self):
    first = hparams("logs", dataset="/data/a/cells.npz")
    second = hparams("logs", dataset="/data/b/cells.npz")
    self.assertRegex(runs.run_directory(first), r"^logs/cells/1-layer-lin/")
    self.assertNotEqual(runs.run_directory(first), runs.run_directory(second))


class OpenRunTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp)
    self.log_dir = os.path.join(self.tmp, "logs")
    self.lines = []

  def open(self, **overrides):
    return runs.open_run(hparams(self.log_dir, **overrides), log=self.lines.append)

  def test_new_run_stores_its_configuration_and_the_same_command_resumes_it(self):
    with self.open() as run:
      self.assertFalse(run.resumed)
      with open(os.path.join(run.directory, runs.CONFIG)) as f:
        self.assertEqual(json.load(f), dataclasses.asdict(hparams(self.log_dir)))
    with self.open() as again:
      self.assertTrue(again.resumed)
    self.assertEqual(again.directory, run.directory)
    self.assertIn("new run", self.lines[0])
    self.assertIn("resuming", self.lines[1])

  def test_mismatched_stored_configuration_is_refused_naming_both_values(self):
    with self.open() as run:
      pass
    path = os.path.join(run.directory, runs.CONFIG)
    with open(path) as f:
      stored = json.load(f)
    stored.update(num_sweeps=5, beta=9.0)
    runs.write_json_atomically(path, stored)
    before = listing(self.tmp)
    with self.assertRaises(runs.RunError) as refused:
      self.open()
    message = str(refused.exception)
    self.assertNotIn("\n", message)
    self.assertIn("num_sweeps: run has 5, command gives 2", message)
    self.assertIn("beta: run has 9.0, command gives", message)
    self.assertEqual(listing(self.tmp), before)

  def test_resume_safe_changes_are_allowed_and_logged(self):
    with self.open():
      pass
    with self.open(num_train_iter=500, eval_iw_samples=50, steps_per_execution=10) as run:
      self.assertTrue(run.resumed)
    changes = [line for line in self.lines if "resume-safe" in line]
    self.assertLen(changes, 3)
    self.assertIn("num_train_iter changed from 100 to 500", " ".join(changes))
    self.assertIn("steps_per_execution changed from 1 to 10", " ".join(changes))
    self.assertEqual(runs.read_config(run.directory)["num_train_iter"], 500)

  def test_a_field_missing_from_an_older_stored_configuration_counts_as_its_default(self):
    with self.open() as run:
      pass
    path = os.path.join(run.directory, runs.CONFIG)
    stored = runs.read_config(run.directory)
    del stored["num_sweeps"]
    runs.write_json_atomically(path, stored)
    with self.assertRaisesRegex(runs.RunError, "num_sweeps: run has 40, command gives 2"):
      self.open()

  def test_second_opener_is_refused_naming_the_holder_and_nothing_is_written(self):
    with self.open():
      before = listing(self.tmp)
      with self.assertRaisesRegex(runs.RunError, rf"in use by process {os.getpid()} \("):
        self.open()
      self.assertEqual(listing(self.tmp), before)
    self.open().close()

  def test_second_process_is_refused_and_a_killed_holder_does_not_block(self):
    values = dataclasses.asdict(hparams(self.log_dir))
    script = ("import time; from dvae import config, runs; "
              f"lock = runs.open_run(config.HParams(**{values!r}), log=print); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
      self.assertIn("new run", holder.stdout.readline())
      with self.assertRaisesRegex(runs.RunError, rf"in use by process {holder.pid} \(.*python"):
        self.open()
    finally:
      holder.send_signal(signal.SIGKILL)
      holder.wait()
    with self.open() as run:
      self.assertTrue(run.resumed)
      with open(os.path.join(run.directory, runs.LOCK)) as f:
        self.assertEqual(f.read().strip(), str(os.getpid()))

  def test_workers_other_than_the_chief_of_a_multi_worker_run_leave_the_lock_to_it(self):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    with self.open(distribute="multi_worker"):
      before = listing(self.tmp)
      worker = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
      with mock.patch.dict(os.environ, TF_CONFIG=worker):
        self.assertFalse(runs.is_chief())
        with self.open(distribute="multi_worker") as second:
          self.assertTrue(second.resumed)
      self.assertEqual(listing(self.tmp), before)
      chief = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
      with mock.patch.dict(os.environ, TF_CONFIG=chief):
        self.assertTrue(runs.is_chief())
        with self.assertRaisesRegex(runs.RunError, "in use"):
          self.open(distribute="multi_worker")

  def test_unwritable_log_dir_and_export_dir_are_refused_before_anything_is_written(self):
    blocker = os.path.join(self.tmp, "a_file")
    with open(blocker, "w"):
      pass
    with self.assertRaisesRegex(runs.RunError, r"^log_dir .* pass a writable --log_dir$"):
      runs.open_run(hparams(os.path.join(blocker, "logs")))
    with self.assertRaisesRegex(runs.RunError, r"^export_dir .*a_file/export .*--export_dir$"):
      self.open(export_dir=os.path.join(blocker, "export"))
    self.assertFalse(os.path.exists(self.log_dir))


class NewestReadableTest(absltest.TestCase):

  @staticmethod
  def verify_with(damaged):
    def verify(name):
      if name in damaged:
        raise ValueError(f"{name}: truncated\nsecond line")
    return verify

  def test_damaged_newest_is_skipped_with_one_warning(self):
    lines = []
    chosen = runs.newest_readable(["ckpt-1", "ckpt-2"], self.verify_with({"ckpt-2"}),
                                  lines.append)
    self.assertEqual(chosen, "ckpt-1")
    self.assertLen(lines, 1)
    self.assertRegex(lines[0], r"^warning: checkpoint ckpt-2 \(ckpt-2: truncated\) is damaged; "
                               r"resuming from ckpt-1$")

  def test_no_readable_checkpoint_is_refused_in_one_line(self):
    with self.assertRaises(runs.RunError) as refused:
      runs.newest_readable(["ckpt-1", "ckpt-2"], self.verify_with({"ckpt-1", "ckpt-2"}), print)
    self.assertNotIn("\n", str(refused.exception))
    self.assertIn("nothing was deleted", str(refused.exception))

  def test_no_checkpoint_at_all_is_a_new_start(self):
    self.assertIsNone(runs.newest_readable([], self.verify_with(set()), print))


class MemoryTest(absltest.TestCase):

  def test_quickstart_fits_in_four_gib(self):
    hp = config.load_hparams("quickstart")[0]
    runs.check_memory(hp, 784, eval_rows=100_000, available=4 * 2**30)

  def test_oversized_k_is_refused_naming_the_figure_and_the_flag(self):
    with self.assertRaises(runs.RunError) as refused:
      runs.check_memory(hparams("logs", k=100_000), 784, eval_rows=100_000,
                        available=16 * 2**30)
    message = str(refused.exception)
    self.assertRegex(message, r"needs about \d+\.\d GiB .*10,000,000.* 16\.0 GiB is available; "
                              r"lower --k or --train_batch_size$")

  def test_oversized_num_chains_is_refused_naming_the_flag(self):
    with self.assertRaisesRegex(runs.RunError, r"lower --num_chains$"):
      runs.check_memory(hparams("logs", num_chains=10**9), 784, eval_rows=100_000,
                        available=16 * 2**30)

  def test_available_memory_is_positive_and_below_the_machine_total(self):
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    self.assertTrue(0 < runs.available_memory() <= total)


class NoTensorFlowTest(absltest.TestCase):

  def test_module_loads_without_tensorflow(self):
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from dvae import runs; "
                               "print('tensorflow' in sys.modules)"],
        cwd=REPO, capture_output=True, text=True, check=True)
    self.assertEqual(result.stdout.strip(), "False")


if __name__ == "__main__":
  absltest.main()
