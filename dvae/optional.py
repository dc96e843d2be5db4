"""The optional dependencies: the D-Wave Ocean packages (dimod, dwave-samplers, dwave-graphs) and
networkx, which the core never imports.

The core — every baseline on the RBM prior, PCD, population annealing, AIS, export, the command
line and the reproduction grids — runs with `requirements.txt` alone. Dimod samplers, hardware
graphs and Boltzmann machines on graphs import these packages through `require`, only when they
are used, so that a missing one costs a single line saying what to install.
"""

import importlib
import importlib.util
import types

INSTALL_HINT = ('pip install -r requirements-dwave.txt (dimod, dwave-samplers, dwave-graphs, '
                'networkx), or pip install ".[dwave]"')


def require(module: str, feature: str) -> types.ModuleType:
  """The module named `module`, imported for `feature`.

  Args:
    module: an importable name, e.g. "dimod" or "dwave.graphs".
    feature: what needs it, as the subject of the message, e.g. "dimod samplers".

  Returns:
    The imported module.

  Raises:
    ImportError: whose message is one line naming `feature` and what to install.
  """
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f"{feature} need the optional D-Wave packages: {INSTALL_HINT}") from None


def available(module: str) -> bool:
  """Whether `module` (a dotted name) can be imported, without importing it.

  Only the parent packages of a dotted name are imported, to find its spec.

  Args:
    module: an importable name, e.g. "dimod" or "dwave.graphs".

  Returns:
    True when the module is installed.
  """
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # A parent package is missing.
    return False
