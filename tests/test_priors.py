"""Tests of dvae.priors against independent float64 references on small RBMs.

Every reference is brute force written here: enumeration of all 2^n states for log Z, KLs and
marginals; scipy's multivariate normal for the Gaussian-integral mixture; Gauss–Legendre
quadrature over ζ for hierarchical KLs; central finite differences for gradients. log Z always
comes from the enumeration below, never from the RBM code.
"""

import itertools

import networkx as nx
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from dvae import graphs, priors, relaxations
from dvae.boltzmann import GraphBoltzmannMachine
from dvae.rbm import RBM

# β of each family in the tests (SPEC §6 scale).
BETA = {"spike_exp": 5.0, "exponential": 10.0, "power": 30.0, "gaussian": 30.0,
        "uniform_exponential": 16.0}
MARGINAL_BASELINES = ("dvaes_gauss", "dvaes_exp", "dvaes_unexp", "dvaes_power")
UNIFORM_EXP_EPS = 0.05


# --- Brute-force references (numpy, float64). ----------------------------------------------

def all_states(n):
  """All 2^n binary vectors [2^n, n]."""
  return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def np_energy(z, b1, b2, w):
  n1 = len(b1)
  z1, z2 = z[..., :n1], z[..., n1:]
  return -(z1 @ b1) - (z2 @ b2) - np.einsum("...i,ij,...j->...", z1, w, z2)


def np_log_z(b1, b2, w):
  return special.logsumexp(-np_energy(all_states(len(b1) + len(b2)), b1, b2, w))


def np_log_r0(family, zeta, beta):
  """log r(ζ|z=0) of the smoothing families of SPEC §2."""
  if family == "exponential":
    return np.log(beta) - beta * zeta - np.log(-np.expm1(-beta))
  if family == "power":
    return -np.log(beta) + (1.0 / beta - 1.0) * np.log(zeta)
  if family == "gaussian":
    return stats.norm.logpdf(zeta, 0.0, 1.0 / np.sqrt(beta))
  if family == "uniform_exponential":
    return np.log((1 - UNIFORM_EXP_EPS) * np.exp(np_log_r0("exponential", zeta, beta))
                  + UNIFORM_EXP_EPS)
  raise AssertionError(family)


def np_log_marginal(zeta, b1, b2, w, family, beta):
  """log Σ_z exp(−E(z) + b(ζ)ᵀz + c(ζ)) by enumeration, for ζ [B, n] → [B]."""
  log_r0 = np_log_r0(family, zeta, beta)
  log_r1 = np_log_r0(family, 1.0 - zeta, beta)
  states = all_states(zeta.shape[-1])
  terms = (-np_energy(states, b1, b2, w)[None, :] + (log_r1 - log_r0) @ states.T
           + log_r0.sum(-1, keepdims=True))
  return special.logsumexp(terms, axis=-1)


def np_gi_lambda(w, beta):
  return max(beta, 5.0 + np.linalg.svd(w, compute_uv=False).max())


def np_gi_log_prob(zeta, b1, b2, w, lam):
  """log Σ_z p(z) N(ζ; z, (𝒲 + λI)⁻¹) by enumeration, for ζ [B, n] → [B]."""
  n1, n2 = w.shape
  coupling = np.block([[np.zeros((n1, n1)), w], [w.T, np.zeros((n2, n2))]])
  cov = np.linalg.inv(coupling + lam * np.eye(n1 + n2))
  states = all_states(n1 + n2)
  log_pz = -np_energy(states, b1, b2, w) - np_log_z(b1, b2, w)
  log_normal = np.stack([stats.multivariate_normal.logpdf(zeta, mean=z, cov=cov)
                         for z in states], axis=-1)
  return special.logsumexp(log_pz + log_normal.reshape(len(zeta), -1), axis=-1)


def np_factorial_kl(logits, b1, b2, w):
  """KL(q(z) ‖ p(z)) for factorial Bernoulli q = σ(l) by enumeration, logits [B, n] → [B]."""
  states = all_states(logits.shape[-1])
  log_q = states @ special.log_expit(logits).T + (1 - states) @ special.log_expit(-logits).T
  log_p = -np_energy(states, b1, b2, w) - np_log_z(b1, b2, w)
  return np.sum(np.exp(log_q) * (log_q - log_p[:, None]), axis=0)


