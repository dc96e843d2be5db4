"""Hardware graphs (Chimera, Pegasus, Zephyr) for Boltzmann priors, and proper colourings.

The graphs come from D-Wave's graph package (`dwave-graphs`, an optional dependency imported
only here and only when a hardware graph is asked for; networkx, also optional, only when a
graph is coloured), with integer node labels (the linear
indices of the package). Sizes follow the package:

* chimera, size m: C_m, an m × m grid of K_{4,4} cells, 8m² nodes, bipartite (2 colours);
* pegasus, size m ≥ 2: P_m (fabric nodes only), 8(m − 1)(3m − 1) nodes, 4 colours;
* zephyr, size m: Z_m with tile 4, 16m(2m + 1) nodes, 4 colours.

A prior over n latent units uses the first n nodes of the graph in sorted (linear-index) order
and the edges among them: the subgraph a model of n qubits occupies when it is laid onto the
chip in the package's linear order (`latent_graph`). Unit k of the concatenated latent layers
is node `sorted(graph.nodes)[k]`.
"""

from __future__ import annotations

import typing

from dvae import optional

if typing.TYPE_CHECKING:
  import networkx

FAMILIES = ("chimera", "pegasus", "zephyr")
# Each family's graph constructor and node colouring in dwave.graphs, and the node attribute
# holding the coordinates the colouring reads.
_DWAVE_FUNCTIONS = {
    "chimera": ("chimera_graph", "chimera_two_color", "chimera_index"),
    "pegasus": ("pegasus_graph", "pegasus_four_color", "pegasus_index"),
    "zephyr": ("zephyr_graph", "zephyr_four_color", "zephyr_index"),
}


def _dwave_graphs():
  return optional.require("dwave.graphs", "hardware graphs")


def _check_family(family):
  if family not in FAMILIES:
    raise ValueError(f"unknown graph family {family!r}; allowed: {', '.join(FAMILIES)}")


def hardware_graph(family: str, size: int) -> networkx.Graph:
  """The `family` graph of `size` ("chimera" C_m, "pegasus" P_m, "zephyr" Z_m), integer labels.

  Args:
    family: one of `FAMILIES`.
    size: m, at least 1 (Pegasus: at least 2).

  Returns:
    The dwave-graphs graph, its nodes carrying their coordinates.

  Raises:
    ValueError: an unknown family or a size out of range.
    ImportError: dwave-graphs is not installed (the message says how to install it).
  """
  _check_family(family)
  if int(size) != size or size < 1 or (family == "pegasus" and size < 2):
    raise ValueError(f"{family} size must be an integer ≥ {2 if family == 'pegasus' else 1}, "
                     f"got {size!r}")
  return getattr(_dwave_graphs(), _DWAVE_FUNCTIONS[family][0])(int(size))


def num_nodes(family: str, size: int) -> int:
  """Nodes of the `family` graph of `size` (C_m: 8m²; P_m: 8(m − 1)(3m − 1); Z_m: 16m(2m + 1)),
  without building it.

  Args:
    family: one of `FAMILIES`.
    size: m.

  Returns:
    The number of nodes.

  Raises:
    ValueError: an unknown family.
  """
  _check_family(family)
  return {"chimera": 8 * size**2, "pegasus": 8 * (size - 1) * (3 * size - 1),
          "zephyr": 16 * size * (2 * size + 1)}[family]


def smallest_size(family: str, num_units: int) -> int:
  """The smallest size of `family` whose graph has at least `num_units` nodes.

  Args:
    family: one of `FAMILIES`.
    num_units: n, the nodes needed.

  Returns:
    The smallest m with `num_nodes(family, m)` ≥ n.
  """
  size = 2 if family == "pegasus" else 1
  while num_nodes(family, size) < num_units:
    size += 1
  return size


def size_error(family: str, size: int, num_units: int) -> str | None:
  """The one-line complaint about a graph too small for the latent units, or None.

  Args:
    family: one of `FAMILIES`.
    size: m.
    num_units: n, the latent units to place.

  Returns:
    None when the graph of `size` has at least n nodes, else what to use instead.
  """
  if num_nodes(family, size) >= num_units:
    return None
  return (f"{family} size {size} has {num_nodes(family, size)} nodes, fewer than the "
          f"{num_units} latent units; use size ≥ {smallest_size(family, num_units)}")


def latent_graph(family: str, num_units: int, size: int | None = None) -> networkx.Graph:
  """The subgraph of the first `num_units` nodes (sorted labels) of a hardware graph.

  Args:
    family: one of `FAMILIES`.
    num_units: n, the latent units to place.
    size: the graph's size; `None` takes the smallest that has n nodes.

  Returns:
    A networkx graph of n nodes with the hardware graph's labels, coordinates and edges among
    them.

  Raises:
    ValueError: if the graph of `size` has fewer than n nodes, or an unknown family.
    ImportError: dwave-graphs is not installed.
  """
  size = smallest_size(family, num_units) if size is None else size
  error = size_error(family, size, num_units)
  if error:
    raise ValueError(error)
  graph = hardware_graph(family, size)
  return graph.subgraph(sorted(graph.nodes)[:num_units]).copy()


def colouring(graph: networkx.Graph) -> dict[typing.Hashable, int]:
  """A proper colouring {node: colour in 0…C−1}: no edge joins two nodes of one colour.

  Hardware graphs that carry their coordinates (as `hardware_graph` and `latent_graph` make
  them) take the graph package's colouring (2 colours for Chimera, 4 for Pegasus and Zephyr);
  any other graph takes networkx's greedy DSATUR colouring, which is optimal (2 colours) on
  bipartite graphs. The result is checked, and colours are renumbered to 0…C−1 in order of
  first appearance among the sorted nodes.

  Args:
    graph: a networkx graph with sortable nodes.

  Returns:
    {node: colour}.

  Raises:
    ValueError: for a graph with self-loops, which no colouring can make proper.
    ImportError: networkx is not installed.
  """
  nx = optional.require("networkx", "Boltzmann machines on graphs")
  if nx.number_of_selfloops(graph):
    raise ValueError("a Boltzmann machine's graph must have no self-loops (z_i² = z_i is a "
                     "bias, not a coupling)")
  family = graph.graph.get("family")
  attribute = _DWAVE_FUNCTIONS.get(family, (None, None, None))[2]
  if attribute and graph.number_of_nodes() and all(
      attribute in data for _, data in graph.nodes(data=True)):
    colour_of = getattr(_dwave_graphs(), _DWAVE_FUNCTIONS[family][1])
    colours = {node: colour_of(data[attribute]) for node, data in graph.nodes(data=True)}
  else:
    colours = nx.greedy_color(graph, strategy="DSATUR")
  if any(colours[u] == colours[v] for u, v in graph.edges):
    raise ValueError(f"the colouring of the {family or 'given'} graph is not proper")
  renumber = {}
  for node in sorted(graph.nodes):
    renumber.setdefault(colours[node], len(renumber))
  return {node: renumber[colour] for node, colour in colours.items()}
