"""Tests of dvae.boltzmann's machine on a graph and of dvae.graphs, against independent references:
brute-force enumeration in numpy float64 and dwave-samplers' exact tree-decomposition log Z."""

import itertools
import math
import sys

import dimod
import networkx as nx
import numpy as np
import tensorflow as tf
from dwave.samplers import SimulatedAnnealingSampler, TreeDecompositionSampler
from scipy.special import logsumexp

from dvae import graphs
from dvae.boltzmann import GraphBoltzmannMachine
from dvae.rbm import RBM
from dvae.samplers import DimodSampler


def random_machine(graph, scale, seed=0, **kwargs):
  """A machine on `graph` with biases ~ N(0, 1) and couplings J ~ N(0, scale²)."""
  rng = np.random.default_rng(seed)
  machine = GraphBoltzmannMachine(graph, **kwargs)
  machine.biases.assign(rng.normal(0.0, 1.0, machine.num_units))
  machine.couplings.assign(rng.normal(0.0, scale, len(machine.edges)))
  return machine


def neg_energies(machine, z):
  """−E(z) = bᵀz + Σ_{(i,j)} J_ij z_i z_j in float64, from the definition."""
  b = machine.biases.numpy().astype(np.float64)
  j = machine.couplings.numpy().astype(np.float64)
  edges = np.array(machine.edges).reshape(-1, 2)
  return z @ b + (z[:, edges[:, 0]] * z[:, edges[:, 1]]) @ j


def exact_law(machine):
  """(every state [2^N, N], p(z) [2^N]) by enumeration."""
  states = np.array(list(itertools.product([0.0, 1.0], repeat=machine.num_units)))
  log_weights = neg_energies(machine, states)
  return states, np.exp(log_weights - logsumexp(log_weights))


def empirical_law(samples):
  """Frequencies [2^N] of the rows of binary samples [S, N], in the order of `exact_law`."""
  index = (samples @ 2 ** np.arange(samples.shape[1] - 1, -1, -1)).astype(int)
  return np.bincount(index, minlength=2 ** samples.shape[1]) / len(samples)


def bqm_of(machine):
  """The machine as a BINARY dimod BQM with energy E(z): h = −b, J' = −J (SPEC §9)."""
  nodes = machine.nodes
  return dimod.BinaryQuadraticModel(
      {node: -float(b) for node, b in zip(nodes, machine.biases.numpy())},
      {(nodes[i], nodes[j]): -float(c) for (i, j), c in zip(machine.edges,
                                                          machine.couplings.numpy())},
      0.0, dimod.BINARY)


# Small graphs of each kind: bipartite Chimera, 4-coloured Pegasus and Zephyr prefixes, and a
# complete graph K5 (5 colours, from networkx's greedy colouring).
SMALL_GRAPHS = {
    "chimera": lambda: graphs.hardware_graph("chimera", 1),
    "pegasus": lambda: graphs.latent_graph("pegasus", 12),
    "zephyr": lambda: graphs.latent_graph("zephyr", 12),
    "complete": lambda: nx.complete_graph(5),
}


class GraphsTest(tf.test.TestCase):

  def test_colourings_are_proper_with_2_colours_for_chimera_and_4_for_pegasus_zephyr(self):
    for family, size, num_colours in [("chimera", 3, 2), ("pegasus", 3, 4), ("zephyr", 2, 4)]:
      graph = graphs.hardware_graph(family, size)
      colours = graphs.colouring(graph)
      self.assertTrue(all(colours[u] != colours[v] for u, v in graph.edges))
      self.assertEqual(set(colours.values()), set(range(num_colours)))

  def test_latent_graph_takes_the_first_nodes_and_the_smallest_graph_that_fits(self):
    graph = graphs.latent_graph("chimera", 200)
    self.assertEqual(graph.graph["rows"], 5)  # C5 has 8 · 5² = 200 nodes.
    self.assertEqual(sorted(graph.nodes), list(range(200)))
    full = graphs.hardware_graph("pegasus", 4)
    prefix = graphs.latent_graph("pegasus", 100, size=4)
    first = sorted(full.nodes)[:100]
    self.assertEqual(sorted(prefix.nodes), first)
    self.assertEqual(prefix.number_of_edges(), full.subgraph(first).number_of_edges())
    with self.assertRaisesRegex(ValueError, "fewer than the 400 latent units; use size ≥ 8"):
      graphs.latent_graph("chimera", 400, size=5)

  def test_hardware_graph_without_the_dwave_packages_says_what_to_install(self):
    saved = sys.modules.get("dwave.graphs")
    sys.modules["dwave.graphs"] = None  # Makes `import dwave.graphs` raise ImportError.
    try:
      with self.assertRaisesRegex(ImportError, "pip install -r requirements-dwave.txt"):
        graphs.hardware_graph("chimera", 2)
    finally:
      sys.modules["dwave.graphs"] = saved