def quadrature(family, beta, num_nodes):
  """Per z ∈ {0, 1}: nodes and weights integrating against r(ζ|z) on [0, 1]."""
  nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
  nodes, weights = 0.5 * (nodes + 1), 0.5 * weights
  log_r1 = np.log(beta) + beta * (nodes - 1) - np.log(-np.expm1(-beta))
  if family == "spike_exp":
    return {0: (np.zeros(1), np.ones(1)), 1: (nodes, weights * np.exp(log_r1))}
  if family == "exponential":
    return {0: (nodes, weights * np.exp(np_log_r0(family, nodes, beta))),
            1: (nodes, weights * np.exp(log_r1))}
  raise AssertionError(family)


def np_hierarchical_kl(params, family, beta, num_nodes=32):
  """KL(q(z, ζ|x) ‖ p(z, ζ)) of a two-layer posterior by quadrature over ζ1.

  Layer 1: q(z1) = Bern(σ(l1)), ζ1 ~ r(ζ1|z1); layer 2: q(z2|ζ1) = Bern(σ(a + ζ1 V)). The two
  layers are the RBM's halves. KL = E_{z1, ζ1}[log q(z1) + E_{z2|ζ1}[log q(z2|ζ1) + E(z)]]
  + log Z, with the z2 expectation in closed form (E(z) is linear in z2).
  """
  l1, a, v, b1, b2, w = (params[k] for k in ("l1", "a", "v", "b1", "b2", "w"))
  nodes = quadrature(family, beta, num_nodes)
  total = 0.0
  for z1 in all_states(len(l1)):
    grids = np.meshgrid(*[nodes[int(bit)][0] for bit in z1], indexing="ij")
    weights = np.meshgrid(*[nodes[int(bit)][1] for bit in z1], indexing="ij")
    zeta1 = np.stack([g.ravel() for g in grids], axis=-1)
    weight = np.prod(np.stack([g.ravel() for g in weights], axis=-1), axis=-1)
    log_q1 = np.sum(z1 * special.log_expit(l1) + (1 - z1) * special.log_expit(-l1))
    l2 = a + zeta1 @ v
    q2 = special.expit(l2)
    neg_entropy2 = np.sum(q2 * special.log_expit(l2) + (1 - q2) * special.log_expit(-l2), -1)
    energy = -(z1 @ b1) - q2 @ b2 - q2 @ (z1 @ w)
    total += np.exp(log_q1) * np.sum(weight * (log_q1 + neg_entropy2 + energy))
  return total + np_log_z(b1, b2, w)


def central_differences(fn, params, step=1e-5):
  """∂fn/∂params[k] for every array in the dict `params`."""
  grads = {}
  for key, value in params.items():
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
      plus, minus = dict(params), dict(params)
      plus[key], minus[key] = value.copy(), value.copy()
      plus[key][index] += step
      minus[key][index] -= step
      grad[index] = (fn(plus) - fn(minus)) / (2 * step)
    grads[key] = grad
  return grads


# --- Helpers building the TF side. ----------------------------------------------------------

def random_rbm_params(n1, n2, scale, seed):
  rng = np.random.default_rng(seed)
  return (rng.normal(0, 1, n1), rng.normal(0, 1, n2), rng.normal(0, scale, (n1, n2)))


def make_rbm(b1, b2, w):
  rbm = RBM(len(b1), len(b2), num_chains=4)
  for variable, value in ((rbm.b1, b1), (rbm.b2, b2), (rbm.w, w)):
    variable.assign(np.asarray(value, np.float32))
  return rbm


def exact_log_z(rbm):
  """A function giving exact log Z (numpy enumeration) with its exact gradient E_p[−∂E/∂θ].

  The surrogate Σ_z p(z)(−E(z)) with p(z) held fixed has gradient Σ_z p(z)(−∂E/∂θ). The
  enumeration runs once, here, so the returned function also works inside `tf.function`.
  """
  b1, b2, w = (v.numpy().astype(np.float64) for v in (rbm.b1, rbm.b2, rbm.w))
  states = all_states(len(b1) + len(b2))
  log_z = np_log_z(b1, b2, w)
  probs = tf.constant(np.exp(-np_energy(states, b1, b2, w) - log_z), tf.float32)
  states = tf.constant(states, tf.float32)

  def log_z_with_gradient():
    surrogate = tf.reduce_sum(probs * -rbm.energy(states))
    return tf.constant(log_z, tf.float32) + surrogate - tf.stop_gradient(surrogate)

  return log_z_with_gradient


def f32(x):
  return tf.constant(np.asarray(x, np.float32))


