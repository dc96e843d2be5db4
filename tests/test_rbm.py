"""Tests of dvae.rbm against brute-force enumeration of small RBMs in numpy float64."""

import itertools
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import expit, logsumexp

from dvae import boltzmann
from dvae import rbm as rbm_lib
from dvae import samplers
from dvae.rbm import RBM


def all_states(num_units):
  """[2^n, n] float64: every binary vector of n units."""
  return np.array(list(itertools.product([0.0, 1.0], repeat=num_units)))


def random_rbm(num_left, num_right, scale, seed=0, **kwargs):
  """An RBM with biases ~ N(0, 1) and couplings W ~ N(0, scale²)."""
  rng = np.random.default_rng(seed)
  rbm = RBM(num_left, num_right, **kwargs)
  rbm.b1.assign(rng.normal(0.0, 1.0, num_left))
  rbm.b2.assign(rng.normal(0.0, 1.0, num_right))
  rbm.w.assign(rng.normal(0.0, scale, (num_left, num_right)))
  return rbm


def parameters(rbm):
  return [v.numpy().astype(np.float64) for v in (rbm.b1, rbm.b2, rbm.w)]


def joint_log_weights(rbm, inverse_temperature=1.0):
  """β·(−E(z1, z2)) for every pair of states, [2^n1, 2^n2], from the definition of E."""
  b1, b2, w = parameters(rbm)
  z1, z2 = all_states(rbm.num_left), all_states(rbm.num_right)
  return inverse_temperature * ((z1 @ b1)[:, None] + (z2 @ b2)[None, :] + z1 @ w @ z2.T)


def brute_force(rbm):
  """(log Z, E_p[z1], E_p[z2], E_p[z1 z2ᵀ]) summing over all 2^(n1+n2) joint states."""
  log_weights = joint_log_weights(rbm)
  log_z = logsumexp(log_weights)
  p = np.exp(log_weights - log_z)
  z1, z2 = all_states(rbm.num_left), all_states(rbm.num_right)
  return log_z, p.sum(axis=1) @ z1, p.sum(axis=0) @ z2, z1.T @ p @ z2


def log_z_enumerating_right(rbm):
  """log Z in numpy by enumerating the right side and summing the left out analytically."""
  b1, b2, w = parameters(rbm)
  z2 = all_states(len(b2))
  return logsumexp(z2 @ b2 + np.logaddexp(0.0, b1[None, :] + z2 @ w.T).sum(axis=1))


def state_index(z):
  """Row of `all_states` holding each binary vector of z [N, n]."""
  return (z @ 2 ** np.arange(z.shape[-1] - 1, -1, -1)).astype(int)


def total_variation_and_bound(samples, log_weights):
  """(TV, bound): total variation between the empirical and the exact joint distribution.

  For N samples from p, E|p̂(z) − p(z)| ≈ √(2 p(z)(1 − p(z)) / (π N)); the bound is 1.5 times the
  resulting expected TV (the TV of an exact sampler fluctuates by a few percent around it).
  """
  p = np.exp(log_weights - logsumexp(log_weights))
  expected_tv = 0.5 * np.sum(np.sqrt(2 * p * (1 - p) / (np.pi * len(samples))))
  empirical = np.bincount(state_index(samples), minlength=p.size) / len(samples)
  return 0.5 * np.abs(empirical - p).sum(), 1.5 * expected_tv


