"""The grid harness: runs every cell once, resumes, runs in parallel, isolates failures, publishes.

The trainer is a stand-in script (no TensorFlow) that writes what run_training.py writes —
results.json and eval_history.jsonl in its run directory (`dvae.runs.run_directory`) — with
NLLs that are a known function of the cell, so the table can be checked cell by cell.
"""

import contextlib
import csv
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

import pytest

from dvae import paper
from dvae.reproduction import cli, estimates, grids, running

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_GRID = os.path.join(REPO, "grids", "tiny.json")

# Behaviour per cell, chosen by environment variables naming "<baseline>/<k>":
#   FAKE_FAIL       exit 1 without results;
#   FAKE_INTERRUPT  save a "checkpoint" and exit 130 unless one exists (then resume and finish).
# FAKE_SLEEP seconds are spent "training", between the start and end times it records.
FAKE_TRAINER = textwrap.dedent('''
    import json, os, sys, time
    sys.path.insert(0, REPO)
    from dvae import config, runs
    flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
    def parse(text):
      try:
        return json.loads(text)
      except ValueError:
        return text
    hparams = {key: parse(value) for key, value in flags.items()}
    run_dir = runs.run_directory(config.load_hparams(None, hparams)[0])
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
''').replace("REPO", repr(REPO))

CELLS = [(baseline, k) for baseline in ("dvaes_power", "dvae_spike_exp") for k in (1, 2)]


def expected_test_nll(baseline, k):
  return 90 + k + ["dvaes_power", "dvae_spike_exp"].index(baseline) / 10


class HarnessTest(unittest.TestCase):
  """The harness in a temporary folder, with the stand-in trainer."""

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
    """Runs the harness's main in-process; returns (exit status, stdout, stderr)."""
    previous = dict(os.environ)
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    try:
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([
            f"--grid={grid}", f"--log_dir={self.log_dir}", f"--results_dir={self.results_dir}",
            f"--trainer={shlex.join([sys.executable, self.trainer])}", *extra])
    finally:
      os.environ.clear()
      os.environ.update(previous)
    return status, out.getvalue(), err.getvalue()

  def run_dir(self, baseline, k, grid=TINY_GRID, **hparams):
    return next(cell.run_dir for cell in grids.cells(grids.load_grid(grid), self.log_dir)
                if cell.hparams == {**cell.hparams, "baseline": baseline, "k": k, **hparams})

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