class MakePriorTest(tf.test.TestCase):

  def test_make_prior_builds_the_prior_of_every_baseline(self):
    self.assertEqual(set(priors.BASELINES), set(priors.RELAXATION_OF_BASELINE))
    self.assertEqual(
        [priors.RELAXATION_OF_BASELINE[b] for b in priors.BASELINES],
        ["spike_exp", "exponential", "power", "shifted_gaussian", "gaussian", "exponential",
         "uniform_exponential", "power"])
    rbm = make_rbm(*random_rbm_params(3, 3, 1.0, seed=0))
    expected = {"dvae_spike_exp": priors.AnalyticKLPrior, "dvaepp_exp": priors.AnalyticKLPrior,
                "dvaepp_power": priors.AnalyticKLPrior,
                "dvaes_gi": priors.GaussianIntegralPrior}
    for baseline in priors.BASELINES:
      prior = priors.make_prior(baseline, rbm, 10.0)
      self.assertIsInstance(prior, expected.get(baseline, priors.MarginalRelaxationPrior))
      self.assertEqual(prior.trains_iw, baseline.startswith("dvaes_"))
    self.assertIsInstance(priors.make_prior("dvae_spike_exp", rbm, 5.0, num_latent_layers=2),
                          priors.RolfeKLPrior)
    self.assertIsInstance(priors.make_prior("dvaepp_exp", rbm, 5.0, num_latent_layers=2),
                          priors.AnalyticKLPrior)

  def test_make_prior_rejects_bad_arguments_naming_allowed_values(self):
    rbm = make_rbm(*random_rbm_params(2, 2, 1.0, seed=0))
    with self.assertRaisesRegex(ValueError, "dvaes_power"):
      priors.make_prior("dvaes_spike", rbm, 10.0)
    with self.assertRaisesRegex(ValueError, "positive integer"):
      priors.make_prior("dvaepp_exp", rbm, 10.0, num_latent_layers=0)

  def test_discrete_log_prob_matches_enumeration_for_every_baseline(self):
    b1, b2, w = random_rbm_params(4, 5, 1.0, seed=1)
    rbm = make_rbm(b1, b2, w)
    log_z = np_log_z(b1, b2, w)
    states = all_states(9)
    expected = -np_energy(states, b1, b2, w) - log_z
    for baseline in priors.BASELINES:
      got = priors.make_prior(baseline, rbm, 10.0).discrete_log_prob(f32(states), f32(log_z))
      self.assertAllClose(got, expected, atol=2e-5, rtol=1e-6)
      self.assertAllClose(special.logsumexp(got.numpy().astype(np.float64)), 0.0, atol=1e-5)


class AnalyticKLTest(tf.test.TestCase):

  def test_analytic_kl_matches_enumerated_kl_for_one_latent_layer(self):
    for seed, family in enumerate(("spike_exp", "exponential", "power")):
      b1, b2, w = random_rbm_params(4, 4, 1.0, seed=10 + seed)
      rbm = make_rbm(b1, b2, w)
      logits = np.random.default_rng(seed).normal(0, 2, (6, 8))
      posterior = relaxations.posterior(family, f32(logits), beta=BETA[family])
      zeta = posterior.sample(seed=[seed, 1])
      baseline = {"spike_exp": "dvae_spike_exp", "exponential": "dvaepp_exp",
                  "power": "dvaepp_power"}[family]
      kl = priors.make_prior(baseline, rbm, BETA[family]).kl(
          [posterior], [zeta], f32(np_log_z(b1, b2, w)))
      self.assertAllClose(kl, np_factorial_kl(logits, b1, b2, w), atol=2e-5, rtol=1e-6)

  def test_analytic_kl_gradient_matches_finite_differences_of_enumerated_kl(self):
    b1, b2, w = random_rbm_params(3, 4, 1.0, seed=3)
    logits = np.random.default_rng(3).normal(0, 1.5, (1, 7))
    rbm = make_rbm(b1, b2, w)
    logits_var = tf.Variable(logits.astype(np.float32))
    with tf.GradientTape() as tape:
      posterior = relaxations.posterior("exponential", logits_var, beta=10.0)
      kl = priors.make_prior("dvaepp_exp", rbm, 10.0).kl(
          [posterior], [posterior.sample(seed=[0, 0])], exact_log_z(rbm)())
    grads = tape.gradient(kl, [logits_var, rbm.b1, rbm.b2, rbm.w])
    expected = central_differences(
        lambda p: np_factorial_kl(p["logits"], p["b1"], p["b2"], p["w"])[0],
        {"logits": logits, "b1": b1, "b2": b2, "w": w})
    for got, key in zip(grads, ("logits", "b1", "b2", "w")):
      self.assertAllClose(got, expected[key], atol=1e-5, rtol=1e-5, msg=key)


