"""run_training.py with a prior on a hardware graph: a short run, and refusals in one line."""

import json
import os
import re

import numpy as np
import tensorflow as tf

from test_cli import TINY, run_cli


class GraphPriorCommandLineTest(tf.test.TestCase):

  def test_short_run_with_a_chimera_prior_writes_finite_results(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli(["--hparams=quickstart", f"--log_dir={log_dir}", "--num_train_iter=4",
                      "--eval_every=4", "--prior=chimera", *TINY])
    self.assertEqual(result.returncode, 0, result.stderr)
    # 1-layer-lin has 200 latent units: the smallest Chimera that holds them is C5 (200 nodes).
    self.assertIn("graph_size=5", result.stdout)
    run = re.search(r"^new run in (\S+)$", result.stdout, re.M).group(1)
    with open(os.path.join(run, "results.json")) as f:
      results = json.load(f)
    self.assertEqual((results["hparams"]["prior"], results["hparams"]["graph_size"]),
                     ("chimera", 5))
    self.assertTrue(np.isfinite(results["test_nll"]))

  def test_unsupported_combinations_are_refused_in_one_line(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    for args, expected in [(["--prior=zephyr", "--baseline=dvaes_gi"], "dvaes_gi"),
                           (["--prior=chimera", "--graph_size=4"], "use size ≥ 5"),
                           (["--graph_size=4"], "hardware-graph priors only")]:
      result = run_cli([f"--log_dir={log_dir}", "--struct=1-layer-lin", *args])
      self.assertEqual(result.returncode, 2, result.stderr)
      lines = result.stderr.strip().splitlines()
      self.assertLen(lines, 1, result.stderr)
      self.assertIn(expected, lines[0])
      self.assertFalse(os.path.exists(log_dir))
