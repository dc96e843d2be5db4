"""Tests of dvae/relaxations.py against independent float64 NumPy/SciPy references.

The references below re-derive every density, CDF and mean of SPEC §2 in float64 from the
formulas alone; quadrature checks that they are consistent with each other, and the library
(float32) is compared with them. Implicit gradients are compared with central finite differences
of the reference inverse CDF, found by bisection at the uniform ρ = F(ζ) the sample corresponds to.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import integrate, special

from dvae import relaxations

# The references evaluate log 0 and 0^{λ−1} = inf at the ends of the support on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")

FLOAT32_FLOOR = 2.0**-24  # PowerSmoothing's floor for its log density (its docstring).
SPIKE_CLIP = 1e-7  # SPEC §2: q clipped to [1e-7, 1 − 1e-7] in spike-and-exp.
BETAS = (1., 5., 30., 100.)
LOGITS = (-6., -1., 0., 1.5, 6.)


# --------------------------------------------------------------------------------------------
# float64 references, written from SPEC §2's formulas.
# --------------------------------------------------------------------------------------------

def ref_smoothing(name, beta, eps=0.05):
  """(pdf, cdf, mean, low, high) of r(ζ|0) in float64."""
  beta = np.float64(beta)
  if name == "exponential":
    norm = 1. - np.exp(-beta)
    return (lambda x: beta * np.exp(-beta * x) / norm,
            lambda x: (1. - np.exp(-beta * np.clip(x, 0., 1.))) / norm,
            1. / beta - np.exp(-beta) / norm, 0., 1.)
  if name == "power":
    lam = 1. / beta
    return (lambda x: lam * x ** (lam - 1.), lambda x: np.clip(x, 0., 1.) ** lam,
            lam / (lam + 1.), 0., 1.)
  if name == "gaussian":
    sd = 1. / np.sqrt(beta)
    return (lambda x: np.exp(-0.5 * (x / sd) ** 2) / (sd * np.sqrt(2. * np.pi)),
            lambda x: special.ndtr(x / sd), 0., -np.inf, np.inf)
  assert name == "uniform_exponential"
  pdf, cdf, mean, _, _ = ref_smoothing("exponential", beta)
  return (lambda x: eps + (1. - eps) * pdf(x),
          lambda x: eps * np.clip(x, 0., 1.) + (1. - eps) * cdf(x),
          eps / 2. + (1. - eps) * mean, 0., 1.)


def ref_gaussian(mu, sd):
  """(log pdf, cdf) of N(μ, σ²)."""
  return (lambda x: -0.5 * ((x - mu) / sd) ** 2 - np.log(sd * np.sqrt(2. * np.pi)),
          lambda x: special.ndtr((x - mu) / sd))


def ref_posterior(name, logits, beta=None, delta_mu=0., scale=None):
  """(pdf, cdf, mean, low, high, log_ratio, log_r0) of q(ζ|x) in float64; arrays broadcast.

  For spike_exp, pdf is the density of the continuous part on ζ > 0 (the atom 1 − q sits at 0).
  """
  q = special.expit(np.float64(logits))
  if name == "spike_exp":
    q = np.clip(q, SPIKE_CLIP, 1. - SPIKE_CLIP)
    beta = np.float64(beta)
    norm = 1. - np.exp(-beta)
    return (lambda x: q * beta * np.exp(beta * (x - 1.)) / norm,
            lambda x: np.where(x < 0., 0., 1. - q + q * (np.exp(beta * (np.clip(x, 0., 1.) - 1.))
                                                          - np.exp(-beta)) / norm),
            q * (1. - (1. / beta - np.exp(-beta) / norm)), 0., 1., None, None)
  if name == "shifted_gaussian":
    log_pdf0, cdf0 = ref_gaussian(delta_mu, scale)
    log_pdf1, cdf1 = ref_gaussian(1. + delta_mu, scale)
    mean = delta_mu + q
    low, high = -np.inf, np.inf
  else:
    pdf0, cdf0, mean0, low, high = ref_smoothing(name, beta)
    log_pdf0 = lambda x: np.log(pdf0(x))
    log_pdf1 = lambda x: np.log(pdf0(1. - x))
    cdf1 = lambda x: 1. - cdf0(1. - x)
    mean = (1. - q) * mean0 + q * (1. - mean0)
  return (lambda x: (1. - q) * np.exp(log_pdf0(x)) + q * np.exp(log_pdf1(x)),
          lambda x: (1. - q) * cdf0(x) + q * cdf1(x), mean, low, high,
          lambda x: log_pdf1(x) - log_pdf0(x), log_pdf0)


def make_posterior(name, logits, beta, delta_mu=None, scale=None):
  logits = tf.constant(logits, tf.float32)
  if name == "shifted_gaussian":
    return relaxations.posterior(name, logits, delta_mu=delta_mu, scale=scale)
  return relaxations.posterior(name, logits, beta=beta)


def bisect(cdf, rho, low, high, iterations=200):
  """Solves cdf(ζ) = ρ elementwise in float64 (cdf nondecreasing, cdf(low) ≤ ρ ≤ cdf(high))."""
  low = np.broadcast_to(np.float64(low), rho.shape).copy()
  high = np.broadcast_to(np.float64(high), rho.shape).copy()
  for _ in range(iterations):
    mid = 0.5 * (low + high)
    below = cdf(mid) < rho
    low = np.where(below, mid, low)
    high = np.where(below, high, mid)
  return 0.5 * (low + high)


def assert_gradients_match(test, grad, fd, zeta, density, name, key):
  """|∂ζ/∂θ − FD| ≤ 1e-3 |FD| + 1e-6 / f(ζ) + 1e-9.

  1e-6 / f is the gradient error that a float32 error of ~10 ulp in F causes (capped at 1e-6/1e-6);
  1e-9 is the float64 bisection's resolution (~1e-16) divided by the step h = 1e-6 times a margin.
  Samples that power smoothing puts below its float32 floor 2⁻²⁴ (or within it of 1) have a true
  gradient of size ≤ 2⁻²⁴ β and are held to 1e-5 absolute.
  """
  floored = (np.minimum(zeta, 1. - zeta) < FLOAT32_FLOOR) if name == "power" else \
      np.zeros_like(zeta, bool)
  error = np.abs(grad - fd)
  bound = 1e-3 * np.abs(fd) + 1e-6 * np.minimum(1. / np.maximum(density, 1e-300), 1e6) + 1e-9
  test.assertTrue(np.all(error[~floored] <= bound[~floored]),
                  msg=f"{name} ∂ζ/∂{key}: worst excess {np.max((error - bound)[~floored])}")
  test.assertTrue(np.all(error[floored] <= 1e-5), msg=f"{name} ∂ζ/∂{key} below the floor")


def ks_statistic(samples, cdf):
  """Kolmogorov–Smirnov distance of float32 samples from a float64 CDF.

  A float32 sample only locates ζ within its neighbouring float32 values (ties at exact 0 or 1 are
  common for sharp smoothings), so the ECDF is compared with F one ulp above / below each sample.
  TensorFlow flushes subnormal results to zero on CPU, so an exact 0 stands for [0, 2⁻¹²⁶).
  """
  x = np.sort(samples.astype(np.float32))
  n = len(x)
  next_up = np.where(x == 0., np.finfo(np.float32).tiny, np.nextafter(x, np.float32(np.inf)))
  above = cdf(next_up.astype(np.float64))
  below = cdf(np.nextafter(x, np.float32(-np.inf)).astype(np.float64))
  i = np.arange(1, n + 1)
  return max(np.max(i / n - above), np.max(below - (i - 1) / n))


def ks_bound(n, num_tests):
  """Critical value √(−ln(α/2m)/2) / √n of m two-sided KS tests at family-wise level α = 1e-3."""
  return np.sqrt(-np.log(1e-3 / (2. * num_tests)) / 2.) / np.sqrt(n)


def posterior_cases(logits=LOGITS, betas=BETAS, delta_mus=(-0.25, 0., 0.2),
                    scales=(0.05, 0.25, 0.6)):
  """(name, logits vector, beta, kw) covering every posterior across β and logits."""
  logits = np.array(logits, np.float64)
  cases = [(name, logits, beta, {})
           for name in ("exponential", "power", "gaussian", "uniform_exponential", "spike_exp")
           for beta in betas]
  cases += [("shifted_gaussian", logits, None, dict(delta_mu=mu, scale=sd))
            for mu in delta_mus for sd in scales]
  return cases


class ReferenceTest(tf.test.TestCase):
  """The references themselves: each density integrates to 1 and to its CDF and mean."""

  def test_reference_densities_integrate_to_one_cdf_and_mean(self):
    for name in relaxations.SMOOTHINGS:
      for beta in BETAS:
        pdf, cdf, mean, low, high = ref_smoothing(name, beta)
        self.assertAllClose(integrate.quad(pdf, low, high, limit=200)[0], 1., atol=1e-9)
        self.assertAllClose(integrate.quad(lambda x: x * pdf(x), low, high, limit=200)[0], mean,
                            atol=1e-9)
        for x in (0.01, 0.3, 0.9):
          self.assertAllClose(integrate.quad(pdf, low, x, limit=200)[0], cdf(x), atol=1e-9)
    for name, logits, beta, kw in posterior_cases():
      for l in logits:
        pdf, cdf, mean, low, high, _, _ = ref_posterior(name, l, beta, **kw)
        atom = cdf(0.) if name == "spike_exp" else 0.
        self.assertAllClose(atom + integrate.quad(pdf, low, high, limit=200)[0], 1., atol=1e-9)
        self.assertAllClose(integrate.quad(lambda x: x * pdf(x), low, high, limit=200)[0], mean,
                            atol=1e-9)
        self.assertAllClose(atom + integrate.quad(pdf, max(low, -50.), 0.4, limit=200)[0],
                            cdf(0.4), atol=1e-9)


class SmoothingTest(tf.test.TestCase):

  def test_cdf_equals_integral_of_density_and_is_zero_and_one_at_the_ends(self):
    # Absolute 1e-6 + relative 1e-5 (float32 CDF against float64 quadrature); worst measured 6.8e-8.
    for name in relaxations.SMOOTHINGS:
      for beta in BETAS:
        r = relaxations.smoothing(name, beta)
        pdf, _, _, low, high = ref_smoothing(name, beta)
        grid = np.float32([-3., -0.5, 1e-6, 0.01, 0.2, 0.5, 0.8, 0.999, 1.5]) if np.isinf(low) \
            else np.float32([1e-6, 0.01, 0.2, 0.5, 0.8, 0.999])
        integral = [integrate.quad(pdf, low, x, limit=200)[0] for x in grid.astype(np.float64)]
        self.assertAllClose(r.cdf(grid), integral, atol=1e-6, rtol=1e-5)
        self.assertEqual(float(r.cdf(r.low)), 0.)
        self.assertEqual(float(r.cdf(r.high)), 1.)

  def test_library_density_integrates_to_one(self):
    # PowerSmoothing floors ζ at 2⁻²⁴ inside its log density (documented), so its density is
    # integrated from the floor and the exact mass below it, R(2⁻²⁴) = 2^{−24/β}, is added.
    for name in relaxations.SMOOTHINGS:
      for beta in (1., 30., 100.):
        r = relaxations.smoothing(name, beta)
        density = lambda x: float(r.prob(np.float32(x)))
        low = FLOAT32_FLOOR if name == "power" else r.low
        below = FLOAT32_FLOOR ** (1. / beta) if name == "power" else 0.
        total = below + integrate.quad(density, max(low, -40.), min(r.high, 40.), limit=200,
                                       epsabs=1e-7)[0]
        self.assertAllClose(total, 1., atol=2e-5)

  def test_log_prob_matches_float64_reference(self):
    # Relative 1e-5 + absolute 1e-5; worst measured 1% of that tolerance.
    for name in relaxations.SMOOTHINGS:
      for beta in BETAS:
        r = relaxations.smoothing(name, beta)
        pdf, _, _, low, _ = ref_smoothing(name, beta)
        grid = np.float32([-2., -0.3, 0., FLOAT32_FLOOR, 1e-4, 0.1, 0.5, 0.9, 1., 2.5]) \
            if np.isinf(low) else np.float32([FLOAT32_FLOOR, 1e-4, 0.1, 0.5, 0.9, 1.])
        if name != "power":
          grid = np.append(grid, np.float32(0.))
        reference = np.log(pdf(grid.astype(np.float64)))
        self.assertAllClose(r.log_prob(grid), reference, rtol=1e-5, atol=1e-5)

  def test_power_log_density_at_zero_is_that_at_the_float32_floor(self):
    for beta in BETAS:
      r = relaxations.smoothing("power", beta)
      lam = 1. / beta
      self.assertAllClose(r.log_prob(0.), np.log(lam) + (lam - 1.) * np.log(FLOAT32_FLOOR),
                          rtol=1e-6)

  def test_samples_follow_cdf_and_mean(self):
    # KS: family-wise α = 1e-3 over the 16 cases (2.28/√n = 0.0161 at n = 20000); worst measured
    # 0.010.
    # Mean: within 4 standard errors.
    n = 20000
    num_tests = len(BETAS) * len(relaxations.SMOOTHINGS)
    for name in relaxations.SMOOTHINGS:
      for i, beta in enumerate(BETAS):
        samples = relaxations.smoothing(name, beta).sample(n, seed=[7, i]).numpy()
        _, cdf, mean, _, _ = ref_smoothing(name, beta)
        self.assertLess(ks_statistic(samples, cdf), ks_bound(n, num_tests), msg=f"{name} β={beta}")
        self.assertAllClose(np.mean(samples), mean, atol=4. * np.std(samples) / np.sqrt(n))
        self.assertAllClose(relaxations.smoothing(name, beta).mean(), mean, rtol=1e-5)

  def test_sample_gradient_to_beta_matches_bisection_finite_differences(self):
    # Tolerance: `assert_gradients_match`; worst measured 1.3% of the bound.
    for name in relaxations.SMOOTHINGS:
      for beta in BETAS:
        beta_t = tf.fill([400], tf.constant(beta, tf.float32))
        with tf.GradientTape() as tape:
          tape.watch(beta_t)
          zeta = relaxations.smoothing(name, beta_t).sample(seed=[3, int(beta)])
        grad = tape.gradient(zeta, beta_t).numpy()
        zeta = zeta.numpy().astype(np.float64)
        rho = ref_smoothing(name, beta)[1](zeta)
        low, high = (-60., 60.) if name == "gaussian" else (0., 1.)
        h = 1e-6 * beta
        fd = (bisect(ref_smoothing(name, beta + h)[1], rho, low, high)
              - bisect(ref_smoothing(name, beta - h)[1], rho, low, high)) / (2. * h)
        assert_gradients_match(self, grad, fd, zeta, ref_smoothing(name, beta)[0](zeta), name,
                               "beta")


class PosteriorTest(tf.test.TestCase):

  def test_cdf_equals_integral_of_density_and_is_zero_and_one_at_the_ends(self):
    # Absolute 1e-6 + relative 1e-5; worst measured 1.3e-7.
    grid = np.float32([0., 1e-6, 0.01, 0.2, 0.5, 0.8, 0.999, 1.])
    for name, logits, beta, kw in posterior_cases():
      q = make_posterior(name, logits[:, None], beta, **kw)
      pdf, cdf, _, low, high, _, _ = ref_posterior(name, logits[:, None], beta, **kw)
      points = np.float32([-1., -0.2, *grid, 1.4, 2.]) if np.isinf(low) else grid
      integral = np.array([[integrate.quad(lambda x: pdf(x)[j, 0], max(low, -40.), x, limit=200)[0]
                            for x in points.astype(np.float64)] for j in range(len(logits))])
      if name == "spike_exp":
        integral += cdf(np.zeros([1]))  # The atom at 0.
      self.assertAllClose(q.cdf(points), integral, atol=1e-6, rtol=1e-5, msg=name)
      ends = np.float32([-np.inf, np.inf]) if np.isinf(low) else np.float32([low, high])
      expected_ends = [[cdf(np.zeros([1]))[j, 0] if name == "spike_exp" else 0., 1.]
                       for j in range(len(logits))]
      self.assertAllClose(q.cdf(ends), expected_ends, atol=1e-7)

  def test_log_prob_and_smoothing_terms_match_float64_reference(self):
    # Relative 1e-5 + absolute 1e-5; worst measured 8% of that tolerance.
    grid = np.float32([FLOAT32_FLOOR, 1e-3, 0.1, 0.5, 0.9, 1. - 2.**-20, 1. - FLOAT32_FLOOR])
    for name, logits, beta, kw in posterior_cases():
      if name == "spike_exp":
        continue
      q = make_posterior(name, logits[:, None], beta, **kw)
      pdf, _, _, low, _, log_ratio, log_r0 = ref_posterior(name, logits[:, None], beta, **kw)
      points = np.float32([-1., -0.1, 0., 1., 1.3, *grid]) if np.isinf(low) else grid
      if name != "power":
        points = np.append(points, np.float32([0., 1.]))
      x = points.astype(np.float64)
      log_q = np.logaddexp(-np.logaddexp(0., logits[:, None]) + log_r0(x),
                           -np.logaddexp(0., -logits[:, None]) + log_r0(x) + log_ratio(x))
      self.assertAllClose(q.log_prob(points), log_q, rtol=1e-5, atol=1e-5, msg=name)
      self.assertAllClose(q.log_ratio(points), log_ratio(x) * np.ones_like(logits[:, None]),
                          rtol=1e-5, atol=1e-5, msg=name)
      self.assertAllClose(q.smoothing_log_prob(points), log_r0(x) * np.ones_like(logits[:, None]),
                          rtol=1e-5, atol=1e-5, msg=name)
      self.assertAllClose(q.conditional_probs(points),
                          special.expit(logits[:, None] + log_ratio(x)), rtol=1e-5, atol=1e-6)
      self.assertAllClose(q.prob(points), pdf(x), rtol=1e-5, atol=1e-6)

  def test_spike_and_exp_log_prob_and_smoothing_terms(self):
    points = np.float32([0., 1e-4, 0.3, 0.9, 1.])
    for beta in BETAS:
      q = make_posterior("spike_exp", np.array(LOGITS)[:, None], beta)
      pdf, cdf, *_ = ref_posterior("spike_exp", np.array(LOGITS)[:, None], beta)
      x = points.astype(np.float64)
      expected = np.where(x > 0., np.log(pdf(x)), np.log(cdf(np.zeros([1]))))
      self.assertAllClose(q.log_prob(points), expected, rtol=1e-5, atol=1e-5)
      self.assertAllEqual(q.conditional_probs(points), np.broadcast_to(x > 0., expected.shape))
      self.assertAllEqual(q.smoothing_log_prob(points) == 0.,
                          np.broadcast_to(x == 0., expected.shape))
      self.assertAllEqual(q.log_ratio(points) > 0., np.broadcast_to(x > 0., expected.shape))

  def test_samples_follow_cdf_and_mean(self):
    # KS: family-wise α = 1e-3 over the 145 cases (2.51/√n = 0.0177 at n = 20000); worst measured
    # 0.011.
    # Mean: within 4 standard errors.
    n = 20000
    cases = posterior_cases()
    num_tests = sum(len(logits) for _, logits, _, _ in cases)
    for k, (name, logits, beta, kw) in enumerate(cases):
      q = make_posterior(name, logits, beta, **kw)
      samples = q.sample(n, seed=[11, k]).numpy()
      self.assertEqual(samples.shape, (n, len(logits)))
      for j, l in enumerate(logits):
        _, cdf, mean, *_ = ref_posterior(name, l, beta, **kw)
        column = samples[:, j]
        self.assertLess(ks_statistic(column, cdf), ks_bound(n, num_tests),
                        msg=f"{name} β={beta} l={l} {kw}")
        self.assertAllClose(np.mean(column), mean, atol=4. * np.std(column) / np.sqrt(n) + 1e-7)
        self.assertAllClose(q.mean()[j], mean, rtol=1e-5, atol=1e-7)

  @pytest.mark.slow
  def test_many_samples_follow_cdf(self):
    # KS: family-wise α = 1e-3 over the 145 cases (2.51/√n = 0.0040 at n = 400000); worst measured
    # 0.0026.
    n = 400000
    cases = posterior_cases()
    num_tests = sum(len(logits) for _, logits, _, _ in cases)
    for k, (name, logits, beta, kw) in enumerate(cases):
      samples = make_posterior(name, logits, beta, **kw).sample(n, seed=[19, k]).numpy()
      for j, l in enumerate(logits):
        cdf = ref_posterior(name, l, beta, **kw)[1]
        self.assertLess(ks_statistic(samples[:, j], cdf), ks_bound(n, num_tests),
                        msg=f"{name} β={beta} l={l} {kw}")

  def test_spike_and_exp_puts_mass_one_minus_q_at_zero(self):
    # Fraction of exact zeros within 4 binomial standard errors of 1 − q.
    n = 20000
    for i, beta in enumerate(BETAS):
      samples = make_posterior("spike_exp", np.array(LOGITS), beta).sample(n, seed=[5, i]).numpy()
      spike = np.clip(special.expit(np.array(LOGITS)), SPIKE_CLIP, 1. - SPIKE_CLIP)
      self.assertAllClose(np.mean(samples == 0., axis=0), 1. - spike,
                          atol=4. * np.sqrt(spike * (1. - spike) / n).max())
      self.assertTrue(np.all((samples >= 0.) & (samples <= 1.)))

  def test_implicit_gradients_match_bisection_finite_differences(self):
    """∂ζ/∂l (and ∂ζ/∂β, ∂ζ/∂δμ, ∂ζ/∂σ) against finite differences of the reference inverse CDF.

    Tolerance: `assert_gradients_match`. Worst measured: 7.4% of the bound (11% on the dense grid);
    worst relative error where |FD| > 1e-3: 2.9e-4 (1.1e-4); below the power floor: 4.3e-6 (4.1e-6)
    absolute.
    """
    self._check_gradients(posterior_cases(), per_case=40, seed=13)

  @pytest.mark.slow
  def test_implicit_gradients_match_finite_differences_on_a_dense_grid(self):
    """As above over logits in [−12, 12], β ∈ [1, 100] and more shifted Gaussians."""
    self._check_gradients(posterior_cases(logits=np.linspace(-12., 12., 9),
                                          betas=(1., 2., 4., 8., 16., 30., 50., 100.),
                                          delta_mus=(-0.25, -0.1, 0., 0.1, 0.25),
                                          scales=(0.05, 0.1, 0.25, 0.6, 1.)),
                          per_case=200, seed=29)

  def _check_gradients(self, cases, per_case, seed):
    for k, (name, logits, beta, kw) in enumerate(cases):
      params = {"logits": np.repeat(logits, per_case)}
      if name == "shifted_gaussian":
        params.update({key: np.full_like(params["logits"], value) for key, value in kw.items()})
      else:
        params["beta"] = np.full_like(params["logits"], beta)
      zeta, grads = sample_with_gradients(name, params, beta, seed=[seed, k])
      self._check_against_finite_differences(name, params, beta, zeta, grads)

  def _check_against_finite_differences(self, name, params, beta, zeta, grads):
    ref = lambda p: ref_posterior(name, p["logits"], p.get("beta", beta), p.get("delta_mu", 0.),
                                  p.get("scale"))
    pdf, cdf, _, low, high, _, _ = ref(params)
    x = zeta.astype(np.float64)
    rho = cdf(x)
    if np.isinf(low):
      low, high = -60., 60.
    for key, grad in grads.items():
      h = 1e-6 * np.maximum(1., np.abs(params[key]))
      plus, minus = dict(params), dict(params)
      plus[key], minus[key] = params[key] + h, params[key] - h
      fd = (bisect(ref(plus)[1], rho, low, high) - bisect(ref(minus)[1], rho, low, high)) / (2 * h)
      # On the spike ζ = 0 the gradient is exactly 0 (ρ < 1 − q strictly there).
      slab = x > 0. if name == "spike_exp" else np.ones_like(x, bool)
      self.assertAllEqual(grad[~slab], np.zeros(np.sum(~slab)))
      assert_gradients_match(self, grad[slab], fd[slab], x[slab], pdf(x)[slab], name, key)

  def test_same_seed_gives_the_same_draw_and_gradient_in_eager_and_tf_function(self):
    for k, (name, logits, beta, kw) in enumerate(posterior_cases()[::4]):
      params = {"logits": logits}
      if name == "shifted_gaussian":
        params.update({key: np.full_like(logits, value) for key, value in kw.items()})
      eager = sample_with_gradients(name, params, beta, seed=[2, k], compiled=False)
      graph = sample_with_gradients(name, params, beta, seed=[2, k], compiled=True)
      self.assertAllEqual(eager[0], graph[0])
      for key in eager[1]:
        self.assertAllClose(eager[1][key], graph[1][key], rtol=1e-6)
      again = sample_with_gradients(name, params, beta, seed=[2, k], compiled=True)
      self.assertAllEqual(graph[0], again[0])

  def test_values_and_gradients_are_finite_at_the_edges(self):
    """Logits ±88, β ∈ {1, 100}, ζ exactly 0 or 1 (bounded families): no NaN or inf."""
    logits = np.float32([-88., -20., 0., 20., 88.])
    cases = [(name, beta, {}) for name in ("spike_exp", "exponential", "power", "gaussian",
                                           "uniform_exponential") for beta in (1., 100.)]
    cases += [("shifted_gaussian", None, dict(delta_mu=mu, scale=sd))
              for mu in (-0.25, 0.25) for sd in (0.05, 1.)]
    for name, beta, kw in cases:
      unbounded = name in ("gaussian", "shifted_gaussian")
      points = np.float32([-3., 0., 0.5, 1., 4.]) if unbounded else \
          np.float32([0., 2.**-126, FLOAT32_FLOOR, 0.5, 1. - FLOAT32_FLOOR, 1.])
      l = tf.constant(logits[:, None])
      zeta = tf.constant(points)
      beta_t = tf.constant(beta if beta else 1.)
      kw_t = {key: tf.constant(value) for key, value in kw.items()}
      with tf.GradientTape(persistent=True) as tape:
        tape.watch([l, zeta, beta_t, *kw_t.values()])
        q = relaxations.posterior(name, l, beta=beta_t if beta else None, **kw_t)
        values = [q.log_prob(zeta), q.prob(zeta), q.cdf(zeta), q.log_ratio(zeta),
                  q.smoothing_log_prob(zeta), q.conditional_probs(zeta)]
        sample = q.sample(500, seed=[17, 1])
        sample_terms = q.log_prob(sample)
      for value in values + [sample, sample_terms]:
        self.assertTrue(np.all(np.isfinite(value)), msg=f"{name} β={beta} {kw}")
        for source in [l, zeta, beta_t, *kw_t.values()]:
          grad = tape.gradient(value, source)
          if grad is not None:
            self.assertTrue(np.all(np.isfinite(grad)), msg=f"{name} β={beta} {kw} gradient")
      if not unbounded:
        self.assertTrue(np.all((sample >= 0.) & (sample <= 1.)))

  def test_discrete_is_the_factorial_bernoulli_with_its_entropy(self):
    logits = np.float32([-88., -3., 0., 2., 88.])
    for name in relaxations.POSTERIORS:
      kw = dict(scale=0.25) if name == "shifted_gaussian" else {}
      q = relaxations.posterior(name, logits, beta=None if kw else 10., **kw)
      p = special.expit(logits.astype(np.float64))
      entropy = -special.xlogy(p, p) - special.xlogy(1. - p, 1. - p)
      self.assertAllClose(q.discrete().entropy(), entropy, atol=1e-6)
      self.assertAllClose(q.discrete().log_prob(np.float32([0, 0, 1, 1, 1])),
                          np.log([1. - p[0], 1. - p[1], p[2], p[3], p[4]]), atol=1e-6)
      self.assertAllEqual(q.logits, logits)

  def test_sample_shape_is_logits_shape_and_parameters_broadcast(self):
    logits = tf.zeros([4, 3])
    q = relaxations.posterior("shifted_gaussian", logits, delta_mu=tf.zeros([3]), scale=0.3)
    self.assertEqual(q.batch_shape, [4, 3])
    self.assertEqual(q.sample(seed=[1, 1]).shape, [4, 3])
    self.assertEqual(q.sample(2, seed=[1, 1]).shape, [2, 4, 3])
    for name in ("spike_exp", "exponential", "power", "gaussian", "uniform_exponential"):
      q = relaxations.posterior(name, logits, beta=tf.fill([3], 5.))
      self.assertEqual(q.sample(seed=[1, 1]).shape, [4, 3])
      self.assertEqual(q.log_ratio(tf.fill([3], 0.3)).shape, [4, 3])

  def test_bad_names_beta_and_keywords_raise_value_error_naming_allowed_values(self):
    with self.assertRaisesRegex(ValueError, "exponential, power, gaussian, uniform_exponential"):
      relaxations.smoothing("laplace", 1.)
    with self.assertRaisesRegex(ValueError, "spike_exp, exponential.*shifted_gaussian"):
      relaxations.posterior("concrete", tf.zeros([2]), beta=1.)
    for beta in (0., -1., float("nan"), None):
      with self.assertRaisesRegex(ValueError, "beta"):
        relaxations.posterior("power", tf.zeros([2]), beta=beta)
      with self.assertRaisesRegex(ValueError, "beta"):
        relaxations.smoothing("exponential", beta)
    with self.assertRaisesRegex(ValueError, "eps"):
      relaxations.smoothing("uniform_exponential", 5., eps=1.5)
    with self.assertRaisesRegex(ValueError, "allowed: \\['eps'\\]"):
      relaxations.posterior("uniform_exponential", tf.zeros([2]), beta=5., epsilon=0.1)
    with self.assertRaisesRegex(ValueError, "scale"):
      relaxations.posterior("shifted_gaussian", tf.zeros([2]), delta_mu=0.)


KINDS = ([("smoothing", name) for name in relaxations.SMOOTHINGS]
         + [("posterior", name) for name in relaxations.POSTERIORS])


def distribution(kind, name, logits, beta, validate_args=False):
  """Smoothing or posterior `name` from tensors; the shifted Gaussian gets δμ = 0.1, σ = β/100."""
  if kind == "smoothing":
    return relaxations.smoothing(name, beta, validate_args=validate_args)
  if name == "shifted_gaussian":
    return relaxations.posterior(name, logits, delta_mu=tf.constant(0.1), scale=beta / 100.,
                                 validate_args=validate_args)
  return relaxations.posterior(name, logits, beta=beta, validate_args=validate_args)


class SupportTest(tf.test.TestCase):
  """Each distribution lives on the support of SPEC §2's table: [0, 1], or ℝ for the Gaussians."""

  def test_log_prob_is_minus_infinity_outside_the_support_with_finite_gradients(self):
    # Before: at ζ = 2 the power mixture gave log q = +12.4 and uniform+exponential +33.1.
    outside = np.float32([-2., -0.5, -2.**-20, 1. + 2.**-23, 1.3, 2.])
    inside = np.float32([0., 2.**-30, 0.5, 1.])
    below, above = outside[:3], outside[3:]
    logits = tf.constant([[-3.], [0.], [4.]])
    beta = tf.constant(30.)
    zeta = tf.constant(np.concatenate([outside, inside]))
    for kind, name in KINDS:
      bounded = name not in ("gaussian", "shifted_gaussian")
      with tf.GradientTape(persistent=True) as tape:
        tape.watch([logits, beta, zeta])
        dist = distribution(kind, name, logits, beta)
        log_prob = dist.log_prob(zeta)
      label = f"{kind} {name}"
      self.assertEqual((dist.low, dist.high), (0., 1.) if bounded else (-np.inf, np.inf))
      values = np.broadcast_to(log_prob, [3, len(zeta)])
      if bounded:
        self.assertAllEqual(values[:, :6], np.full([3, 6], -np.inf), msg=label)
        for method, points, expected in ((dist.prob, outside, 0.), (dist.cdf, below, 0.),
                                         (dist.cdf, above, 1.),
                                         (dist.survival_function, below, 1.),
                                         (dist.survival_function, above, 0.)):
          self.assertAllEqual(np.broadcast_to(method(points), [3, len(points)]),
                              np.full([3, len(points)], expected), msg=f"{label} {method}")
        self.assertAllEqual(tape.gradient(log_prob, zeta)[:6], np.zeros(6), msg=label)
        self.assertTrue(np.all(np.isfinite(values[:, 6:])), msg=label)
      else:
        self.assertTrue(np.all(np.isfinite(values)), msg=label)
      for source in (logits, beta, zeta):
        grad = tape.gradient(log_prob, source)
        if grad is not None:
          self.assertTrue(np.all(np.isfinite(grad)), msg=f"{label} gradient")

  def test_shifted_bounded_smoothing_lives_on_the_union_of_its_components(self):
    # r(ζ|0) truncated exponential on [0, 1], r(ζ|1) = r(ζ − 1|0) on [1, 2]. Relative 1e-5 +
    # absolute 1e-5 against float64; worst measured 2.2e-7.
    logits = np.float32([-1., 2.])
    q = relaxations.OverlappingMixture(logits, relaxations.ExponentialSmoothing(4.),
                                       mirrored=False)
    self.assertEqual((q.low, q.high), (0., 2.))
    x = np.float32([-0.1, 0.3, 0.7, 1.5, 1.9, 2.1])[:, None]
    pdf0 = lambda x: np.where((x >= 0.) & (x <= 1.), 4. * np.exp(-4. * x) / (1. - np.exp(-4.)),
                              0.)
    p = special.expit(logits.astype(np.float64))
    x64 = x.astype(np.float64)
    self.assertAllClose(q.log_prob(x), np.log((1. - p) * pdf0(x64) + p * pdf0(x64 - 1.)),
                        rtol=1e-5, atol=1e-5)


