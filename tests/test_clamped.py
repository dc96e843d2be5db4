"""The label-conditional prior (`dvae.clamped.ClampedLabelMachine`) against exact enumeration,
the priors' label fields against machines built with the label's biases, and a known-truth
conditional model whose decoder never sees the label."""

import itertools
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

import known_truth as kt
from dvae import likelihoods, priors, relaxations
from dvae.clamped import ClampedLabelMachine
from dvae.model import DVAE
from dvae.rbm import RBM

NUM_CLASSES = 3


def random_machine(seed=0):
  rng = np.random.default_rng(seed)
  machine = ClampedLabelMachine(RBM(3, 4, num_chains=2000, num_sweeps=20), NUM_CLASSES)
  machine.label_0.w.assign(rng.normal(0, 0.8, (3, 4)).astype(np.float32))
  for m in machine.machines:
    m.b1.assign(rng.normal(0, 1, 3).astype(np.float32))
    m.b2.assign(rng.normal(0, 1, 4).astype(np.float32))
  return machine


def exact_log_probs(machine):
  """log p(z | y) [K, 2^7] over all states, by enumeration."""
  states = np.array(list(itertools.product([0, 1], repeat=7)), np.float64)
  w = machine.label_0.w.numpy().astype(np.float64)
  rows = []
  for m in machine.machines:
    b = np.concatenate([m.b1.numpy(), m.b2.numpy()]).astype(np.float64)
    neg_energy = states @ b + np.einsum("ni,ij,nj->n", states[:, :3], w, states[:, 3:])
    rows.append(neg_energy - np.logaddexp.reduce(neg_energy))
  return states, np.array(rows)


class ClampedLabelMachineTest(tf.test.TestCase):

  def test_labels_share_the_couplings_and_have_their_own_log_z(self):
    machine = random_machine()
    self.assertTrue(all(m.w is machine.label_0.w for m in machine.machines))
    states, log_p = exact_log_probs(machine)
    b = np.stack([np.concatenate([m.b1.numpy(), m.b2.numpy()]) for m in machine.machines])
    neg_energy = states @ b.T + np.einsum("ni,ij,nj->n", states[:, :3],
                                         machine.label_0.w.numpy(), states[:, 3:])[:, None]
    exact = (neg_energy - log_p.T)[0]
    log_z, _ = machine.update_log_z("exact")
    self.assertAllClose(log_z, exact, atol=1e-4)
    ais, stderr = machine.update_log_z("ais", num_betas=500, num_samples=512, seed=[1, 2])
    self.assertTrue(np.all(np.abs(ais.numpy() - exact) <= 4 * stderr.numpy() + 0.01),
                    (ais.numpy(), stderr.numpy(), exact))

  def test_samples_of_each_label_follow_its_exact_marginals(self):
    machine = random_machine()
    states, log_p = exact_log_probs(machine)
    labels = np.repeat(np.eye(NUM_CLASSES, dtype=np.float32), 4000, axis=0)
    z = machine.sample(tf.constant(labels), 50, seed=[3, 4]).numpy().reshape(NUM_CLASSES, 4000, 7)
    exact_means = np.exp(log_p) @ states
    # 4000 samples: the standard error of a mean is at most 0.008.
    self.assertAllClose(z.mean(axis=1), exact_means, atol=0.04)

  def test_the_gradient_of_the_batch_mean_log_z_weighs_each_label_by_its_share(self):
    machine = random_machine()
    states, log_p = exact_log_probs(machine)
    for _ in range(5):  # burn the persistent chains in
      machine.train_log_z([0, 0])
    condition = tf.one_hot([0, 0, 0, 1, 2, 2], NUM_CLASSES)
    share = np.array([3, 1, 2]) / 6.0
    with tf.GradientTape() as tape:
      mean_log_z = tf.reduce_mean(machine.per_example(machine.train_log_z([0, 1]), condition))
    variables = [machine.label_0.w] + [m.b1 for m in machine.machines]
    grads = tape.gradient(mean_log_z, variables)
    p = np.exp(log_p)
    second = np.einsum("yn,ni,nj->yij", p, states[:, :3], states[:, 3:])
    self.assertAllClose(grads[0], np.tensordot(share, second, 1), atol=0.05)
    for label in range(NUM_CLASSES):
      self.assertAllClose(grads[1 + label], share[label] * (p[label] @ states[:, :3]),
                          atol=0.05)

  def test_a_label_field_over_machine_0_is_the_labels_own_machine(self):
    """Every prior term with the field a = b_y − b_0 over label 0's machine equals the same
    term on a separate RBM with label y's biases."""
    machine = random_machine()
    rng = np.random.default_rng(1)
    condition = tf.one_hot([2, 2, 2, 2], NUM_CLASSES)
    label = machine.machines[2]
    alone = RBM(3, 4)
    for name in ("b1", "b2", "w"):
      getattr(alone, name).assign(getattr(label, name))
    offsets = machine.offsets(condition)
    zeta = tf.constant(rng.uniform(0.01, 0.99, (4, 7)), tf.float32)
    log_z = tf.constant(1.5)
    smoothing = relaxations.smoothing("power", 30.0)
    for make in (lambda m: priors.MarginalRelaxationPrior(m, smoothing),
                 lambda m: priors.GaussianIntegralPrior(m, 8.0), priors.BoltzmannPrior):
      self.assertAllClose(make(machine.label_0).log_prob(zeta, log_z, offsets),
                          make(alone).log_prob(zeta, log_z), atol=1e-4)
    q = tf.sigmoid(tf.constant(rng.normal(size=(4, 7)), tf.float32))
    self.assertAllClose(
        priors.AnalyticKLPrior(machine.label_0).cross_entropy(q, q, log_z, offsets),
        priors.AnalyticKLPrior(alone).cross_entropy(q, q, log_z), atol=1e-4)

  def test_a_condition_that_is_not_one_hot_is_refused(self):
    machine = random_machine()
    with self.assertRaisesRegex(ValueError, "one-hot"):
      machine.offsets(tf.constant([[0.5, 0.5, 0.0]]))
    with self.assertRaisesRegex(ValueError, "one-hot"):
      machine.offsets(tf.constant([[1.0, 0.0]]))
    with self.assertRaisesRegex(ValueError, "num_classes"):
      DVAE(keras.layers.Dense(4), keras.layers.Dense(8), ClampedLabelMachine(RBM(2, 2), 3),
          num_dims=4, relaxation="power", beta=30.0, likelihood="gaussian", condition_dims=4)