class GraphBoltzmannMachineTest(tf.test.TestCase):

  def test_energy_matches_its_definition_and_edges_index_sorted_nodes(self):
    graph = graphs.latent_graph("zephyr", 20)
    machine = random_machine(graph, 1.0)
    nodes = sorted(graph.nodes)
    self.assertEqual(machine.nodes, nodes)
    self.assertEqual({(nodes[i], nodes[j]) for i, j in machine.edges},
                     {tuple(sorted(edge)) for edge in graph.edges})
    z = np.random.default_rng(1).integers(0, 2, (50, 20)).astype(np.float64)
    self.assertAllClose(machine.energy(z.astype(np.float32)), -neg_energies(machine, z),
                        rtol=1e-5, atol=1e-5)

  def test_log_z_exact_matches_brute_force_on_each_kind_of_graph(self):
    for seed, (kind, make_graph) in enumerate(SMALL_GRAPHS.items()):
      machine = random_machine(make_graph(), 1.5, seed=seed)
      log_weights = neg_energies(machine, exact_law(machine)[0])
      self.assertAllClose(machine.log_z_exact()[0], logsumexp(log_weights), atol=1e-4,
                          msg=kind)

  def test_log_z_exact_sums_out_a_chimera_colour_class_beyond_enumeration(self):
    # C2: 32 units, 16 per colour; 2^16 enumerated states, the other 16 summed out. Reference:
    # the exact tree-decomposition log partition function of the same model as a BQM.
    machine = random_machine(graphs.hardware_graph("chimera", 2), 1.0)
    reference = TreeDecompositionSampler().sample(bqm_of(machine), marginals=False)
    self.assertAllClose(machine.log_z_exact()[0], reference.info["log_partition_function"],
                        atol=1e-4)
    with self.assertRaisesRegex(ValueError, "at most 20"):
      random_machine(graphs.hardware_graph("chimera", 3), 1.0).log_z_exact()

  def test_gibbs_law_matches_enumeration_in_total_variation(self):
    # 40,000 samples of ≤ 2^12 states: the TV of exact i.i.d. samples of these laws is ≈ 0.02.
    for seed, kind in enumerate(("chimera", "zephyr", "complete")):
      machine = random_machine(SMALL_GRAPHS[kind](), 1.0, seed=seed)
      _, law = exact_law(machine)
      samples = machine.sample(40_000, 20, seed=[seed, 1]).numpy()
      total_variation = 0.5 * np.abs(empirical_law(samples) - law).sum()
      iid = np.random.default_rng(seed).choice(len(law), 40_000, p=law)
      iid_total_variation = 0.5 * np.abs(np.bincount(iid, minlength=len(law)) / 40_000
                                         - law).sum()
      self.assertLess(total_variation, 1.5 * iid_total_variation + 0.01, msg=kind)

  def test_tempered_sweeps_leave_p_beta_invariant(self):
    machine = random_machine(SMALL_GRAPHS["complete"](), 1.0, seed=3)
    states, _ = exact_law(machine)
    log_weights = 0.5 * neg_energies(machine, states)
    law = np.exp(log_weights - logsumexp(log_weights))
    samples = machine.gibbs_sweeps(machine.sample(20_000, 0, seed=[0, 1]), 20, seed=[0, 2],
                                   inverse_temperature=0.5).numpy()
    self.assertLess(0.5 * np.abs(empirical_law(samples) - law).sum(), 0.03)

  def test_training_surrogate_gradient_matches_exact_moments(self):
    for sampler in ("pcd", "pa"):
      machine = random_machine(SMALL_GRAPHS["chimera"](), 1.0, num_chains=5000,
                               num_sweeps=10, sampler=sampler)
      states, law = exact_law(machine)
      edges = np.array(machine.edges)
      with tf.GradientTape() as tape:
        surrogate = machine.train_log_z(seed=[4, 2])
      grad_b, grad_j = tape.gradient(surrogate, [machine.biases, machine.couplings])
      # ∂log Z/∂b = E_p[z], ∂log Z/∂J_ij = E_p[z_i z_j]; 5000 chains: std ≤ 0.007.
      self.assertAllClose(grad_b, law @ states, atol=0.03, msg=sampler)
      self.assertAllClose(grad_j, law @ (states[:, edges[:, 0]] * states[:, edges[:, 1]]),
                          atol=0.03, msg=sampler)

  def test_ais_and_pa_match_tree_decomposition_log_z_on_chimera_too_big_to_enumerate(self):
    # C4: 128 units (64 per colour, beyond enumeration); treewidth 16 for the reference.
    machine = random_machine(graphs.hardware_graph("chimera", 4), 0.5, seed=7)
    reference = TreeDecompositionSampler().sample(
        bqm_of(machine), marginals=False).info["log_partition_function"]
    for method in ("ais", "pa"):
      estimate, stderr = machine.update_log_z(method, num_betas=1000, num_samples=1024,
                                              seed=[7, 1])
      error = abs(float(estimate) - reference)
      self.assertLess(error, 0.05, msg=method)
      self.assertLess(error, 3 * float(stderr), msg=method)
      self.assertAllClose(machine.log_z, estimate)

  def test_config_round_trip_rebuilds_the_same_graph(self):
    machine = GraphBoltzmannMachine(graphs.latent_graph("pegasus", 30), num_chains=7,
                                    num_sweeps=3, sampler="pa", name="prior")
    clone = GraphBoltzmannMachine.from_config(machine.get_config())
    self.assertEqual((clone.nodes, clone.edges), (machine.nodes, machine.edges))
    self.assertEqual((clone.num_chains, clone.num_sweeps, clone.sampler.get_config()),
                     (7, 3, "pa"))
    self.assertEqual([v.shape for v in clone.weights], [v.shape for v in machine.weights])
    self.assertAllClose(clone.log_z, 30 * math.log(2.0))

  def test_rejects_self_loops(self):
    graph = nx.path_graph(3)
    graph.add_edge(1, 1)
    with self.assertRaisesRegex(ValueError, "self-loops"):
      GraphBoltzmannMachine(graph)

  def test_machine_on_a_complete_bipartite_graph_is_the_rbm(self):
    # The RBM's own tests check it against enumeration; on K_{6,5} the two layers are one model.
    rng = np.random.default_rng(0)
    rbm = RBM(6, 5, num_chains=1)
    for variable in (rbm.b1, rbm.b2, rbm.w):
      variable.assign(rng.normal(0.0, 1.0, variable.shape))
    machine = GraphBoltzmannMachine(nx.complete_bipartite_graph(6, 5), num_chains=1)
    machine.biases.assign(rbm.biases)
    machine.couplings.assign([rbm.w[i, j - 6] for i, j in machine.edges])
    z = rng.integers(0, 2, (8, 11)).astype(np.float32)
    self.assertAllClose(machine.energy(z), rbm.energy(z), atol=1e-5)
    self.assertAllClose(machine.log_z_exact()[0], rbm.log_z_exact()[0], atol=1e-5)
    fields = rng.normal(0.0, 1.0, (8, 11)).astype(np.float32)
    # Converged mean field (the two update the blocks in different orders).
    self.assertAllClose(machine.mean_field_logits(fields, 100),
                        rbm.mean_field_logits(fields, 100), atol=1e-4)
    self.assertAllClose(machine.pairwise(z, fields), rbm.pairwise(z, fields), atol=1e-4)

  def test_dimod_simulated_annealing_at_beta_1_draws_the_machine_law(self):
    # The samplers' dimod adapter reads the graph view (biases, edges, couplings); Gibbs
    # acceptance at fixed β = 1 for 100 sweeps draws p exactly, up to sampling noise.
    sampler = DimodSampler(SimulatedAnnealingSampler(), num_sweeps=100, beta_range=[1, 1],
                           proposal_acceptance_criteria="Gibbs")
    machine = random_machine(SMALL_GRAPHS["zephyr"](), 1.0, num_chains=10_000, sampler=sampler)
    _, law = exact_law(machine)
    machine.train_log_z(seed=[5, 1])
    total_variation = 0.5 * np.abs(empirical_law(machine.chains.numpy()) - law).sum()
    # E|p̂ − p| ≈ √(2p(1 − p)/(πN)) per state; 1.5 times the expected TV of exact samples.
    expected = 0.5 * np.sum(np.sqrt(2 * law * (1 - law) / (np.pi * 10_000)))
    self.assertLess(total_variation, 1.5 * expected)