class ValidationTest(tf.test.TestCase):
  """`validate_args` reaches every distribution through `smoothing()` and `posterior()`."""

  def test_invalid_tensor_parameters_raise_with_validate_args_and_pass_silently_without(self):
    logits = tf.zeros([3])
    for kind, name in KINDS:
      for value in (-1., 0., np.nan, np.inf):
        beta = tf.constant(value)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    "`(beta|scale)` must be positive and finite",
                                    msg=f"{kind} {name} {value}"):
          distribution(kind, name, logits, beta, validate_args=True)
        distribution(kind, name, logits, beta)  # The default, validate_args=False, checks nothing.
    for eps in (0., 1., 1.5):
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`eps` must be in \\(0, 1\\)"):
        relaxations.posterior("uniform_exponential", logits, beta=5., eps=tf.constant(eps),
                              validate_args=True)

  def test_invalid_parameters_raise_inside_tf_function(self):
    @tf.function
    def sample(beta):
      return relaxations.posterior("power", tf.zeros([3]), beta=beta, validate_args=True).sample(
          seed=[1, 2])

    self.assertAllInRange(sample(tf.constant(3.)), 0., 1.)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`beta` must be positive"):
      sample(tf.constant(-1.))

  def test_variables_are_checked_at_use(self):
    for build in (lambda b: relaxations.posterior("spike_exp", tf.zeros([3]), beta=b,
                                                  validate_args=True),
                  lambda b: relaxations.posterior("exponential", tf.zeros([3]), beta=b,
                                                  validate_args=True),
                  lambda b: relaxations.smoothing("power", b, validate_args=True)):
      beta = tf.Variable(2.)
      dist = build(beta)
      dist.sample(seed=[1, 1])
      beta.assign(-1.)
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`beta` must be positive"):
        dist.sample(seed=[1, 1])

  def test_points_outside_the_support_raise_with_validate_args(self):
    for kind, name in KINDS:
      dist = distribution(kind, name, tf.zeros([3]), tf.constant(5.), validate_args=True)
      if name in ("gaussian", "shifted_gaussian"):
        self.assertTrue(np.all(np.isfinite(dist.log_prob(40.))))
        continue
      for method in (dist.log_prob, dist.cdf):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "support \\[0.0, 1.0\\]"):
          method(1.5)

  def test_python_number_scale_is_checked_always(self):
    for scale in (0., -0.2, float("nan")):
      with self.assertRaisesRegex(ValueError, "scale"):
        relaxations.posterior("shifted_gaussian", tf.zeros([2]), scale=scale)