class ReproduceTest(HarnessTest):

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
      with open(os.path.join(self.run_dir(baseline, k), running.RUN_LOG)) as f:
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
    # One seed: the mean is the run's NLL, with no standard error or interval.
    self.assertIn("| binarized_mnist | 1-layer-lin | DVAE# power | 1 | pcd | 0 | 91.00 | — | "
                  "83.37 | 91.50 | 1.5 min | 12.5 |", page)
    self.assertIn("| binarized_mnist | 1-layer-lin | DVAE spike-exp | 2 | pcd | 0 | 92.10 | — | "
                  "— |", page)
    self.assertIn("| DVAE# power | 1 | pcd | 0 | here | 20 | 91.00 | 91.50 | 1.5 min | 12.5 | "
                  "30.00 ± 0.10 |", page)
    self.assertIn("python run_training.py --dataset=binarized_mnist", page)
    self.assertIn("![NLL per baseline and validation learning curves](tiny.png)", page)
    with open(os.path.join(self.results_dir, "tiny.png"), "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

  def test_pages_name_no_folder_of_the_machine_that_ran_them(self):
    data_dir = os.path.join(self.tmp, "data")
    self.assertEqual(self.run_harness(f"--data_dir={data_dir}")[0], 0)
    self.assertEqual(self.results("dvaes_power", 1)["hparams"]["data_dir"], data_dir)
    with open(os.path.join(self.results_dir, "tiny.md")) as f:
      page = f.read()
    with open(os.path.join(self.results_dir, "tiny.csv")) as f:
      table = f.read()
    for text in (page, table):
      self.assertNotIn(self.tmp, text)
    self.assertIn("python reproduce.py --grid=grids/tiny.json --log_dir=<log_dir> "
                  "--results_dir=<results_dir> --data_dir=<data_dir> --trainer=<trainer>", page)
    self.assertIn("`<trainer>` was `python fake_trainer.py` outside a git checkout", page)
    self.assertIn("--data_dir=<data_dir>", page)
    self.assertIn("--log_dir=<log_dir>/tiny/pcd/seed0", page)
    self.assertEqual(self.csv_rows()[0]["run_dir_under_log_dir"],
                     os.path.relpath(self.run_dir("dvaes_power", 1), self.log_dir))

  def test_proxy_data_gets_no_paper_column(self):
    with open(TINY_GRID) as f:
      grid = json.load(f)
    grid["proxy_data"] = True
    self.assertEqual(self.run_harness(grid=self.write_grid(grid))[0], 0)
    with open(os.path.join(self.results_dir, "tiny.md")) as f:
      page = f.read()
    self.assertNotIn(paper.SETTING, page)
    self.assertNotIn("83.37", page)
    self.assertIn("proxy", page)
    self.assertNotIn("paper_nll_best_structure_1e6_steps", self.csv_rows()[0])

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
      run_dir = self.run_dir("dvaes_power", 1, grid=self.write_grid(grid), seed=seed)
      self.assertTrue(run_dir.startswith(
          os.path.join(self.log_dir, "tiny", "pcd", f"seed{seed}", "base_lr=0.001", "")))
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


# t quantile t_2(0.975) of Student's distribution with 2 degrees of freedom (statistical tables).
T_2_975 = 4.302652729911275


class SeedsAndClaimsTest(HarnessTest):
  """Means over seeds and paired claims, from results.json files written here."""

  GRID = {
      "name": "seeds",
      "base": {"dataset": "binarized_mnist", "struct": "1-layer-lin", "sampler": "pcd",
               "num_train_iter": 20},
      "grid": [{"baseline": ["dvaes_power", "dvaepp_power"], "k": [1]},
               {"baseline": ["dvaes_power"], "k": [5, 1]}],
      "seeds": [0, 1, 2],
      "claims": [
          {"claim": "power beats DVAE++", "a": {"baseline": "dvaes_power"},
           "b": {"baseline": "dvaepp_power"}},
          {"claim": "DVAE++ beats power", "a": {"baseline": "dvaepp_power"},
           "b": {"baseline": "dvaes_power"}},
          {"claim": "K = 5 beats K = 1", "a": {"k": 5}, "b": {"k": 1}},
      ],
  }
  # Seeds move every NLL by 5 nats; DVAE# power is 0.4-0.6 nats better than DVAE++ on each seed.
  NLL = {("dvaepp_power", 1): [100.0, 105.0, 110.0],
         ("dvaes_power", 1): [99.5, 104.6, 109.4],
         ("dvaes_power", 5): [100.5, 102.6, 109.9]}

  def write_runs(self, skip=()):
    grid = self.write_grid(self.GRID)
    for cell in grids.cells(grids.load_grid(grid), self.log_dir):
      hparams = cell.hparams
      if (hparams["baseline"], hparams["k"], hparams["seed"]) in skip:
        continue
      nll = self.NLL[hparams["baseline"], hparams["k"]][hparams["seed"]]
      os.makedirs(cell.run_dir)
      with open(os.path.join(cell.run_dir, "results.json"), "w") as f:
        json.dump(dict(test_nll=nll, val_nll=nll + 1, steps=20, hparams=hparams), f)
    return grid

  def page(self):
    with open(os.path.join(self.results_dir, "seeds.md")) as f:
      return f.read()

  def test_grid_is_the_union_of_its_products_seed_by_seed(self):
    grid = grids.load_grid(self.write_grid(self.GRID))
    order = [(c.hparams["seed"], c.hparams["baseline"], c.hparams["k"])
             for c in grids.cells(grid, self.log_dir)]
    # dvaes_power at K = 1 is in both products and runs once per seed.
    self.assertEqual(order, [(seed, baseline, k) for seed in (0, 1, 2) for baseline, k in
                             (("dvaes_power", 1), ("dvaepp_power", 1), ("dvaes_power", 5))])

  def test_setting_gives_mean_standard_error_and_t_interval_over_seeds(self):
    self.assertEqual(self.run_harness("--collect_only", grid=self.write_runs())[0], 0)
    values = self.NLL["dvaes_power", 1]
    mean = sum(values) / 3
    stderr = math.sqrt(sum((v - mean) ** 2 for v in values) / 2 / 3)
    self.assertAlmostEqual(mean, 104.5)
    self.assertIn(f"| binarized_mnist | 1-layer-lin | DVAE# power | 1 | pcd | 0, 1, 2 | "
                  f"104.50 ± {stderr:.2f} | [{mean - T_2_975 * stderr:.2f}, "
                  f"{mean + T_2_975 * stderr:.2f}] | 83.37 |", self.page())
    e = estimates.estimate(values)
    self.assertAlmostEqual(e.high - e.mean, T_2_975 * stderr, places=9)

  def test_claims_are_paired_by_seed_with_verdicts(self):
    self.assertEqual(self.run_harness("--collect_only", grid=self.write_runs())[0], 0)
    page = self.page()
    # Δ = −0.5, −0.4, −0.6: mean −0.5, standard error 0.1/√3, so the interval is below 0 though
    # the two settings' own intervals (seed spread 5 nats) overlap.
    half = T_2_975 * 0.1 / math.sqrt(3)
    self.assertIn(f"| power beats DVAE++ | DVAE# power | DVAE++ power | K=1 | 0, 1, 2 | "
                  f"-0.50 ± 0.06 | [{-0.5 - half:.2f}, {-0.5 + half:.2f}] | holds |", page)
    self.assertIn(f"| DVAE++ beats power | DVAE++ power | DVAE# power | K=1 | 0, 1, 2 | "
                  f"0.50 ± 0.06 | [{0.5 - half:.2f}, {0.5 + half:.2f}] | reversed |", page)
    # Δ = +1.0, −2.0, +0.5 for DVAE# power: not resolved; DVAE++ has no K = 5 run to pair.
    self.assertRegex(page, r"\| K = 5 beats K = 1 \| K=5 \| K=1 \| DVAE# power \| 0, 1, 2 \| "
                           r"-0.17 ± \S+ \| \[\S+, \S+\] \| not resolved at this budget \|")
    self.assertEqual(page.count("| K = 5 beats K = 1 |"), 1)
    self.assertIn("![Paired differences of the claims](seeds_claims.png)", page)
    self.assertTrue(os.path.exists(os.path.join(self.results_dir, "seeds_claims.png")))

  def test_claims_pair_only_seeds_where_both_runs_finished(self):
    grid = self.write_runs(skip={("dvaepp_power", 1, 2), ("dvaes_power", 5, 1),
                                 ("dvaes_power", 5, 2)})
    self.assertEqual(self.run_harness("--collect_only", grid=grid)[0], 0)
    page = self.page()
    self.assertIn("| power beats DVAE++ | DVAE# power | DVAE++ power | K=1 | 0, 1 | -0.45 ± 0.05 |",
                  page)
    self.assertIn("| DVAE# power | 0 | 1.00 | — | not resolved (fewer than 2 paired seeds) |", page)
    self.assertIn("Not finished (3 of 9 runs)", page)

  def test_rows_of_an_earlier_publication_stand_for_runs_that_are_gone(self):
    grid = self.write_runs()
    self.assertEqual(self.run_harness("--collect_only", grid=grid)[0], 0)
    published = os.path.join(self.tmp, "earlier.csv")
    shutil.copy(os.path.join(self.results_dir, "seeds.csv"), published)
    for seed in (1, 2):  # the run directories of seeds 1 and 2 are gone
      shutil.rmtree(os.path.join(self.log_dir, "seeds", "pcd", f"seed{seed}"))
    status, out, _ = self.run_harness(f"--reuse_csv={published}", grid=grid)
    self.assertEqual(status, 0)
    self.assertIn("9 finished, 0 to run", out)
    self.assertFalse(os.path.exists(os.path.join(self.log_dir, "seeds", "pcd", "seed1")))
    page = self.page()
    self.assertIn("--reuse_csv=<reuse_csv>", page)
    self.assertIn("Runs marked *reused* were not trained for this page", page)
    self.assertEqual(page.count("| reused |"), 6)
    self.assertEqual(page.count("| here |"), 3)
    self.assertIn("| power beats DVAE++ | DVAE# power | DVAE++ power | K=1 | 0, 1, 2 | "
                  "-0.50 ± 0.06 |", page)

  def test_bad_seeds_and_claims_are_refused(self):
    cases = [
        ({**self.GRID, "seeds": [0, 0]}, "distinct"),
        ({**self.GRID, "seeds": [1], "base": {**self.GRID["base"], "seed": 0}}, "give it once"),
        ({**self.GRID, "claims": [{"claim": "x", "a": {"k": 5}, "b": {"baseline": "x"}}]},
         "same hparams"),
        ({**self.GRID, "claims": [{"claim": "x", "a": {"seed": 1}, "b": {"seed": 0}}]},
         "not the seed"),
        ({**self.GRID, "grid": []}, "empty list"),
        ({**self.GRID, "base": {**self.GRID["base"], "data_dir": "x"}}, "--data_dir"),
    ]
    for content, expected in cases:
      status, _, err = self.run_harness(grid=self.write_grid(content))
      self.assertEqual(status, 2, err)
      self.assertIn(expected, err)


class GridFilesTest(unittest.TestCase):

  def test_every_grid_of_the_repository_loads(self):
    for name in os.listdir(os.path.join(REPO, "grids")):
      grids.load_grid(os.path.join(REPO, "grids", name))

  def test_paper_grid_is_the_papers_table(self):
    grid = grids.load_grid(os.path.join(REPO, "grids", "paper.json"))
    runs = grids.cells(grid, "runs")
    self.assertEqual(len(runs), 2 * 4 * 3 * 8)
    self.assertEqual({(c.hparams["dataset"], c.hparams["struct"], c.hparams["k"],
                       c.hparams["baseline"]) for c in runs},
                     {(d, s, k, b) for d in ("binarized_mnist", "omniglot")
                      for s in ("1-layer-lin", "1-layer-nonlin", "2-layer-nonlin",
                                "4-layer-nonlin") for k in (1, 5, 25) for b in paper.BASELINES})
    for cell in runs:
      self.assertEqual(cell.hparams["sampler"], "pa")
      self.assertEqual(cell.hparams["num_train_iter"], 1_000_000)


class EntryPointTest(unittest.TestCase):
  """`python reproduce.py` is the harness's command line, run as a script."""

  def test_script_prints_the_runs_of_a_dry_run(self):
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "reproduce.py"), f"--grid={TINY_GRID}",
         f"--log_dir={tmp}", "--dry_run"], capture_output=True, text=True, cwd=tmp, timeout=120)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("tiny: 4 runs, 0 finished, 4 to run", result.stdout)
    self.assertEqual(result.stdout.count("to run   "), 4)
    self.assertIn(os.path.join(REPO, "run_training.py"), result.stdout)
    self.assertEqual(os.listdir(tmp), [])


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


class FolderNameTest(unittest.TestCase):

  def test_grid_values_never_leave_the_log_root_nor_meet(self):
    values = ["../../etc", "a/b", "..", ".", "/", "x" * 500, "a_b", "a b", "a?b"]
    names = [grids.folder_name("dataset", value) for value in values]
    for name in names:
      self.assertNotIn("/", name)
      self.assertNotIn(os.sep, name)
      self.assertNotIn(name.strip("."), ("",))
      self.assertLessEqual(len(name), 120)
      root = "/logs"
      self.assertEqual(os.path.dirname(os.path.normpath(os.path.join(root, name))), root)
    self.assertEqual(len(set(names)), len(names))
    self.assertEqual(grids.folder_name("latent_units", 400), "latent_units=400")
    self.assertTrue(grids.folder_name("", "..").startswith("_.."))

  def test_a_deeply_nested_grid_file_is_one_line(self):
    with tempfile.TemporaryDirectory() as folder:
      path = os.path.join(folder, "g.json")
      with open(path, "w") as f:
        f.write('{"name": "g", "base": ' + "[" * 100_000 + "]" * 100_000 + "}")
      with self.assertRaisesRegex(grids.GridError, "not valid JSON"):
        grids.load_grid(path)
