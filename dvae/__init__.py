"""DVAE#: discrete variational autoencoders with relaxed Boltzmann priors, in TensorFlow 2.

The public API is named here (`__all__`) and loaded on first use: `import dvae` imports neither
TensorFlow nor the optional packages (dimod, dwave-samplers, networkx), so the command line
answers `--help` and refuses bad flags before TensorFlow starts. `dvae.DVAE`, `dvae.RBM`, …
import their module when first read.

The Keras-serializable classes (`DVAE`, `RBM`, `GraphBoltzmannMachine`, the likelihoods,
`Offset`) are registered under the
package name "dvae" as soon as Keras is imported, whichever comes first, so that

    import dvae
    import keras
    model = keras.models.load_model("model.keras")

needs no `custom_objects`. (A script that imports a TensorFlow-side submodule itself, such as
`import dvae.data`, before Keras registers what that import brings; reading any public name,
e.g. `dvae.DVAE`, registers them all.)
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.9.0"

# Public name → the module that defines it.
_EXPORTS = {
    "DVAE": "dvae.model",
    "BoltzmannMachine": "dvae.boltzmann",
    "GraphBoltzmannMachine": "dvae.boltzmann",
    "RBM": "dvae.rbm",
    "ClampedLabelMachine": "dvae.clamped",
    "Sampler": "dvae.samplers",
    "PCD": "dvae.samplers",
    "PopulationAnnealing": "dvae.samplers",
    "DimodSampler": "dvae.samplers",
    "BoltzmannPrior": "dvae.priors",
    "AnalyticKLPrior": "dvae.priors",
    "RolfeKLPrior": "dvae.priors",
    "RelaxedPrior": "dvae.priors",
    "MarginalRelaxationPrior": "dvae.priors",
    "GaussianIntegralPrior": "dvae.priors",
    "make_prior": "dvae.priors",
    "Likelihood": "dvae.likelihoods",
    "Bernoulli": "dvae.likelihoods",
    "Gaussian": "dvae.likelihoods",
    "Categorical": "dvae.likelihoods",
    "mlp": "dvae.networks",
    "Offset": "dvae.networks",
    "OverlappingMixture": "dvae.relaxations",
    "SpikeAndExponential": "dvae.relaxations",
    "ExponentialSmoothing": "dvae.relaxations",
    "PowerSmoothing": "dvae.relaxations",
    "GaussianSmoothing": "dvae.relaxations",
    "UniformExponentialSmoothing": "dvae.relaxations",
    "posterior": "dvae.relaxations",
    "smoothing": "dvae.relaxations",
    "latent_graph": "dvae.graphs",
    "hardware_graph": "dvae.graphs",
    "binary_quadratic_model": "dvae.bqm",
    "HParams": "dvae.config",
    "ConfigError": "dvae.config",
    "load_hparams": "dvae.config",
    "Dataset": "dvae.data",
    "DataError": "dvae.data",
    "load_dataset": "dvae.data",
    "export_model": "dvae.export",
}

__all__ = ["__version__", *_EXPORTS]

# The module whose import defines (and so registers) every Keras-serializable class of the
# package: the model imports the machines.
_SERIALIZABLES = "dvae.model"
# The modules that import neither Keras nor TensorFlow (the command lines' side).
_LIGHT = ("dvae.config", "dvae.runs", "dvae.graphs", "dvae.bqm", "dvae.optional", "dvae.paper",
          "dvae.reproduction")


def __getattr__(name):
  if name in _EXPORTS:
    # Reading one public class registers them all, so a model loads whatever was read first.
    importlib.import_module(_SERIALIZABLES)
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'dvae' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))


def _register():
  """Imports the serializable classes when Keras was imported from outside the package.

  When one of the package's own modules imports Keras, it may be half-initialised, and the
  model imports it: the import goes on, and reading a public name (`__getattr__`) registers.
  """
  if all(name.partition(".")[0] != "dvae" or name == "dvae" or name.startswith(_LIGHT)
         for name in list(sys.modules)):
    importlib.import_module(_SERIALIZABLES)


class _RegisteringLoader(importlib.abc.Loader):
  """Keras's own loader, then `_register()`."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    self._loader.exec_module(module)
    _register()

  def __getattr__(self, name):
    # What else importlib asks of a loader (resources, source), Keras's loader answers.
    return getattr(self._loader, name)


class _KerasImportHook(importlib.abc.MetaPathFinder):
  """Finds `keras` the usual way, once, and registers the package's classes after it loads."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname != "keras":
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(fullname)
    if spec is not None and spec.loader is not None:
      spec.loader = _RegisteringLoader(spec.loader)
    return spec


if "keras" in sys.modules:
  _register()
else:
  sys.meta_path.insert(0, _KerasImportHook())