def hierarchical_errors(baseline, family, seed, num_batches=16, batch_size=4000):
  """Errors of the prior's mean KL and mean gradient against quadrature, with MC bounds.

  Two latent layers of 3 units (= the RBM's halves), layer 2's logits a + ζ1 V, ζ ~ q from
  `dvae.relaxations`. The bound is 4 standard errors across `num_batches` batch means plus a
  small allowance for the float32 arithmetic. Returns {name: (|error|, bound)}.
  """
  rng = np.random.default_rng(seed)
  params = {"l1": rng.normal(0, 1, 3), "a": rng.normal(0, 1, 3), "v": rng.normal(0, 2, (3, 3)),
            "b1": rng.normal(0, 1, 3), "b2": rng.normal(0, 1, 3), "w": rng.normal(0, 1, (3, 3))}
  beta = BETA[family]
  rbm = make_rbm(params["b1"], params["b2"], params["w"])
  variables = {k: tf.Variable(params[k].astype(np.float32)) for k in ("l1", "a", "v")}
  variables.update(b1=rbm.b1, b2=rbm.b2, w=rbm.w)
  prior = priors.make_prior(baseline, rbm, beta, num_latent_layers=2)
  log_z = exact_log_z(rbm)

  @tf.function
  def estimate(seed):
    seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    with tf.GradientTape() as tape:
      first = relaxations.posterior(
          family, tf.tile(variables["l1"][None], [batch_size, 1]), beta=beta)
      zeta1 = first.sample(seed=seed1)
      second = relaxations.posterior(
          family, variables["a"] + tf.matmul(zeta1, variables["v"]), beta=beta)
      kl = tf.reduce_mean(
          prior.kl([first, second], [zeta1, second.sample(seed=seed2)], log_z()))
    return kl, tape.gradient(kl, list(variables.values()))

  runs = [estimate(tf.constant([i, seed])) for i in range(num_batches)]
  samples = {"kl": np.array([run[0].numpy() for run in runs])}
  samples.update({k: np.stack([run[1][i].numpy() for run in runs])
                  for i, k in enumerate(variables)})
  exact = {"kl": np_hierarchical_kl(params, family, beta)}
  exact.update(central_differences(lambda p: np_hierarchical_kl(p, family, beta), params))
  return {k: (np.abs(samples[k].mean(0) - exact[k]),
              4 * samples[k].std(0, ddof=1) / np.sqrt(num_batches) + 2e-3) for k in samples}


class HierarchicalKLTest(tf.test.TestCase):

  def assert_within(self, errors):
    for key, (error, bound) in errors.items():
      self.assertTrue(np.all(error < bound), msg=f"{key}: error {error} bound {bound}")

  def test_hierarchical_analytic_kl_and_gradient_are_unbiased_for_exact_kl(self):
    self.assert_within(hierarchical_errors("dvaepp_exp", "exponential", seed=20))

  def test_rolfe_surrogate_value_and_gradient_are_unbiased_for_exact_kl(self):
    self.assert_within(hierarchical_errors("dvae_spike_exp", "spike_exp", seed=21))

  def test_rolfe_surrogate_is_finite_at_extreme_logits(self):
    rbm = make_rbm(*random_rbm_params(4, 4, 3.0, seed=4))
    prior = priors.make_prior("dvae_spike_exp", rbm, 5.0, num_latent_layers=2)
    logits = tf.Variable([[-200.0, -88.0, 0.0, 88.0], [200.0, 88.0, 30.0, -30.0]])
    with tf.GradientTape() as tape:
      layers = [relaxations.posterior("spike_exp", logits, beta=5.0),
                relaxations.posterior("spike_exp", -logits, beta=5.0)]
      kl = prior.kl(layers, [q.sample(seed=[1, i]) for i, q in enumerate(layers)],
                    exact_log_z(rbm)())
    grads = tape.gradient(kl, [logits, rbm.b1, rbm.b2, rbm.w])
    self.assertAllEqual(tf.math.is_finite(kl), [True, True])
    for grad in grads:
      self.assertTrue(np.all(np.isfinite(grad.numpy())))


def random_zeta(family, n, num, seed):
  """ζ spread over the support, with mass near the ends where z lives."""
  rng = np.random.default_rng(seed)
  if family == "gaussian":
    return rng.integers(0, 2, (num, n)) + rng.normal(0, 0.3, (num, n))
  # Kept 0.01 from the ends so that guards like log(ζ + 1e-7) do not move the reference.
  return np.clip(rng.beta(0.4, 0.4, (num, n)), 0.01, 0.99)