class EnergyAndExactLogZTest(tf.test.TestCase):

  def test_energy_matches_its_definition_on_batches_of_any_rank(self):
    rbm = random_rbm(3, 4, 1.0)
    b1, b2, w = parameters(rbm)
    z = np.random.default_rng(1).integers(0, 2, (2, 5, 7)).astype(np.float64)
    z1, z2 = z[..., :3], z[..., 3:]
    expected = -(z1 @ b1 + z2 @ b2 + np.einsum("...i,ij,...j->...", z1, w, z2))
    self.assertAllClose(rbm.energy(z.astype(np.float32)), expected, rtol=1e-5, atol=1e-5)

  def test_log_z_exact_matches_brute_force_over_all_joint_states(self):
    # (n1, n2, coupling scale), including a larger right side and a larger left side.
    for n1, n2, scale in [(4, 4, 0.5), (4, 4, 2.0), (6, 3, 1.0), (3, 7, 1.0), (10, 10, 0.3),
                          (10, 10, 1.0), (10, 10, 3.0)]:
      rbm = random_rbm(n1, n2, scale, seed=n1 + n2)
      log_z, stderr = rbm.log_z_exact()
      self.assertAllClose(log_z, brute_force(rbm)[0], rtol=1e-6, atol=1e-4)
      self.assertEqual(float(stderr), 0.0)

  def test_log_z_exact_over_several_chunks_matches_enumerating_the_other_side(self):
    # 16 enumerated units span 2^(16 − EXACT_CHUNK_BITS) chunks; the reference enumerates the
    # 17 units of the other side instead and sums the 16 out analytically, in numpy.
    self.assertGreater(16, boltzmann.EXACT_CHUNK_BITS)
    rbm = random_rbm(16, 17, 0.5)
    self.assertAllClose(rbm.log_z_exact()[0], log_z_enumerating_right(rbm), rtol=1e-6,
                        atol=1e-4)

  def test_log_z_exact_rejects_more_than_20_units_on_the_smaller_side(self):
    with self.assertRaisesRegex(ValueError, "at most 20 units"):
      RBM(21, 22).log_z_exact()
    # A large side is fine when the other is small: it is summed out, not enumerated.
    rbm = random_rbm(30, 2, 0.5)
    self.assertAllClose(rbm.log_z_exact()[0], log_z_enumerating_right(rbm), rtol=1e-6,
                        atol=1e-4)

  def test_zero_parameter_rbm_starts_with_exact_log_z_and_fair_coin_chains(self):
    rbm = RBM(5, 7, num_chains=2000)
    self.assertAllClose(rbm.log_z, 12 * math.log(2.0))
    self.assertAllClose(rbm.log_z_exact()[0], 12 * math.log(2.0))
    chains = rbm.chains.numpy()
    self.assertAllInSet(chains, [0.0, 1.0])
    # Fair coins: the mean of 24,000 of them is 0.5 ± 0.003 (1 std).
    self.assertAllClose(chains.mean(), 0.5, atol=0.015)


class AnnealingTest(tf.test.TestCase):
  """AIS and population annealing (PA) against exact log Z."""

  CASES = [(4, 4, 1.0), (8, 8, 1.0), (7, 10, 0.5), (10, 10, 2.0), (10, 10, 3.0)]

  def assert_estimates_cover_exact_log_z(self, method, **kwargs):
    for i, (n1, n2, scale) in enumerate(self.CASES):
      rbm = random_rbm(n1, n2, scale, seed=i)
      estimate, stderr = getattr(rbm, f"log_z_{method}")(
          num_betas=300, num_samples=512, seed=[i, 5], **kwargs)
      error = abs(float(estimate) - brute_force(rbm)[0])
      # Stated tolerance: 0.1 nats; the reported standard error must cover the error.
      self.assertLess(error, 0.1)
      self.assertGreater(float(stderr), 0.0)
      self.assertLess(error, 4 * float(stderr) + 1e-3)

  def assert_stderr_matches_spread_of_repeated_estimates(self, method, **kwargs):
    # Cheap settings make the Monte Carlo error visible: 40 independent estimates.
    rbm = random_rbm(10, 10, 2.0, seed=3)
    runs = np.array([[float(v) for v in getattr(rbm, f"log_z_{method}")(
        num_betas=50, num_samples=64, seed=[s, 9], **kwargs)] for s in range(40)])
    errors, stderrs = runs[:, 0] - brute_force(rbm)[0], runs[:, 1]
    spread = errors.std(ddof=1)
    # The sample std of 40 draws is within ±35% of the truth with high probability; the
    # delta-method stderr is itself noisy, so a factor of 1.6 either way is the tolerance.
    self.assertBetween(np.mean(stderrs) / spread, 1 / 1.6, 1.6)
    # log of an unbiased estimate: the mean error is −var/2 + noise of std spread/√40.
    self.assertLess(abs(errors.mean()), 4 * spread / math.sqrt(40) + spread**2)

  def test_ais_matches_exact_log_z_within_its_standard_error(self):
    self.assert_estimates_cover_exact_log_z("ais")

  def test_pa_matches_exact_log_z_within_its_standard_error(self):
    self.assert_estimates_cover_exact_log_z("pa", num_populations=16)

  def test_ais_standard_error_matches_spread_of_repeated_estimates(self):
    self.assert_stderr_matches_spread_of_repeated_estimates("ais")

  def test_pa_standard_error_matches_spread_of_repeated_estimates(self):
    self.assert_stderr_matches_spread_of_repeated_estimates("pa", num_populations=16)

  @pytest.mark.slow
  def test_ais_and_pa_match_exact_log_z_at_paper_settings_on_20_plus_200_units(self):
    rbm = random_rbm(20, 200, 0.3)
    exact = float(rbm.log_z_exact()[0])
    for method in ("ais", "pa"):
      estimate, stderr = getattr(rbm, f"log_z_{method}")(seed=[0, 1])
      self.assertLess(abs(float(estimate) - exact), min(0.05, 4 * float(stderr) + 1e-3))


