"""The grid harness: runs every cell once, resumes, runs in parallel, isolates failures, publishes.

The trainer is a stand-in script (no TensorFlow) that writes what run_training.py writes —
results.json and eval_history.jsonl in `<log_dir>/<dataset>/<struct>/<baseline>/<k>/` — with
NLLs that are a known function of the cell, so the table can be checked cell by cell.
"""

import contextlib
import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

import pytest

import reproduce
from dvae import paper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_GRID = os.path.join(REPO, "grids", "tiny.json")

# Behaviour per cell, chosen by environment variables naming "<baseline>/<k>":
#   FAKE_FAIL       exit 1 without results;
#   FAKE_INTERRUPT  save a "checkpoint" and exit 130 unless one exists (then resume and finish).
# FAKE_SLEEP seconds are spent "training", between the start and end times it records.
FAKE_TRAINER = textwrap.dedent('''
    import json, os, sys, time
    flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
    def parse(text):
      try:
        return json.loads(text)
      except ValueError:
        return text
    hparams = {key: parse(value) for key, value in flags.items()}
    run_dir = os.path.join(hparams["log_dir"], hparams["dataset"], hparams["struct"],
                           hparams["baseline"], str(hparams["k"]))
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "invocations"), "a") as f:
      f.write("x")
    cell = f"{hparams['baseline']}/{hparams['k']}"
    print(f"fake trainer for {cell}")
    start = time.time()
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    if cell == os.environ.get("FAKE_FAIL"):
      print("non-finite loss at step 3", file=sys.stderr)
      sys.exit(1)
    checkpoint = os.path.join(run_dir, "checkpoint")
    resumed = os.path.exists(checkpoint)
    if cell == os.environ.get("FAKE_INTERRUPT") and not resumed:
      open(checkpoint, "w").close()
      sys.exit(130)
    # A known function of the cell: test NLL = 90 + k + (index of the baseline) / 10.
    test_nll = 90 + hparams["k"] + ["dvaes_power", "dvae_spike_exp"].index(
        hparams["baseline"]) / 10
    steps = hparams["num_train_iter"]
    with open(os.path.join(run_dir, "eval_history.jsonl"), "a") as f:
      for step in range(hparams["eval_every"], steps + 1, hparams["eval_every"]):
        nll = test_nll + 10 * (1 - step / steps)
        f.write(json.dumps(dict(step=step, val_nll=nll + 0.5, test_nll=nll, val_neg_elbo=nll + 5,
                                test_neg_elbo=nll + 5, log_z=30.0, log_z_stderr=0.1)) + "\\n")
    results = dict(val_nll=test_nll + 0.5, test_nll=test_nll, val_neg_elbo=test_nll + 5,
                   test_neg_elbo=test_nll + 5, log_z=30.0, log_z_stderr=0.1, steps=steps,
                   best_step=steps, wall_seconds=90.0, steps_per_second=12.5,
                   val_iw_samples=hparams["periodic_eval_iw_samples"],
                   test_iw_samples=hparams["eval_iw_samples"], resumed=resumed,
                   started=start, ended=time.time(), hparams=hparams)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
      json.dump(results, f)
''')

CELLS = [(baseline, k) for baseline in ("dvaes_power", "dvae_spike_exp") for k in (1, 2)]


def expected_test_nll(baseline, k):
  return 90 + k + ["dvaes_power", "dvae_spike_exp"].index(baseline) / 10