def mean_field_gap(baseline, scale, seed, n1=5, n2=5, num=64):
  """exact − mean-field log Σ_z exp(−E(z) + b(ζ)ᵀz + c(ζ)) at random ζ."""
  family = priors.RELAXATION_OF_BASELINE[baseline]
  b1, b2, w = random_rbm_params(n1, n2, scale, seed)
  zeta = random_zeta(family, n1 + n2, num, seed)
  prior = priors.make_prior(baseline, make_rbm(b1, b2, w), BETA[family])
  mean_field = prior.log_prob(f32(zeta), f32(0.0)).numpy().astype(np.float64)
  return np_log_marginal(zeta, b1, b2, w, family, BETA[family]) - mean_field


class MarginalRelaxationTest(tf.test.TestCase):

  def test_mean_field_log_prob_never_exceeds_exact_marginal(self):
    for baseline in MARGINAL_BASELINES:
      for seed, scale in enumerate((0.3, 1.0, 3.0)):
        gap = mean_field_gap(baseline, scale, seed)
        # 1e-4 is float32 rounding of terms of size O(100) (c(ζ), b(ζ)ᵀm) that cancel.
        self.assertTrue(np.all(gap > -1e-4), msg=f"{baseline} scale {scale}: min gap {gap.min()}")

  def test_mean_field_log_prob_is_exact_without_couplings_and_close_when_weak(self):
    for baseline in MARGINAL_BASELINES:
      gap = mean_field_gap(baseline, 0.0, seed=5)
      self.assertLess(np.abs(gap).max(), 1e-4, msg=baseline)
      gap = mean_field_gap(baseline, 0.02, seed=6)
      self.assertLess(np.abs(gap).max(), 5e-4, msg=baseline)

  def test_marginal_kl_is_log_q_minus_exact_log_p_without_couplings(self):
    b1, b2, w = random_rbm_params(3, 3, 0.0, seed=7)
    rbm = make_rbm(b1, b2, w)
    logits = np.random.default_rng(7).normal(0, 2, (5, 6))
    for baseline in MARGINAL_BASELINES:
      family = priors.RELAXATION_OF_BASELINE[baseline]
      beta = BETA[family]
      posteriors = [relaxations.posterior(family, f32(logits[:, :3]), beta=beta),
                    relaxations.posterior(family, f32(logits[:, 3:]), beta=beta)]
      zetas = [q.sample(seed=[8, i]) for i, q in enumerate(posteriors)]
      zeta = np.concatenate([z.numpy() for z in zetas], -1).astype(np.float64)
      if family != "gaussian":
        zeta = np.clip(zeta, 1e-3, 1 - 1e-3)
        zetas = [f32(zeta[:, :3]), f32(zeta[:, 3:])]
      q = special.expit(logits)
      log_q = np.sum(np.logaddexp(np.log1p(-q) + np_log_r0(family, zeta, beta),
                                  np.log(q) + np_log_r0(family, 1 - zeta, beta)), -1)
      log_p = (np_log_marginal(zeta, b1, b2, w, family, beta) - np_log_z(b1, b2, w))
      kl = priors.make_prior(baseline, rbm, beta).kl(posteriors, zetas,
                                                     f32(np_log_z(b1, b2, w)))
      self.assertAllClose(kl, log_q - log_p, atol=1e-4, rtol=1e-5, msg=baseline)

  def test_mean_field_gradients_are_finite_including_support_ends(self):
    b1, b2, w = random_rbm_params(4, 4, 2.0, seed=9)
    rbm = make_rbm(b1, b2, w)
    for baseline in MARGINAL_BASELINES:
      family = priors.RELAXATION_OF_BASELINE[baseline]
      zeta = random_zeta(family, 8, 6, seed=9)
      if family == "gaussian":
        zeta[0] = [-3, 4, 0, 1, 0.5, -1, 2, 1]
      else:
        zeta[0], zeta[1] = 0.0, 1.0
        zeta[2] = [0, 1, 0, 1, 1, 0, 1e-30, 1 - 1e-7]
      zeta = tf.Variable(zeta.astype(np.float32))
      with tf.GradientTape() as tape:
        log_p = priors.make_prior(baseline, rbm, BETA[family]).log_prob(
            zeta, exact_log_z(rbm)())
      grads = tape.gradient(log_p, [zeta, rbm.b1, rbm.b2, rbm.w])
      self.assertTrue(np.all(np.isfinite(log_p.numpy())), msg=baseline)
      for grad in grads:
        self.assertTrue(np.all(np.isfinite(grad.numpy())), msg=baseline)

  def test_mean_field_gradient_matches_exact_marginal_gradient_for_weak_couplings(self):
    # With weak couplings mean field is near-exact, and so is its gradient (its fixed point
    # makes the m-held-fixed gradient the total one).
    b1, b2, w = random_rbm_params(4, 4, 0.05, seed=11)
    zeta = random_zeta("exponential", 8, 3, seed=11)
    rbm = make_rbm(b1, b2, w)
    zeta_var = tf.Variable(zeta.astype(np.float32))
    with tf.GradientTape() as tape:
      log_p = tf.reduce_sum(priors.make_prior("dvaes_exp", rbm, 10.0).log_prob(
          zeta_var, exact_log_z(rbm)()))
    grads = tape.gradient(log_p, [zeta_var, rbm.b1, rbm.b2, rbm.w])
    expected = central_differences(
        lambda p: np.sum(np_log_marginal(p["zeta"], p["b1"], p["b2"], p["w"], "exponential", 10.0)
                         - np_log_z(p["b1"], p["b2"], p["w"])),
        {"zeta": zeta, "b1": b1, "b2": b2, "w": w})
    for got, key in zip(grads, ("zeta", "b1", "b2", "w")):
      self.assertAllClose(got, expected[key], atol=1e-4, rtol=1e-4, msg=key)


