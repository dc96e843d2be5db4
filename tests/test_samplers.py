"""The sampler interface, and the library without the optional packages (D-Wave, networkx)."""

import os
import subprocess
import sys
import textwrap

import tensorflow as tf

from dvae import samplers
from test_cli import REPO, TINY, run_cli
from test_rbm import random_rbm

# Makes `import dimod`, `import dwave...` and `import networkx` fail as if the optional packages
# were not installed.
BLOCKER = textwrap.dedent("""
    import importlib.abc
    import sys

    class _WithoutDWave(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dimod", "dwave", "networkx"):
          raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

    sys.meta_path.insert(0, _WithoutDWave())
    """)


class BuiltInSamplerTest(tf.test.TestCase):

  def test_names_give_the_built_in_samplers_and_configs_round_trip(self):
    for name, cls in (("pcd", samplers.PCD), ("pa", samplers.PopulationAnnealing)):
      sampler = samplers.get(name)
      self.assertIsInstance(sampler, cls)
      self.assertTrue(sampler.supports_jit)
      self.assertEqual(random_rbm(2, 3, 1.0, sampler=sampler).get_config()["sampler"], name)
      self.assertIs(samplers.get(sampler), sampler)
    with self.assertRaisesRegex(ValueError, "pcd, pa"):
      samplers.get("gibbs")

  def test_rbm_graph_view_lists_every_coupling_once(self):
    rbm = random_rbm(2, 3, 1.0)
    self.assertEqual(rbm.edges, [(0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)])
    w = rbm.w.numpy()
    self.assertAllEqual(rbm.couplings, [w[i, j - 2] for i, j in rbm.edges])
    self.assertAllEqual(rbm.biases, list(rbm.b1.numpy()) + list(rbm.b2.numpy()))


class WithoutDWaveTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.site = os.path.join(self.get_temp_dir(), "site")
    os.makedirs(self.site, exist_ok=True)
    with open(os.path.join(self.site, "sitecustomize.py"), "w") as f:
      f.write(BLOCKER)
    self.env = {"PYTHONPATH": os.pathsep.join([self.site, REPO, os.path.join(REPO, "tests")])}

  def test_pcd_trains_and_a_dimod_sampler_says_what_to_install(self):
    script = textwrap.dedent("""
        import keras, numpy as np, tensorflow as tf
        import helpers
        from dvae import samplers
        from dvae.model import DVAE
        try:
          import dimod
        except ImportError:
          pass
        else:
          raise AssertionError("dimod was not blocked")
        dataset = helpers.synthetic_dataset()
        model = DVAE.from_hparams(helpers.tiny_hparams("unused"), dataset.train_mean)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        for _ in range(2):
          logs = model.train_step(tf.constant(dataset.train[:20]))
        assert np.isfinite(float(logs["loss"])), logs
        try:
          samplers.DimodSampler("dwave.samplers.SimulatedAnnealingSampler")
        except ImportError as e:
          print(e)
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=self.get_temp_dir(), timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **self.env))
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout.strip().splitlines()[-1],
                     "dimod samplers need the optional D-Wave packages: pip install -r "
                     "requirements-dwave.txt (dimod, dwave-samplers, dwave-graphs, networkx), "
                     'or pip install ".[dwave]"')

  def test_every_core_module_imports_without_the_optional_packages(self):
    modules = sorted(f"dvae.{name[:-3]}" for name in os.listdir(os.path.join(REPO, "dvae"))
                     if name.endswith(".py") and name != "__init__.py")
    script = textwrap.dedent(f"""
        import importlib, sys
        for module in {modules!r}:
          importlib.import_module(module)
        loaded = sorted(name for name in sys.modules
                        if name.split(".")[0] in ("dimod", "dwave", "networkx"))
        assert not loaded, loaded
        print("imported", len({modules!r}))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=self.get_temp_dir(), timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **self.env))
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout.strip(), f"imported {len(modules)}")

  def test_command_line_help_and_a_core_run_need_no_optional_package(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli(["--help"], env=self.env)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("--sampler", result.stdout)
    result = run_cli([f"--log_dir={log_dir}", *TINY, "--num_train_iter=10", "--eval_every=10"],
                     env=self.env)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertNotIn("Traceback", result.stderr)

  def test_command_line_asking_for_a_hardware_graph_says_what_to_install(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli([f"--log_dir={log_dir}", *TINY, "--prior=chimera"], env=self.env)
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
    self.assertIn("pip install -r requirements-dwave.txt", result.stderr)
    self.assertFalse(os.path.exists(log_dir))

  def test_command_line_asking_for_a_dimod_sampler_says_what_to_install(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli([f"--log_dir={log_dir}", *TINY, "--sampler=dimod",
                      "--dimod_sampler=dwave.samplers.SimulatedAnnealingSampler"], env=self.env)
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
    self.assertIn("pip install -r requirements-dwave.txt", result.stderr)
    self.assertFalse(os.path.exists(log_dir))


if __name__ == "__main__":
  tf.test.main()
