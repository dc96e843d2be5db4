"""Boltzmann machines in float64, and under mixed-precision policies, against exact enumeration
in numpy (float64)."""

import itertools

import keras
import numpy as np
import tensorflow as tf

from dvae import graphs
from dvae.boltzmann import GraphBoltzmannMachine
from dvae.rbm import RBM


def _machines(dtype):
  """A 3 + 4 RBM and an 8-unit Chimera machine with random parameters, in `dtype`."""
  rng = np.random.default_rng(7)
  rbm = RBM(3, 4, num_chains=16, dtype=dtype)
  graph = GraphBoltzmannMachine(graphs.latent_graph("chimera", 8), num_chains=16, dtype=dtype)
  for variable in (rbm.b1, rbm.b2, rbm.w, graph.biases):
    variable.assign(rng.normal(0.0, 0.8, variable.shape))
  graph.couplings.assign(rng.normal(0.0, 0.6, graph.couplings.shape))
  return rbm, graph


def _exact(machine):
  """(states [2^N, N], log Z, p [2^N]) by enumerating every state in numpy float64."""
  states = np.array(list(itertools.product([0.0, 1.0], repeat=machine.num_units)))
  biases = np.asarray(machine.biases, np.float64)
  couplings = np.asarray(machine.couplings, np.float64)
  heads, tails = np.array(machine.edges).T
  neg_energy = states @ biases + (states[:, heads] * states[:, tails]) @ couplings
  log_z = np.logaddexp.reduce(neg_energy)
  return states, log_z, np.exp(neg_energy - log_z)


class Float64MachineTest(tf.test.TestCase):

  def test_float64_energy_and_exact_log_z_match_enumeration_to_float64_precision(self):
    for machine in _machines("float64"):
      states, log_z, _ = _exact(machine)
      energy = machine.energy(states)
      self.assertEqual(energy.dtype, tf.float64)
      neg_energy = (states @ np.asarray(machine.biases)
                    + machine.pairwise(states, states).numpy())
      self.assertAllClose(-energy, neg_energy, rtol=0, atol=1e-12)
      exact, stderr = machine.log_z_exact()
      self.assertEqual(exact.dtype, tf.float64)
      self.assertEqual(stderr.dtype, tf.float64)
      # Float32 parameters would round log Z at about 1e-6.
      self.assertAllClose(exact, log_z, rtol=0, atol=1e-10)

  def test_float64_samples_follow_the_exact_marginals(self):
    num_samples = 4000
    for machine in _machines("float64"):
      states, _, p = _exact(machine)
      samples = machine.sample(num_samples, 30, seed=[3, 4])
      self.assertEqual(samples.dtype, tf.float64)
      self.assertAllInSet(samples, [0.0, 1.0])
      marginals = p @ states
      # Independent chains: each unit's mean is within 4.5 standard errors of its marginal.
      bound = 4.5 * np.sqrt(marginals * (1 - marginals) / num_samples)
      self.assertTrue(np.all(np.abs(np.mean(samples, axis=0) - marginals) <= bound),
                      (np.mean(samples, axis=0), marginals))

  def test_float64_annealing_estimates_match_exact_log_z(self):
    for machine in _machines("float64"):
      _, log_z, _ = _exact(machine)
      for method in ("ais", "pa"):
        estimate, stderr = machine.update_log_z(method, num_betas=500, num_samples=512,
                                                seed=[5, 6])
        self.assertEqual(estimate.dtype, tf.float64)
        self.assertEqual(machine.log_z.dtype, "float64")
        # Both estimators are biased low by about half the relative variance (stderr²/2).
        self.assertLess(abs(float(estimate) - log_z), 4 * float(stderr) + 1e-3, msg=method)

  def test_float64_chains_train_and_round_trip_their_config(self):
    for machine in _machines("float64"):
      self.assertEqual(machine.chains.dtype, "float64")
      with tf.GradientTape() as tape:
        surrogate = machine.train_log_z(seed=[1, 2])
      self.assertEqual(surrogate.dtype, tf.float64)
      self.assertTrue(all(g is not None and g.dtype == tf.float64
                          for g in tape.gradient(surrogate, machine.trainable_variables)))
      self.assertEqual(type(machine).from_config(machine.get_config()).dtype, "float64")


class MixedPrecisionTest(tf.test.TestCase):

  def tearDown(self):
    keras.config.set_dtype_policy("float32")
    super().tearDown()

  def test_machines_keep_float32_under_a_mixed_policy(self):
    for policy in ("mixed_float16", "mixed_bfloat16"):
      keras.config.set_dtype_policy(policy)
      for machine in _machines(None) + _machines(policy):
        self.assertEqual(machine.dtype_policy.name, "float32", policy)
        self.assertEqual(machine.chains.dtype, "float32")
        self.assertEqual(machine.sample(4, 2, seed=[0, 1]).dtype, tf.float32)

  def test_machines_read_float32_inside_a_mixed_precision_layer(self):
    keras.config.set_dtype_policy("mixed_float16")
    rbm, graph = _machines(None)

    class Encoder(keras.layers.Layer):
      """A mixed-precision layer whose call reads the machines (autocast applies inside)."""

      def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(rbm.num_units)
        self.rbm, self.graph = rbm, graph

      def call(self, x):
        means = tf.sigmoid(self.dense(x))
        return (means, self.rbm.energy(means), self.rbm.mean_field_logits(means, 2),
                self.graph.energy(tf.concat([means, means[:, :1]], axis=-1)),
                self.rbm.pairwise(means, means))

    means, *terms = Encoder()(tf.ones([2, 5]))
    self.assertEqual(means.dtype, tf.float16)
    self.assertEqual([t.dtype for t in terms], [tf.float32] * 4)
    self.assertAllEqual(terms[0], rbm.energy(tf.cast(means, tf.float32)))

  def test_half_precision_state_is_refused_in_one_line(self):
    for dtype in ("float16", "bfloat16", "int32"):
      with self.assertRaisesRegex(ValueError, r"^a Boltzmann machine keeps its state in one of "
                                              r"\('float32', 'float64'\)[^\n]*$"):
        RBM(2, 2, dtype=dtype)
