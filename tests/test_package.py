"""The package's face: `import dvae` names the public API, stays light, and registers the
Keras-serializable classes so that `.keras` files load with nothing else imported."""

import json
import os
import re
import subprocess
import sys
import tomllib

import keras
import pytest
import tensorflow as tf

import dvae
import helpers
from dvae import graphs
from dvae.model import DVAE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# PEP 440 public version identifiers.
VERSION = re.compile(r"^([1-9][0-9]*!)?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"
                     r"((a|b|rc)(0|[1-9][0-9]*))?(\.post(0|[1-9][0-9]*))?(\.dev(0|[1-9][0-9]*))?$")


def _python(script, *args):
  """Runs `script` in a fresh interpreter at the repository root; returns its stdout."""
  result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600,
                          env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"))
  if result.returncode:
    raise AssertionError(result.stderr)
  return result.stdout


class PublicApiTest(tf.test.TestCase):

  def test_every_public_name_resolves_to_the_object_of_its_module(self):
    self.assertIn("__version__", dvae.__all__)
    self.assertEqual(len(set(dvae.__all__)), len(dvae.__all__))
    for name in dvae.__all__:
      value = getattr(dvae, name)
      if name != "__version__":
        self.assertEqual(value.__name__, name)
        self.assertIs(getattr(sys.modules[value.__module__], name), value)
      self.assertIn(name, dir(dvae))
    for name in ("DVAE", "RBM", "GraphBoltzmannMachine", "DimodSampler", "posterior",
                 "make_prior", "HParams", "load_dataset", "export_model", "latent_graph"):
      self.assertIn(name, dvae.__all__)

  def test_unknown_name_is_an_attribute_error(self):
    with self.assertRaisesRegex(AttributeError, "no attribute 'Nothing'"):
      dvae.Nothing  # pylint: disable=pointless-statement

  def test_version_is_the_one_pyproject_builds(self):
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
      project = tomllib.load(f)
    self.assertIn("version", project["project"]["dynamic"])
    self.assertEqual(project["tool"]["setuptools"]["dynamic"]["version"],
                     {"attr": "dvae.__version__"})
    self.assertRegex(dvae.__version__, VERSION)

  def test_import_dvae_loads_neither_tensorflow_nor_the_optional_packages(self):
    loaded = json.loads(_python(
        "import json, sys; import dvae; print(json.dumps(sorted(name for name in sys.modules if "
        "name.split('.')[0] in ('tensorflow', 'keras', 'tensorflow_probability', 'dimod', "
        "'dwave', 'networkx'))))"))
    self.assertEqual(loaded, [])


# Loads the model at argv[1] and the machines serialized in argv[2] after `import dvae` alone (or
# after `import keras` first, with argv[3] = "keras first"); prints what it got.
LOADER = """
import json, sys
if sys.argv[3] == "keras first":
  import keras
  import dvae
else:
  import dvae
  import keras
model = keras.models.load_model(sys.argv[1])
with open(sys.argv[2]) as f:
  machines = [keras.saving.deserialize_keras_object(c) for c in json.load(f)]
print(json.dumps({
    "model": type(model).__module__ + "." + type(model).__name__,
    "weights": {v.path: v.numpy().tolist() for v in model.weights},
    "machines": [[type(m).__name__, m.dtype, m.num_units, m.get_config()["weight_decay"]]
                 for m in machines]}))
"""


class RegistrationTest(tf.test.TestCase):

  def test_keras_files_load_after_only_import_dvae(self):
    dataset = helpers.synthetic_dataset()
    model = DVAE.from_hparams(helpers.tiny_hparams(self.get_temp_dir()), dataset.train_mean)
    model.compile(keras.optimizers.Adam(1e-2), eval_iw_samples=5)
    model.fit(dataset.train, batch_size=20, epochs=1, steps_per_epoch=2, verbose=0)
    path = os.path.join(self.get_temp_dir(), "m.keras")
    model.save(path)
    machines = [dvae.RBM(3, 4, weight_decay=0.5, dtype="float64"),
                dvae.GraphBoltzmannMachine(graphs.latent_graph("chimera", 8), weight_decay=0.25)]
    machines_path = os.path.join(self.get_temp_dir(), "machines.json")
    with open(machines_path, "w") as f:
      json.dump([keras.saving.serialize_keras_object(m) for m in machines], f)
    for order in ("dvae first", "keras first"):
      loaded = json.loads(_python(LOADER, path, machines_path, order).splitlines()[-1])
      self.assertEqual(loaded["model"], "dvae.model.DVAE", order)
      self.assertEqual(sorted(loaded["weights"]), sorted(v.path for v in model.weights))
      for variable in model.weights:
        self.assertAllEqual(loaded["weights"][variable.path], variable.numpy(), msg=order)
      self.assertEqual(loaded["machines"], [["RBM", "float64", 7, 0.5],
                                            ["GraphBoltzmannMachine", "float32", 8, 0.25]])

  def test_machines_are_registered_under_the_package_name(self):
    registered = keras.saving.get_custom_objects()
    for cls in (dvae.DVAE, dvae.RBM, dvae.GraphBoltzmannMachine):
      self.assertIs(registered[f"dvae>{cls.__name__}"], cls)
      self.assertEqual(keras.saving.get_registered_name(cls), f"dvae>{cls.__name__}")

  @pytest.mark.slow  # seven fresh interpreters that import TensorFlow: about 2 minutes
  def test_each_module_imports_first_without_an_import_cycle(self):
    # Whichever module brings Keras in, registering must not re-enter a half-initialised one;
    # a module that imports the model registers every class.
    for module in ("networks", "boltzmann", "rbm", "callbacks", "export", "training", "model"):
      registered = json.loads(_python(
          f"import json, dvae.{module}, keras; print(json.dumps(sorted(name for name in "
          "keras.saving.get_custom_objects() if name.startswith('dvae>'))))").splitlines()[-1])
      if module in ("export", "training", "model"):
        self.assertEqual(registered, ["dvae>DVAE", "dvae>GraphBoltzmannMachine", "dvae>RBM"],
                         module)