class ReproduceTest(unittest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp)
    self.trainer = os.path.join(self.tmp, "fake_trainer.py")
    with open(self.trainer, "w") as f:
      f.write(FAKE_TRAINER)
    self.log_dir = os.path.join(self.tmp, "runs")
    self.results_dir = os.path.join(self.tmp, "results")
    for name in ("FAKE_FAIL", "FAKE_INTERRUPT", "FAKE_SLEEP"):
      os.environ.pop(name, None)

  def run_harness(self, *extra, grid=TINY_GRID, env=None):
    """Runs reproduce.main in-process; returns (exit status, stdout, stderr)."""
    previous = dict(os.environ)
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    try:
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = reproduce.main([
            f"--grid={grid}", f"--log_dir={self.log_dir}", f"--results_dir={self.results_dir}",
            f"--trainer={shlex.join([sys.executable, self.trainer])}", *extra])
    finally:
      os.environ.clear()
      os.environ.update(previous)
    return status, out.getvalue(), err.getvalue()

  def run_dir(self, baseline, k):
    return os.path.join(self.log_dir, "tiny", "pcd", "seed0", "binarized_mnist", "1-layer-lin",
                        baseline, str(k))

  def invocations(self):
    counts = {}
    for baseline, k in CELLS:
      path = os.path.join(self.run_dir(baseline, k), "invocations")
      counts[(baseline, k)] = len(open(path).read()) if os.path.exists(path) else 0
    return counts

  def results(self, baseline, k):
    with open(os.path.join(self.run_dir(baseline, k), "results.json")) as f:
      return json.load(f)

  def csv_rows(self, name="tiny"):
    with open(os.path.join(self.results_dir, f"{name}.csv")) as f:
      return list(csv.DictReader(f))

  def write_grid(self, content):
    path = os.path.join(self.tmp, "grid.json")
    with open(path, "w") as f:
      json.dump(content, f)
    return path

  def test_runs_every_cell_once_and_skips_finished_runs_when_rerun(self):
    status, out, _ = self.run_harness()
    self.assertEqual(status, 0)
    self.assertEqual(self.invocations(), {cell: 1 for cell in CELLS})
    for baseline, k in CELLS:
      # The trainer got the grid's hparams as flags and the harness's per-seed log_dir.
      hparams = self.results(baseline, k)["hparams"]
      self.assertEqual(hparams["baseline"], baseline)
      self.assertEqual(hparams["k"], k)
      self.assertEqual(hparams["num_train_iter"], 20)
      self.assertEqual(hparams["log_dir"], os.path.join(self.log_dir, "tiny", "pcd", "seed0"))
      with open(os.path.join(self.run_dir(baseline, k), reproduce.RUN_LOG)) as f:
        self.assertIn(f"fake trainer for {baseline}/{k}", f.read())
    self.assertIn("4 to run", out)

    status, out, _ = self.run_harness()
    self.assertEqual(status, 0)
    self.assertEqual(self.invocations(), {cell: 1 for cell in CELLS})
    self.assertIn("4 finished, 0 to run", out)

  def test_reruns_only_the_cells_whose_results_are_missing_or_unreadable(self):
    self.assertEqual(self.run_harness()[0], 0)
    os.remove(os.path.join(self.run_dir("dvae_spike_exp", 2), "results.json"))
    with open(os.path.join(self.run_dir("dvaes_power", 1), "results.json"), "w") as f:
      f.write('{"val_nll": 9')
    self.assertEqual(self.run_harness()[0], 0)
    expected = {cell: 1 for cell in CELLS}
    expected[("dvae_spike_exp", 2)] = expected[("dvaes_power", 1)] = 2
    self.assertEqual(self.invocations(), expected)
    self.assertEqual(len(self.csv_rows()), 4)

  def test_interrupted_cell_fails_then_resumes_with_the_same_command(self):
    env = {"FAKE_INTERRUPT": "dvaes_power/2"}
    status, _, err = self.run_harness(env=env)
    self.assertEqual(status, 1)
    self.assertIn("exit status 130", err)
    self.assertEqual(len(self.csv_rows()), 3)
    status, _, _ = self.run_harness(env=env)
    self.assertEqual(status, 0)
    self.assertTrue(self.results("dvaes_power", 2)["resumed"])
    self.assertEqual(self.invocations()[("dvaes_power", 2)], 2)
    self.assertEqual(len(self.csv_rows()), 4)

  def test_failing_cell_gives_nonzero_exit_and_the_others_complete(self):
    status, _, err = self.run_harness("--workers=2", env={"FAKE_FAIL": "dvaes_power/1"})
    self.assertEqual(status, 1)
    self.assertIn("FAILED", err)
    self.assertIn("baseline=dvaes_power k=1", err)
    self.assertIn("non-finite loss at step 3", err)  # the tail of the run's log
    for cell in CELLS[1:]:
      self.assertTrue(os.path.exists(os.path.join(self.run_dir(*cell), "results.json")))
    self.assertEqual([(r["baseline"], int(r["k"])) for r in self.csv_rows()], CELLS[1:])
    with open(os.path.join(self.results_dir, "tiny.md")) as f:
      self.assertIn("Not finished (1 of 4 runs)", f.read())

  def test_workers_run_cells_concurrently(self):
    status, _, _ = self.run_harness("--workers=4", env={"FAKE_SLEEP": "1.5"})
    self.assertEqual(status, 0)
    spans = [(self.results(*cell)["started"], self.results(*cell)["ended"]) for cell in CELLS]
    # Every run sleeps 1.5 s; run one after another they could not all overlap one instant.
    self.assertLess(max(start for start, _ in spans), min(end for _, end in spans))

  def test_table_and_csv_quote_the_paper_for_the_same_dataset_k_and_baseline(self):
    self.assertEqual(self.run_harness()[0], 0)
    rows = self.csv_rows()
    self.assertEqual([(r["baseline"], int(r["k"])) for r in rows], CELLS)
    for row in rows:
      baseline, k = row["baseline"], int(row["k"])
      self.assertEqual(row["dataset"], "binarized_mnist")
      self.assertEqual(row["sampler"], "pcd")
      self.assertEqual(row["steps"], "20")
      self.assertAlmostEqual(float(row["test_nll"]), expected_test_nll(baseline, k))
      self.assertAlmostEqual(float(row["val_nll"]), expected_test_nll(baseline, k) + 0.5)
      self.assertEqual(float(row["log_z_stderr"]), 0.1)
    quoted = {(r["baseline"], int(r["k"])): r["paper_nll_best_structure_1e6_steps"] for r in rows}
    # SPEC §8: MNIST, K = 1: DVAE# power 83.37, DVAE spike-exp 83.97; the paper has no K = 2.
    self.assertEqual(quoted, {("dvaes_power", 1): "83.37", ("dvae_spike_exp", 1): "83.97",
                              ("dvaes_power", 2): "", ("dvae_spike_exp", 2): ""})

    with open(os.path.join(self.results_dir, "tiny.md")) as f:
      page = f.read()
    self.assertIn("paper (best structure, 1e6 steps)", page)
    self.assertIn("Budget: 20 training steps", page)
    self.assertIn("ordering of the baselines", page)
    self.assertIn(f"python reproduce.py --grid={TINY_GRID}", page)
    self.assertIn("| binarized_mnist | 1-layer-lin | DVAE# power | 1 | pcd | 0 | 20 | 91.00 | "
                  "91.50 | 83.37 | 1.5 min | 12.5 | 30.00 ± 0.10 |", page)
    self.assertIn("| binarized_mnist | 1-layer-lin | DVAE spike-exp | 2 | pcd | 0 | 20 | 92.10 | "
                  "92.60 | — |", page)
    self.assertIn("python run_training.py --dataset=binarized_mnist", page)
    self.assertIn("![NLL per baseline and validation learning curves](tiny.png)", page)
    with open(os.path.join(self.results_dir, "tiny.png"), "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

  def test_collect_only_rebuilds_the_results_without_running(self):
    self.assertEqual(self.run_harness()[0], 0)
    shutil.rmtree(self.results_dir)
    self.assertEqual(self.run_harness("--collect_only")[0], 0)
    self.assertEqual(self.invocations(), {cell: 1 for cell in CELLS})
    self.assertEqual(len(self.csv_rows()), 4)
    self.assertTrue(os.path.exists(os.path.join(self.results_dir, "tiny.png")))

  def test_dry_run_prints_the_commands_and_writes_nothing(self):
    status, out, _ = self.run_harness("--dry_run")
    self.assertEqual(status, 0)
    self.assertEqual(out.count("to run "), 4)
    self.assertIn("--baseline=dvae_spike_exp --k=2 --log_dir=", out)
    self.assertFalse(os.path.exists(self.log_dir))
    self.assertFalse(os.path.exists(self.results_dir))

  def test_finished_run_with_other_hparams_is_reported_not_overwritten(self):
    self.assertEqual(self.run_harness()[0], 0)
    with open(TINY_GRID) as f:
      grid = json.load(f)
    grid["base"]["num_train_iter"] = 40
    status, _, err = self.run_harness(grid=self.write_grid(grid))
    self.assertEqual(status, 1)
    self.assertIn("STALE", err)
    self.assertIn("num_train_iter: ran 20, grid 40", err)
    self.assertEqual(self.invocations(), {cell: 1 for cell in CELLS})

  def test_other_grid_hparams_get_their_own_log_dir(self):
    with open(TINY_GRID) as f:
      grid = json.load(f)
    del grid["base"]["seed"]
    grid["grid"] = {"baseline": ["dvaes_power"], "k": [1], "seed": [0, 1], "base_lr": [1e-3]}
    self.assertEqual(self.run_harness(grid=self.write_grid(grid))[0], 0)
    for seed in (0, 1):
      run_dir = os.path.join(self.log_dir, "tiny", "pcd", f"seed{seed}", "base_lr=0.001",
                             "binarized_mnist", "1-layer-lin", "dvaes_power", "1")
      with open(os.path.join(run_dir, "results.json")) as f:
        self.assertEqual(json.load(f)["hparams"]["seed"], seed)
    rows = self.csv_rows()
    self.assertEqual([(r["seed"], r["base_lr"]) for r in rows], [("0", "0.001"), ("1", "0.001")])

  def test_bad_grids_are_refused_with_exit_status_2(self):
    with open(TINY_GRID) as f:
      grid = json.load(f)
    cases = [
        ({**grid, "base": {k: v for k, v in grid["base"].items() if k != "sampler"}}, "sampler"),
        ({**grid, "grid": {**grid["grid"], "k": []}}, "non-empty list"),
        ({**grid, "grid": {**grid["grid"], "seed": [0]}}, "both"),
        ({**grid, "base": {**grid["base"], "log_dir": "x"}}, "--log_dir"),
        ({**grid, "name": "a/b"}, "name"),
        ({**grid, "grids": {}}, "unknown keys"),
    ]
    for content, expected in cases:
      status, _, err = self.run_harness(grid=self.write_grid(content))
      self.assertEqual(status, 2, err)
      self.assertIn(expected, err)
    self.assertFalse(os.path.exists(self.log_dir))


class PaperTableTest(unittest.TestCase):

  def test_paper_table_has_every_dataset_k_and_baseline_of_spec_section_8(self):
    self.assertEqual(len(paper.NLL), 2 * 3 * 8)
    self.assertEqual(paper.paper_nll("binarized_mnist", 25, "dvaes_power"), 82.85)
    self.assertEqual(paper.paper_nll("omniglot", 1, "dvae_spike_exp"), 103.10)
    self.assertEqual(paper.paper_nll("omniglot", 5, "dvaes_gauss"), 101.43)
    self.assertIsNone(paper.paper_nll("binarized_mnist", 2, "dvaes_power"))


@pytest.mark.slow
class RealTrainerTest(unittest.TestCase):
  """One cell of grids/tiny.json through the real run_training.py."""

  def test_real_trainer_run_is_collected(self):
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp)
    with open(TINY_GRID) as f:
      grid = json.load(f)
    grid["grid"] = {"baseline": ["dvaes_power"], "k": [1]}
    path = os.path.join(tmp, "grid.json")
    with open(path, "w") as f:
      json.dump(grid, f)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "reproduce.py"), f"--grid={path}",
         f"--log_dir={tmp}/runs", f"--results_dir={tmp}/results"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
        env=dict(os.environ, DVAE_OFFLINE="1"))
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    with open(os.path.join(tmp, "results", "tiny.csv")) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual(len(rows), 1)
    self.assertEqual(rows[0]["steps"], "20")
    self.assertTrue(float(rows[0]["test_nll"]) > 0)
    self.assertTrue(os.path.exists(os.path.join(tmp, "results", "tiny.png")))


if __name__ == "__main__":
  unittest.main()