class CompositeTensorTest(tf.test.TestCase):
  """The distributions are `CompositeTensor`s, like `tfd.Bernoulli`."""

  def test_distributions_pass_into_and_out_of_tf_function(self):
    @tf.function
    def sample_and_return(dist):
      return dist, dist.sample(2, seed=[4, 5])

    logits = tf.constant([-1., 0.5, 3.])
    for kind, name in KINDS:
      dist = distribution(kind, name, logits, tf.constant(8.))
      returned, sample = sample_and_return(dist)
      self.assertIsInstance(returned, type(dist))
      self.assertAllEqual(sample, dist.sample(2, seed=[4, 5]))
      self.assertAllEqual(returned.log_prob(sample), dist.log_prob(sample))

  def test_parameters_are_traced_inputs_and_a_posterior_can_be_returned(self):
    @tf.function
    def mean(q):
      return q.mean()

    @tf.function
    def build(logits, beta):
      return relaxations.posterior("uniform_exponential", logits, beta=beta)

    first = relaxations.posterior("power", tf.constant([0., 1.]), beta=tf.constant(4.))
    second = relaxations.posterior("power", tf.constant([2., -3.]), beta=tf.constant(9.))
    self.assertAllClose(mean(first), first.mean())
    self.assertAllClose(mean(second), second.mean())
    self.assertEqual(mean.experimental_get_tracing_count(), 1)
    q = build(tf.constant([0.5, -1.]), tf.constant(8.))
    self.assertIsInstance(q, relaxations.OverlappingMixture)
    self.assertAllEqual(q.logits, [0.5, -1.])
    self.assertAllClose(q.smoothing.eps, 0.05)
    self.assertAllClose(q.mean(), relaxations.posterior(
        "uniform_exponential", tf.constant([0.5, -1.]), beta=8.).mean())


