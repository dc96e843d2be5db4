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


class OwnershipTest(absltest.TestCase):
  """Only what the program made is replaced; nothing is written through links or outside."""

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp)
    self.log_dir = os.path.join(self.tmp, "logs")

  def test_export_dir_that_is_the_log_dir_inside_or_above_it_is_refused_even_with_overwrite(self):
    os.makedirs(os.path.join(self.log_dir, "run"))
    for export_dir in (self.log_dir, self.tmp, os.path.join(self.log_dir, "run"), "/"):
      with self.assertRaisesRegex(runs.RunError, r"^export_dir .* log_dir .* of its own$"):
        runs.check_export_dir(export_dir, self.log_dir, overwrite=True)
    self.assertTrue(os.path.isdir(os.path.join(self.log_dir, "run")))

  def test_overwrite_replaces_only_a_directory_this_program_exported(self):
    foreign = os.path.join(self.tmp, "photos")
    os.makedirs(foreign)
    with self.assertRaisesRegex(runs.RunError, r"not a model exported by this program"):
      runs.check_export_dir(foreign, self.log_dir, overwrite=True)
    with self.assertRaisesRegex(runs.RunError, r"exists; pass --overwrite"):
      runs.check_export_dir(foreign, self.log_dir, overwrite=False)
    link = os.path.join(self.tmp, "link")
    exported = os.path.join(self.tmp, "model")
    os.makedirs(exported)
    runs.write_json_atomically(os.path.join(exported, runs.EXPORT_MARKER), {})
    os.symlink(exported, link)
    with self.assertRaisesRegex(runs.RunError, r"not a model exported by this program"):
      runs.check_export_dir(link, self.log_dir, overwrite=True)
    runs.check_export_dir(exported, self.log_dir, overwrite=True)
    runs.check_export_dir(os.path.join(self.tmp, "new"), self.log_dir, overwrite=False)

  def test_links_in_place_of_run_files_are_refused_and_their_targets_untouched(self):
    hp = hparams(self.log_dir)
    directory = runs.run_directory(hp)
    outside = os.path.join(self.tmp, "precious.txt")
    for name in ("lock", "eval_history.jsonl", "checkpoints", "config.json"):
      with open(outside, "w") as f:
        f.write("keep me")
      shutil.rmtree(directory, ignore_errors=True)
      os.makedirs(directory)
      os.symlink(outside, os.path.join(directory, name))
      with self.assertRaisesRegex(runs.RunError, rf"{name} is a symbolic link"):
        runs.open_run(hp, log=lambda _: None)
      with open(outside) as f:
        self.assertEqual(f.read(), "keep me")

  def test_run_files_are_opened_without_following_links(self):
    target = os.path.join(self.tmp, "target")
    link = os.path.join(self.tmp, "link")
    with open(target, "w") as f:
      f.write("keep me")
    os.symlink(target, link)
    with self.assertRaisesRegex(runs.RunError, "is a symbolic link"):
      runs.open_no_follow(link, os.O_WRONLY | os.O_APPEND)
    with open(target) as f:
      self.assertEqual(f.read(), "keep me")

  def test_writability_check_creates_nothing_anywhere(self):
    before = listing(self.tmp)
    runs.check_writable(os.path.join(self.tmp, "a", "b", "c"), "log_dir")
    self.assertEqual(listing(self.tmp), before)
    self.assertEqual(os.listdir(self.tmp), [])

  def test_other_data_behind_the_same_dataset_is_refused(self):
    hp = hparams(self.log_dir)
    runs.open_run(hp, log=lambda _: None, data_fingerprint="aaaa").close()
    runs.open_run(hp, log=lambda _: None, data_fingerprint="aaaa").close()
    with self.assertRaisesRegex(runs.RunError, r"trained on other data .*aaaa.*bbbb"):
      runs.open_run(hp, log=lambda _: None, data_fingerprint="bbbb")

  def test_full_disk_is_named_and_leaves_no_temporary_file(self):
    path = os.path.join(self.tmp, "results.json")
    full = OSError(28, "No space left on device")
    with mock.patch.object(os, "fsync", side_effect=full):
      with self.assertRaisesRegex(runs.RunError, r"^the disk is full: cannot write .*results"):
        runs.write_json_atomically(path, {"a": 1})
    self.assertEqual(os.listdir(self.tmp), [])
    self.assertTrue(runs.is_disk_full(full))
    self.assertTrue(runs.is_disk_full(RuntimeError("...: No space left on device")))
    self.assertFalse(runs.is_disk_full(MemoryError("OOM when allocating")))

  def test_malformed_tf_config_is_one_line(self):
    for text in ("{", '{"cluster": []}', '{"cluster": {"worker": ["a:1"]}, "task": '
                 '{"type": "worker", "index": 3}}', "[" * 100_000, None):
      environ = {} if text is None else {"TF_CONFIG": text}
      with self.assertRaisesRegex(runs.RunError, r"TF_CONFIG") as refused:
        runs.check_tf_config(environ)
      self.assertNotIn("\n", str(refused.exception))
      self.assertLess(len(str(refused.exception)), 400)
    runs.check_tf_config({"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})})


class MemoryEstimateTest(absltest.TestCase):

  def test_prior_weights_grow_with_the_square_of_the_units(self):
    def parameters_bytes(units):
      needed = runs.memory_needed(hparams("logs", latent_units=units), 784, 0)
      return next(size for label, (size, _) in needed.items() if label.startswith("parameters"))
    small, large = parameters_bytes(2_000), parameters_bytes(20_000)
    # W has (n/2)² entries: ×100 from 2,000 to 20,000 units (the networks grow ×10 only).
    self.assertGreater(large / small, 30)
    self.assertGreater(large, 5 * 10**9)  # the 5.24 GB peak at 20,000 units

  def test_a_huge_hardware_graph_is_refused_before_it_is_built(self):
    hp = dataclasses.replace(hparams("logs"), prior="chimera", graph_size=100_000)
    with self.assertRaisesRegex(runs.RunError, r"chimera graph of size 100000 .* --graph_size$"):
      runs.check_memory(hp, 784, eval_rows=1000, available=64 * 2**30)

  def test_data_is_counted(self):
    hp = hparams("logs")
    with self.assertRaisesRegex(runs.RunError, r"data .* lower --dataset$"):
      runs.check_memory(hp, 784, eval_rows=1000, available=8 * 2**30, data_values=10**10)

  def test_cgroup_v1_limit_caps_the_available_memory(self):
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp)
    limit, usage = os.path.join(tmp, "memory.limit_in_bytes"), os.path.join(tmp, "usage")
    with open(limit, "w") as f:
      f.write(f"{3 * 2**20}\n")
    with open(usage, "w") as f:
      f.write(f"{2**20}\n")
    files = (("/nonexistent/memory.max", "/nonexistent/memory.current"), (limit, usage))
    with mock.patch.object(runs, "CGROUP_MEMORY_FILES", files):
      self.assertEqual(runs.available_memory(), 2 * 2**20)