class GibbsTest(tf.test.TestCase):

  def assert_samples_follow(self, samples, log_weights):
    tv, bound = total_variation_and_bound(samples, log_weights)
    self.assertLess(tv, bound)
    return tv, bound

  def test_gibbs_samples_match_exact_joint_distribution(self):
    rbm = random_rbm(4, 4, 1.5)
    for beta in (1.0, 0.5):
      start = rbm.sample(20000, 0, seed=[0, 1])
      samples = rbm.gibbs_sweeps(start, 30, [1, 2], inverse_temperature=beta).numpy()
      log_weights = joint_log_weights(rbm, beta).ravel()
      _, bound = self.assert_samples_follow(samples, log_weights)
      # The test has power: one sweep from uniform noise is still far from p.
      one_sweep = rbm.gibbs_sweeps(start, 1, [1, 2], inverse_temperature=beta).numpy()
      p = np.exp(log_weights - logsumexp(log_weights))
      empirical = np.bincount(state_index(one_sweep), minlength=p.size) / len(one_sweep)
      self.assertGreater(0.5 * np.abs(empirical - p).sum(), 1.5 * bound)

  def test_sample_draws_exact_joint_distribution(self):
    rbm = random_rbm(3, 5, 1.5)
    samples = rbm.sample(20000, 30, seed=[4, 2]).numpy()
    self.assertAllInSet(samples, [0.0, 1.0])
    self.assert_samples_follow(samples, joint_log_weights(rbm).ravel())