class PublicApiTest(tf.test.TestCase):

  def test_draws_are_inverse_cdfs_of_public_stateless_uniforms(self):
    """The noise is `tf.random.stateless_uniform` at seeds from `tfp.random.split_seed` (unsalted).

    TFP's salted seed splitting, which draws differently across TFP versions, plays no part. Each
    draw is checked through the float64 CDF of SPEC §2: F(ζ) equals the uniform it was drawn
    from, to 2e-6 (float32 rounding of ζ times a density ≤ β/(1 − e^{−β}) ≈ 10); worst measured
    3.0e-7.
    """
    seed = tf.constant([3, 9], tf.int32)
    logits = np.float32([-2., 0., 1.5, 5.])
    beta, eps, shape = 10., 0.05, [500, 4]
    q = special.expit(logits.astype(np.float64))
    tiny = np.finfo(np.float32).tiny
    exponential_cdf = ref_smoothing("exponential", beta)[1]

    def uniform(seed, minval=0.):
      return tf.random.stateless_uniform(shape, seed=seed, minval=minval).numpy().astype(np.float64)

    def smoothing_draw(name):
      """ζ₀ = ζ or 1 − ζ, the draw of r(·|0) inside a posterior sample, with z from its uniform."""
      zeta = relaxations.posterior(name, logits, beta=beta).sample(500, seed).numpy()
      z = uniform(bernoulli_seed) < q
      return np.where(z, 1. - zeta.astype(np.float64), zeta)

    bernoulli_seed, smoothing_seed = tfp.random.split_seed(seed)
    self.assertAllClose(exponential_cdf(smoothing_draw("exponential")),
                        uniform(smoothing_seed, tiny), atol=2e-6)
    component_seed, value_seed = tfp.random.split_seed(smoothing_seed)
    zeta0, value = smoothing_draw("uniform_exponential"), uniform(value_seed)
    self.assertAllClose(np.where(uniform(component_seed) < eps, zeta0, exponential_cdf(zeta0)),
                        value, atol=2e-6)
    zeta = relaxations.posterior("spike_exp", logits, beta=beta).sample(500, seed).numpy()
    v = uniform(seed)
    self.assertAllEqual(zeta == 0., v >= q)
    spike_cdf = ref_posterior("spike_exp", logits, beta)[1]
    self.assertAllClose(np.where(v < q, spike_cdf(zeta.astype(np.float64)), 1. - v), 1. - v,
                        atol=2e-6)

  def test_private_tfp_modules_are_imported_in_one_commented_block(self):
    source = pathlib.Path(relaxations.__file__).read_text()
    private = [line for line in source.splitlines() if "tensorflow_probability.python" in line]
    self.assertEqual(private, ["from tensorflow_probability.python.internal import dtype_util",
                               "from tensorflow_probability.python.internal import tensor_util"])


def sample_with_gradients(name, params, beta, seed, compiled=True):
  """One sample per element of params["logits"] and its gradient to each parameter array."""
  tensors = {key: tf.constant(value, tf.float32) for key, value in params.items()}

  def run(tensors):
    with tf.GradientTape() as tape:
      tape.watch(list(tensors.values()))
      logits = tensors["logits"]
      if name == "shifted_gaussian":
        q = relaxations.posterior(name, logits, delta_mu=tensors["delta_mu"],
                                  scale=tensors["scale"])
      else:
        q = relaxations.posterior(name, logits, beta=tensors.get("beta", beta))
      zeta = q.sample(seed=seed)
    return zeta, tape.gradient(zeta, tensors)

  zeta, grads = (tf.function(run) if compiled else run)(tensors)
  return zeta.numpy(), {key: value.numpy() for key, value in grads.items()}