def gi_case(scale, beta, seed, n1=4, n2=4, num=16):
  """A random RBM, ζ near its states, and its Gaussian-integral prior."""
  b1, b2, w = random_rbm_params(n1, n2, scale, seed)
  rng = np.random.default_rng(seed)
  zeta = rng.integers(0, 2, (num, n1 + n2)) + rng.normal(0, 0.4, (num, n1 + n2))
  return b1, b2, w, zeta, priors.make_prior("dvaes_gi", make_rbm(b1, b2, w), beta)


class GaussianIntegralTest(tf.test.TestCase):

  def test_gaussian_integral_log_prob_matches_enumerated_gaussian_mixture(self):
    # Weak couplings keep λ = β; strong ones make λ = 5 + σ_max(W) > β.
    for seed, (scale, beta, n1, n2) in enumerate(
        ((0.1, 40.0, 4, 4), (2.0, 5.0, 4, 4), (1.0, 10.0, 3, 5), (1.5, 10.0, 5, 3))):
      b1, b2, w, zeta, prior = gi_case(scale, beta, seed, n1, n2)
      lam = np_gi_lambda(w, beta)
      self.assertAllClose(prior.lam(), lam, rtol=1e-5)
      self.assertAllClose(prior.min_eigenvalue(),
                          np.linalg.eigvalsh(np.block([[np.zeros((n1, n1)), w],
                                                       [w.T, np.zeros((n2, n2))]])).min(),
                          rtol=1e-5)
      got = prior.log_prob(f32(zeta), f32(np_log_z(b1, b2, w)))
      self.assertAllClose(got, np_gi_log_prob(zeta, b1, b2, w, lam), atol=1e-4, rtol=1e-6)

  def test_gaussian_integral_gradient_matches_finite_differences_at_fixed_lambda(self):
    b1, b2, w, zeta, prior = gi_case(1.0, 10.0, seed=12, num=3)
    lam = np_gi_lambda(w, 10.0)
    zeta_var = tf.Variable(zeta.astype(np.float32))
    rbm = prior.machine
    with tf.GradientTape() as tape:
      log_p = tf.reduce_sum(prior.log_prob(zeta_var, exact_log_z(rbm)()))
    grads = tape.gradient(log_p, [zeta_var, rbm.b1, rbm.b2, rbm.w])
    expected = central_differences(
        lambda p: np.sum(np_gi_log_prob(p["zeta"], p["b1"], p["b2"], p["w"], lam)),
        {"zeta": zeta, "b1": b1, "b2": b2, "w": w})
    for got, key in zip(grads, ("zeta", "b1", "b2", "w")):
      self.assertAllClose(got, expected[key], atol=1e-4, rtol=1e-4, msg=key)

  def test_gaussian_integral_gradients_are_finite_with_zero_couplings(self):
    # Zero W has all singular values equal, where an SVD gradient would be undefined.
    rbm = RBM(4, 4, num_chains=4)
    prior = priors.make_prior("dvaes_gi", rbm, 30.0)
    zeta = tf.Variable(np.random.default_rng(13).normal(0.5, 0.5, (5, 8)).astype(np.float32))
    with tf.GradientTape() as tape:
      log_p = prior.log_prob(zeta, exact_log_z(rbm)())
    grads = tape.gradient(log_p, [zeta, rbm.b1, rbm.b2, rbm.w])
    self.assertAllClose(prior.lam(), 30.0)
    for grad in grads:
      self.assertTrue(np.all(np.isfinite(grad.numpy())))

  def test_gaussian_integral_kl_is_log_q_minus_enumerated_log_p(self):
    b1, b2, w, _, prior = gi_case(1.0, 10.0, seed=14, n1=3, n2=3)
    rng = np.random.default_rng(14)
    logits, delta_mu = rng.normal(0, 2, (5, 6)), rng.normal(0, 0.1, (5, 6))
    scale = np.full(6, 0.25)
    posteriors = [relaxations.posterior("shifted_gaussian", f32(logits[:, s]),
                                        delta_mu=f32(delta_mu[:, s]), scale=f32(scale[s]))
                  for s in (slice(0, 3), slice(3, 6))]
    zetas = [q.sample(seed=[14, i]) for i, q in enumerate(posteriors)]
    zeta = np.concatenate([z.numpy() for z in zetas], -1).astype(np.float64)
    q = special.expit(logits)
    log_q = np.sum(np.logaddexp(np.log1p(-q) + stats.norm.logpdf(zeta, delta_mu, scale),
                                np.log(q) + stats.norm.logpdf(zeta, 1 + delta_mu, scale)), -1)
    log_p = np_gi_log_prob(zeta, b1, b2, w, np_gi_lambda(w, 10.0))
    kl = prior.kl(posteriors, zetas, f32(np_log_z(b1, b2, w)))
    self.assertAllClose(kl, log_q - log_p, atol=1e-4, rtol=1e-5)