class TrainLogZTest(tf.test.TestCase):
  """The surrogate's gradient against the exact ∂log Z/∂θ = (E_p[z1], E_p[z2], E_p[z1 z2ᵀ])."""

  def assert_gradient_matches_exact_moments(self, sampler):
    num_chains = 5000
    rbm = random_rbm(5, 5, 1.0, num_chains=num_chains, num_sweeps=20, sampler=sampler)
    rbm.train_log_z(tf.constant([0, 0]))  # PCD burn-in; PA starts afresh each step.
    with tf.GradientTape() as tape:
      surrogate = rbm.train_log_z(tf.constant([0, 1]))
    grads = tape.gradient(surrogate, [rbm.b1, rbm.b2, rbm.w])
    _, *moments = brute_force(rbm)
    errors = np.concatenate([(g.numpy() - m).ravel() for g, m in zip(grads, moments)])
    means = np.concatenate([m.ravel() for m in moments])
    # Each gradient entry is a mean of num_chains Bernoulli(m) variables: std √(m(1−m)/N).
    # Tolerance: every one of the 35 entries within 5 std (resampled PA particles are
    # correlated, but measured errors stay under 3 std for both samplers).
    z_scores = np.abs(errors) / np.sqrt(means * (1 - means) / num_chains)
    self.assertLess(z_scores.max(), 5.0)
    # The chains hold the states whose statistics made the gradient.
    self.assertAllClose(grads[0], rbm.chains.numpy()[:, :5].mean(axis=0), atol=1e-4)

  def test_pcd_surrogate_gradient_matches_exact_log_z_gradient(self):
    self.assert_gradient_matches_exact_moments("pcd")

  def test_pa_surrogate_gradient_matches_exact_log_z_gradient(self):
    self.assert_gradient_matches_exact_moments("pa")

  def test_train_log_z_in_tf_function_matches_eager_for_the_same_seed(self):
    for sampler in samplers.BUILT_IN:
      eager_rbm, graph_rbm = (random_rbm(6, 4, 1.0, num_chains=50, num_sweeps=3,
                                         sampler=sampler) for _ in range(2))
      eager = eager_rbm.train_log_z(tf.constant([3, 4]))
      graph = tf.function(graph_rbm.train_log_z)(tf.constant([3, 4]))
      self.assertAllClose(eager, graph)
      self.assertAllEqual(eager_rbm.chains, graph_rbm.chains)

  def test_sample_accepts_symbolic_sizes_and_a_missing_seed(self):
    rbm = random_rbm(3, 4, 1.0)
    sample = tf.function(lambda n, seed: rbm.sample(n, 5, seed), input_signature=[
        tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32)])
    self.assertAllEqual(sample(tf.constant(6), tf.constant([1, 2])).shape, [6, 7])
    self.assertAllEqual(rbm.sample(3, 2).shape, [3, 7])
    estimate, stderr = rbm.log_z_ais(num_betas=10, num_samples=8)
    self.assertTrue(np.isfinite(estimate) and np.isfinite(stderr))


class StateTest(tf.test.TestCase):

  def test_variables_are_tracked_and_survive_a_checkpoint_round_trip(self):
    rbm = random_rbm(3, 4, 1.0, num_chains=10, num_sweeps=2)
    self.assertEqual([v.name for v in rbm.trainable_variables], ["b1", "b2", "w"])
    self.assertEqual([v.name for v in rbm.non_trainable_variables],
                     ["chains", "log_z", "log_z_stderr", "log_z_parameters", "running_log_z",
                      "running_log_z_stderr", "negative_phase_lag", "running_log_z_parameters",
                      "path_particles", "path_log_z", "path_step"])
    rbm.train_log_z(tf.constant([1, 1]))
    rbm.update_log_z("ais", num_betas=20, num_samples=16, seed=[0, 0])
    path = tf.train.Checkpoint(rbm=rbm).save(self.get_temp_dir() + "/ckpt")
    restored = RBM(3, 4, num_chains=10, num_sweeps=2)
    tf.train.Checkpoint(rbm=restored).restore(path).assert_consumed()
    for original, copy in zip(rbm.weights, restored.weights):
      self.assertAllEqual(original, copy)

  def test_update_log_z_stores_the_estimate(self):
    rbm = random_rbm(4, 5, 1.0)
    exact = brute_force(rbm)[0]
    log_z, stderr = rbm.update_log_z("exact")
    self.assertAllClose([rbm.log_z.numpy(), rbm.log_z_stderr.numpy()], [exact, 0.0], atol=1e-4)
    for method in ("ais", "pa"):
      log_z, stderr = rbm.update_log_z(method, num_betas=100, num_samples=128, seed=[2, 3])
      self.assertAllEqual([rbm.log_z, rbm.log_z_stderr], [log_z, stderr])
      self.assertLess(abs(float(log_z) - exact), 4 * float(stderr) + 1e-3)

  def test_weight_decay_loss_is_half_the_squared_norm_of_w(self):
    rbm = random_rbm(3, 4, 1.0, weight_decay=0.1)
    self.assertAllClose(rbm.weight_decay_loss(), 0.05 * np.sum(parameters(rbm)[2] ** 2))

  def test_bad_arguments_raise_value_errors_naming_allowed_values(self):
    with self.assertRaisesRegex(ValueError, "pcd"):
      RBM(2, 2, sampler="gibbs")
    with self.assertRaisesRegex(ValueError, "positive integer"):
      RBM(0, 2)
    with self.assertRaisesRegex(ValueError, "exact"):
      RBM(2, 2).update_log_z("bridge")
    with self.assertRaisesRegex(ValueError, "multiple of num_populations"):
      RBM(2, 2).log_z_pa(num_betas=10, num_samples=100, num_populations=16)