class ClampedLabelModelTest(tf.test.TestCase):

  def test_the_label_through_the_prior_alone_reaches_the_conditional_truth(self):
    """x | c ~ N(μ_c, 0.5²I), 4 labels, D = 4 (`known_truth.conditional_gaussians`), and a
    decoder that sees z alone: the label reaches x only through p(z | c). Truth log p(x|c)
    −2.854, log p(x) −4.240 (log 4 lower). Measured (40 epochs): clamped labels −3.471, the
    same model with an unconditional prior −4.911; samples given c average μ_c."""
    rng = np.random.default_rng(0)
    x, c, _, means = kt.conditional_gaussians(2000, rng)
    test_x, test_c, truth, _ = kt.conditional_gaussians(1000, rng)
    scores = {}
    for clamped in (True, False):
      model = kt.small_dvae(4, likelihoods.Gaussian(), condition_dims=4, clamped_labels=clamped,
                            decoder_sees_condition=False)
      scores[clamped] = kt.fit_and_score(model, {"x": x, "condition": c},
                                         {"x": test_x, "condition": test_c}, epochs=40,
                                         learning_rate=1e-2)
      if clamped:
        clamped_model = model
    print(f"truth {truth.mean():.3f}  clamped {scores[True]:.3f}  free {scores[False]:.3f}")
    self.assertGreater(scores[True], truth.mean() - 1.0)
    self.assertLess(scores[True], truth.mean() + 0.1)
    self.assertGreater(scores[True], scores[False] + 1.0)
    labels = np.repeat(np.eye(4, dtype=np.float32), 100, axis=0)
    samples = clamped_model.sample(400, condition=labels, seed=[0, 1]).numpy()
    self.assertAllClose(samples.reshape(4, 100, 4).mean(axis=1), means, atol=0.5)
    # Generated from each label's persistent chains.
    self.assertEqual(clamped_model.generate(8, condition=labels[::50]).shape, (8, 4))

    path = os.path.join(tempfile.mkdtemp(), "clamped.keras")
    clamped_model.save(path)
    loaded = keras.models.load_model(path, custom_objects={"LatentsOnly": kt.LatentsOnly})
    machines = loaded.prior_machine.machines
    self.assertTrue(all(m.w is machines[0].w for m in machines))
    self.assertAllClose(loaded.prior_machine.log_z, clamped_model.prior_machine.log_z)
    data = {"x": test_x[:200], "condition": test_c[:200]}
    self.assertAllClose(loaded.evaluate(data, verbose=0), clamped_model.evaluate(data, verbose=0),
                        atol=1e-4)


if __name__ == "__main__":
  tf.test.main()