class GraphModeTest(tf.test.TestCase):

  def test_every_prior_gives_the_same_values_in_tf_function_as_eagerly(self):
    b1, b2, w = random_rbm_params(3, 3, 1.0, seed=15)
    rbm = make_rbm(b1, b2, w)
    log_z = f32(np_log_z(b1, b2, w))
    logits = f32(np.random.default_rng(15).normal(0, 2, (4, 3)))
    for baseline, layers in [(b, 2) for b in priors.BASELINES] + [("dvae_spike_exp", 1)]:
      family = priors.RELAXATION_OF_BASELINE[baseline]
      kwargs = ({"delta_mu": tf.zeros_like(logits), "scale": 0.25}
                if family == "shifted_gaussian" else {"beta": BETA.get(family, 10.0)})
      prior = priors.make_prior(baseline, rbm, BETA.get(family, 10.0), num_latent_layers=layers)

      def terms(prior=prior, family=family, kwargs=kwargs):
        posteriors = [relaxations.posterior(family, logits, **kwargs),
                      relaxations.posterior(family, -logits, **kwargs)]
        zetas = [q.sample(seed=[16, i]) for i, q in enumerate(posteriors)]
        zeta = tf.concat(zetas, -1)
        return (prior.kl(posteriors, zetas, log_z), prior.log_prob(zeta, log_z),
                prior.discrete_log_prob(tf.round(tf.clip_by_value(zeta, 0, 1)), log_z))

      for eager, graph in zip(terms(), tf.function(terms)()):
        self.assertAllClose(eager, graph, atol=1e-4, rtol=1e-5, msg=baseline)


@pytest.mark.slow
class LargerRBMTest(tf.test.TestCase):

  def test_mean_field_never_exceeds_exact_marginal_on_6_plus_6_rbms(self):
    for baseline in MARGINAL_BASELINES:
      for seed, scale in enumerate((0.1, 0.5, 1.0, 2.0, 4.0)):
        gap = mean_field_gap(baseline, scale, 100 + seed, n1=6, n2=6, num=256)
        self.assertTrue(np.all(gap > -1e-4), msg=f"{baseline} scale {scale}: min gap {gap.min()}")

  def test_gaussian_integral_matches_enumeration_on_6_plus_6_rbms(self):
    for seed, scale in enumerate((0.05, 0.5, 2.0)):
      b1, b2, w, zeta, prior = gi_case(scale, 20.0, 200 + seed, 6, 6, 8)
      got = prior.log_prob(f32(zeta), f32(np_log_z(b1, b2, w)))
      self.assertAllClose(got, np_gi_log_prob(zeta, b1, b2, w, np_gi_lambda(w, 20.0)),
                          atol=1e-4, rtol=1e-6)

  def test_hierarchical_kls_are_unbiased_with_more_samples(self):
    for seed in range(3):
      for baseline, family in (("dvae_spike_exp", "spike_exp"), ("dvaepp_exp", "exponential")):
        errors = hierarchical_errors(baseline, family, seed=300 + seed, num_batches=32,
                                     batch_size=10000)
        for key, (error, bound) in errors.items():
          self.assertTrue(np.all(error < bound), msg=f"{baseline} {key}: {error} vs {bound}")