class KernelTest(tf.test.TestCase):
  """The compiled kernels' arithmetic against float64 numpy and Monte Carlo."""

  def test_annealing_increment_matches_float64_softplus_on_extreme_activations(self):
    rng = np.random.default_rng(0)
    extremes = np.array([-1e4, -300, -30, -1, -1e-4, 0, 1e-4, 1, 30, 300, 1e4])
    # 200 units multiply their ratios in groups of 100; 7 (prime) take one log per unit.
    for num_sum in (200, 7):
      activation = np.concatenate([
          rng.choice(extremes, (4, num_sum)), rng.normal(0, 10, (4, num_sum))]).astype(np.float32)
      a = activation.astype(np.float64)
      for betas in [(0.0, 1e-3), (0.5, 0.525), (0.999, 1.0), (0.0, 1.0), (0.3, 0.3)]:
        # The reference takes the float32 temperatures the kernel is given.
        beta_before, beta = np.float32(betas).astype(np.float64)
        expected_increment = np.sum(np.logaddexp(0, beta * a) - np.logaddexp(0, beta_before * a),
                                    axis=-1)
        expected_probability = expit(beta * a)
        for compile_xla in (False, True):
          increment, probability = tf.function(rbm_lib._annealing_increment,
                                               jit_compile=compile_xla)(
              tf.constant(activation), tf.constant(beta_before, tf.float32),
              tf.constant(beta, tf.float32))
          # Stated tolerance: 2.5e-7 per unit and per nat of (β − β')|a| (float32 rounding;
          # measured worst 5.5e-8).
          tolerance = 2.5e-7 * (num_sum + np.sum(np.abs((beta - beta_before) * a), axis=-1))
          self.assertLessEqual(np.max(np.abs(increment.numpy() - expected_increment) / tolerance),
                               1.0)
          self.assertAllClose(probability, expected_probability, rtol=1e-5, atol=1e-7)

  def test_systematic_resampling_offspring_counts_are_unbiased(self):
    # 20,000 independent populations of 10 particles, one uniform each, in one call.
    num_populations, size = 20000, 10
    weights = np.array([0.3, 0.0, 1e-9, 0.05, 0.25, 0.123, 0.077, 0.1, 0.1, 1e-3])
    weights /= weights.sum()
    with np.errstate(divide="ignore"):
      log_w = np.tile(np.log(weights) + 700.0, (num_populations, 1))  # shift: log weights only
    ancestors = tf.function(boltzmann.systematic_resample, jit_compile=True)(
        tf.constant(log_w), tf.constant([3, 4])).numpy()
    self.assertAllEqual(ancestors, np.sort(ancestors, axis=-1))
    counts = np.stack([np.bincount(row, minlength=size) for row in ancestors])
    expected = size * weights
    # Systematic resampling gives every particle ⌊P w_i⌋ or ⌈P w_i⌉ offspring ...
    self.assertTrue(np.all((counts >= np.floor(expected) - 1e-9)
                           & (counts <= np.ceil(expected) + 1e-9)))
    # ... with mean P w_i: counts vary by at most 1, so std ≤ ½ and the mean of 20,000 is
    # within 5 × 0.5/√20000 = 0.018 of P w_i.
    self.assertAllLessEqual(np.abs(counts.mean(axis=0) - expected), 0.018)


TRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trained_rbm_200_200.npz")


def trained_rbm(factor, num_left=200):
  """The prior of a trained DVAE (tests/trained_rbm_200_200.npz) with its parameters × `factor`
  (a stand-in for longer training), keeping its first `num_left` left units.

  The file holds b1, b2, W of the best checkpoint (step 20,000, seed 0) of
  `python run_training.py --hparams=quickstart --struct=4-layer-nonlin --num_train_iter=20000
  --eval_every=5000`: binarized MNIST, dvaes_power, PCD over 200 chains × 10 sweeps.
  """
  weights = np.load(TRAINED)
  rbm = RBM(num_left, 200)
  rbm.b1.assign(factor * weights["b1"][:num_left])
  rbm.b2.assign(factor * weights["b2"])
  rbm.w.assign(factor * weights["w"][:num_left])
  return rbm


class BiasCheckTest(tf.test.TestCase):
  """The final evaluation's AIS (`log_z_ais_checked`): its schedules and its reported error."""

  def test_schedules_run_from_zero_to_one_with_the_stated_steps(self):
    for schedule in boltzmann.ANNEALING_SCHEDULES:
      betas = boltzmann.inverse_temperatures(11, schedule).numpy()
      self.assertAllClose([betas[0], betas[-1]], [0.0, 1.0])
      self.assertTrue(np.all(np.diff(betas) > 0))
    steps = np.diff(boltzmann.inverse_temperatures(11, "quadratic").numpy())
    self.assertAllClose(steps, (2 * (10 - np.arange(1, 11)) + 1) / 100.0, atol=1e-6)
    for args, expected in (((11, "cosine"), "schedule must be one of"),
                           ((1,), "num_betas must be an integer ≥ 2")):
      with self.assertRaisesRegex(ValueError, expected):
        boltzmann.inverse_temperatures(*args)
    with self.assertRaisesRegex(ValueError, "at least 20"):
      RBM(2, 2).log_z_ais_checked(num_betas=10)

  def test_reported_error_covers_the_exact_error_on_sharpened_trained_couplings(self):
    """16 + 200 units of the trained prior, ×1, ×2, ×4, exact log Z by enumeration: AIS with
    1000 temperatures × 256 reports stderr + |difference to 100 temperatures| ≥ its error,
    for 3 seeds each (at ×4 the 100-temperature run errs by up to 0.8 nats)."""
    for factor in (1.0, 2.0, 4.0):
      rbm = trained_rbm(factor, num_left=16)
      exact = float(rbm.log_z_exact()[0])
      for seed in range(3):
        log_z, stderr, check = rbm.log_z_ais_checked(1000, 256, seed=[seed, 1])
        self.assertEqual((check["method"], check["num_betas"], check["num_samples"],
                          check["schedule"]), ("ais", 100, 256, "linear"))
        self.assertAllClose(check["difference"], float(log_z) - check["log_z"])
        self.assertAllClose(check["error"], float(stderr) + abs(check["difference"]))
        self.assertLessEqual(abs(float(log_z) - exact), check["error"])

  @pytest.mark.slow  # About 15 minutes on two shared cores.
  def test_final_evaluation_ais_covers_its_error_on_the_sharpened_200_plus_200_prior(self):
    """The trained 200 + 200 prior ×2 and ×4 against AIS with 100,000 temperatures × 256 (whose
    own standard error is added to the tolerance): the final evaluation's AIS (10,000
    temperatures × 1024, checked against 1000) is within its reported error."""
    for factor in (2.0, 4.0):
      rbm = trained_rbm(factor)
      reference, reference_stderr = (float(v) for v in rbm.log_z_ais(100_000, 256, [7, 0]))
      log_z, _, check = rbm.log_z_ais_checked(seed=[0, 1])
      self.assertLessEqual(abs(float(log_z) - reference), check["error"] + 2 * reference_stderr)


if __name__ == "__main__":
  tf.test.main()