# --- Priors on a graph (dvae.boltzmann.GraphBoltzmannMachine). ------------------------------

def random_graph_machine(graph, scale, seed):
  """A machine on `graph` with biases ~ N(0, 1), couplings ~ N(0, scale²), and its numpy
  −E(z) over all states [2^N] (from the definition)."""
  rng = np.random.default_rng(seed)
  machine = GraphBoltzmannMachine(graph, num_chains=1)
  machine.biases.assign(rng.normal(0.0, 1.0, machine.num_units))
  machine.couplings.assign(rng.normal(0.0, scale, len(machine.edges)))
  states = all_states(machine.num_units)
  edges = np.array(machine.edges)
  neg_energy = (states @ machine.biases.numpy().astype(np.float64)
                + (states[:, edges[:, 0]] * states[:, edges[:, 1]])
                @ machine.couplings.numpy().astype(np.float64))
  return machine, states, neg_energy


# Non-bipartite: K5 (5 colours) and a 4-coloured Zephyr prefix of 10 units.
GRAPHS = {"complete": lambda: nx.complete_graph(5),
          "zephyr": lambda: graphs.latent_graph("zephyr", 10)}


class GraphPriorTest(tf.test.TestCase):

  def test_analytic_kl_on_a_graph_matches_enumeration_for_one_layer(self):
    for seed, (kind, make_graph) in enumerate(GRAPHS.items()):
      machine, states, neg_energy = random_graph_machine(make_graph(), 1.0, seed)
      log_z = special.logsumexp(neg_energy)
      logits = np.random.default_rng(seed).normal(0, 2, (4, machine.num_units))
      q = special.expit(logits)
      log_q_states = states @ np.log(q).T + (1 - states) @ np.log1p(-q).T  # [2^N, B]
      expected = np.sum(np.exp(log_q_states) * (log_q_states - neg_energy[:, None] + log_z),
                        axis=0)
      posterior = relaxations.posterior("exponential", f32(logits), beta=10.0)
      kl = priors.make_prior("dvaepp_exp", machine, 10.0).kl(
          [posterior], [posterior.sample(seed=[1, 2])], f32(log_z))
      self.assertAllClose(kl, expected, atol=1e-4, rtol=1e-5, msg=kind)

  def test_mean_field_on_a_graph_never_exceeds_and_nears_the_exact_marginal(self):
    for seed, (kind, make_graph) in enumerate(GRAPHS.items()):
      for baseline in MARGINAL_BASELINES:
        family = priors.RELAXATION_OF_BASELINE[baseline]
        beta = BETA[family]
        for scale, tolerance in ((1.0, None), (0.02, 5e-4)):
          machine, states, neg_energy = random_graph_machine(make_graph(), scale, seed)
          zeta = random_zeta(family, machine.num_units, 32, seed)
          log_r0 = np_log_r0(family, zeta, beta)
          exact = special.logsumexp(
              neg_energy[None, :] + (np_log_r0(family, 1 - zeta, beta) - log_r0) @ states.T
              + log_r0.sum(-1, keepdims=True), axis=-1)
          prior = priors.make_prior(baseline, machine, beta)
          gap = exact - prior.log_prob(f32(zeta), f32(0.0)).numpy().astype(np.float64)
          msg = f"{kind} {baseline} scale {scale}"
          self.assertTrue(np.all(gap > -1e-4), msg=f"{msg}: min gap {gap.min()}")
          if tolerance:
            self.assertLess(np.abs(gap).max(), tolerance, msg=msg)

  def test_make_prior_refuses_what_a_graph_does_not_support_in_one_line(self):
    machine = GraphBoltzmannMachine(nx.complete_graph(4), num_chains=1)
    with self.assertRaisesRegex(ValueError, "^dvaes_gi .* singular values of W.$"):
      priors.make_prior("dvaes_gi", machine, 30.0)
    with self.assertRaisesRegex(ValueError, "^dvae_spike_exp with several latent layers"):
      priors.make_prior("dvae_spike_exp", machine, 5.0, num_latent_layers=2)
    self.assertIsInstance(priors.make_prior("dvae_spike_exp", machine, 5.0),
                          priors.AnalyticKLPrior)
