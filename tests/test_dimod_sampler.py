"""The dimod adapter against exact enumeration (needs requirements-dwave.txt)."""

import json
import os
import re

import dimod
import numpy as np
import pytest
import tensorflow as tf
from dwave.samplers import SimulatedAnnealingSampler
from scipy.special import logsumexp

from dvae import bqm as bqm_lib
from dvae import samplers
from dvae.samplers import DimodSampler
from test_cli import TINY, run_cli
from test_rbm import all_states, joint_log_weights, random_rbm, total_variation_and_bound


def fixed_temperature_annealer(beta, num_sweeps):
  """Simulated annealing held at inverse temperature `beta` with heat-bath (Gibbs) flips."""
  return dict(beta_range=[beta, beta], num_sweeps=num_sweeps,
              proposal_acceptance_criteria="Gibbs")


def exact_samples(rbm, inverse_temperature, num_samples, seed):
  """Independent draws of p_β(z) ∝ e^{−βE(z)} by enumerating every joint state."""
  log_weights = joint_log_weights(rbm, inverse_temperature).ravel()
  states = all_states(rbm.num_units)
  index = np.random.default_rng(seed).choice(
      len(states), num_samples, p=np.exp(log_weights - logsumexp(log_weights)))
  return states[index]


class BinaryQuadraticModelTest(tf.test.TestCase):

  def test_bqm_energy_is_the_rbm_energy_on_every_state(self):
    rbm = random_rbm(3, 4, 1.0)
    bqm = bqm_lib.binary_quadratic_model(rbm.biases.numpy(), rbm.edges, rbm.couplings.numpy())
    self.assertEqual(bqm.vartype, dimod.BINARY)
    self.assertEqual(bqm.offset, 0.0)
    states = all_states(rbm.num_units)
    energies = bqm.energies((states.astype(np.int8), list(range(rbm.num_units))))
    self.assertAllClose(energies, -joint_log_weights(rbm).ravel(), atol=1e-5)


class ExactSamplerWithAutoScale(dimod.Sampler):
  """Exact draws of e^{−β_q E_BQM} (by enumeration) for a small BQM, like a QPU's at an unknown
  β_q: it declares `auto_scale`, on unless told, which first divides the BQM by its largest
  |coefficient|. It records every `auto_scale` it receives."""

  parameters = {"num_reads": [], "seed": [], "auto_scale": []}
  properties = {}

  def __init__(self, inverse_temperature):
    self.inverse_temperature = inverse_temperature
    self.received = []

  def sample(self, bqm, num_reads=1, seed=None, auto_scale=True):
    self.received.append(auto_scale)
    variables = list(bqm.variables)
    if auto_scale:
      bqm = bqm.copy()
      bqm.normalize()
    states = all_states(len(variables)).astype(np.int8)
    log_weights = -self.inverse_temperature * bqm.energies((states, variables))
    index = np.random.default_rng(seed).choice(
        len(states), num_reads, p=np.exp(log_weights - logsumexp(log_weights)))
    return dimod.SampleSet.from_samples_bqm((states[index], variables), bqm)


def estimates_over_calls(sampler, rbm, num_calls):
  """Calls the adapter `num_calls` times on `rbm`; returns each call's estimate β_{s,t} β̂_t of
  the sampler's inverse temperature and the running β_s after each call."""
  single, running = [], []
  for t in range(num_calls):
    sampler.draw(rbm.biases.numpy(), rbm.edges, rbm.couplings.numpy(), rbm.num_chains, [0, t])
    single.append(sampler.used_inverse_temperature * sampler.draws_inverse_temperature)
    running.append(sampler.inverse_temperature)
  return np.array(single), np.array(running)


class DimodSamplerTest(tf.test.TestCase):

  def test_an_auto_scaling_sampler_is_told_not_to_and_its_temperature_is_found(self):
    """β_q = 2: the adapter passes auto_scale=False, so β_s settles within 4 standard errors of
    β_q. Told auto_scale=True by the user (passed on as given), the same sampler undoes the
    1/β_s scaling and β_s walks off: more than 0.5 from β_q after 10 calls."""
    rbm = random_rbm(6, 6, 1.0, num_chains=2000)
    sampler = ExactSamplerWithAutoScale(2.0)
    adapter = DimodSampler(sampler, estimate_inverse_temperature=True)
    _, running = estimates_over_calls(adapter, rbm, 10)
    self.assertEqual(sampler.received, [False] * 10)
    self.assertLess(abs(running[-1] - 2.0), 4 * adapter.inverse_temperature_stderr)
    self.assertLess(np.max(np.abs(running - 2.0)), 0.2)

    scaling = ExactSamplerWithAutoScale(2.0)
    adapter = DimodSampler(scaling, estimate_inverse_temperature=True, auto_scale=True)
    _, running = estimates_over_calls(adapter, rbm, 10)
    self.assertEqual(scaling.received, [True] * 10)
    self.assertGreater(abs(running[-1] - 2.0), 0.5)

  def test_the_running_inverse_temperature_converges_and_jitters_less_than_one_call(self):
    """β_q = 2, 20 calls of 300 draws: the running β_s ends within 4 of its standard errors of
    β_q, that standard error is the single call's / √20 (within a factor 1.5), and β_s moves
    over the last 10 calls by less than a third of the single calls' spread."""
    rbm = random_rbm(6, 6, 1.0, num_chains=300)
    adapter = DimodSampler(ExactSamplerWithAutoScale(2.0), estimate_inverse_temperature=True)
    single, running = estimates_over_calls(adapter, rbm, 20)
    single_stderr = adapter.used_inverse_temperature * adapter.draws_inverse_temperature_stderr
    self.assertLess(abs(running[-1] - 2.0), 4 * adapter.inverse_temperature_stderr)
    self.assertAllClose(adapter.inverse_temperature_stderr * np.sqrt(20), single_stderr,
                        rtol=0.5)
    self.assertLess(np.ptp(running[10:]), np.std(single) / 3)

  def test_simulated_annealing_at_fixed_temperature_draws_the_exact_rbm_law(self):
    """TV to enumeration on 6 + 6 units below 1.5 × an exact sampler's expected TV (≈ 0.07).

    Also at β_s = 0.5, where the adapter must hand the sampler the BQM scaled by 1/β_s.
    """
    num_chains = 20000
    for beta in (1.0, 0.5):
      rbm = random_rbm(6, 6, 1.0, num_chains=num_chains, sampler=DimodSampler(
          SimulatedAnnealingSampler(), beta, **fixed_temperature_annealer(beta, 100)))
      rbm.train_log_z(tf.constant([0, 1]))
      tv, bound = total_variation_and_bound(rbm.chains.numpy(), joint_log_weights(rbm).ravel())
      self.assertLess(tv, bound)
      self.assertAllClose(rbm.sampler.used_inverse_temperature, beta)
      # The test has power: one sweep from random states is still far from p.
      one_sweep = random_rbm(6, 6, 1.0, num_chains=num_chains, sampler=DimodSampler(
          SimulatedAnnealingSampler(), beta, **fixed_temperature_annealer(beta, 1)))
      one_sweep.train_log_z(tf.constant([0, 1]))
      tv, _ = total_variation_and_bound(one_sweep.chains.numpy(), joint_log_weights(rbm).ravel())
      self.assertGreater(tv, 1.5 * bound)

  def test_a_step_draws_the_same_states_eagerly_and_in_tf_function(self):
    rbms = [random_rbm(5, 4, 1.0, num_chains=30, sampler=DimodSampler(
        SimulatedAnnealingSampler(), **fixed_temperature_annealer(1.0, 5))) for _ in range(2)]
    eager = rbms[0].train_log_z(tf.constant([3, 4]))
    graph = tf.function(rbms[1].train_log_z)(tf.constant([3, 4]))
    self.assertAllClose(eager, graph)
    self.assertAllEqual(rbms[0].chains, rbms[1].chains)
    self.assertFalse(rbms[0].supports_jit)

  def test_estimated_temperature_calibrates_a_too_cold_sampler(self):
    """A sampler at β_s = 2 unknown to the adapter: after one call the BQM is rescaled so that
    the draws come out at β ≈ 1 relative to the prior."""
    sampler = DimodSampler(SimulatedAnnealingSampler(), estimate_inverse_temperature=True,
                           **fixed_temperature_annealer(2.0, 50))
    rbm = random_rbm(6, 6, 1.0, num_chains=4000, sampler=sampler)
    rbm.train_log_z(tf.constant([0, 1]))
    self.assertEqual(sampler.used_inverse_temperature, 1.0)
    self.assertLess(abs(sampler.draws_inverse_temperature - 2.0),
                    4 * sampler.draws_inverse_temperature_stderr)
    rbm.train_log_z(tf.constant([0, 2]))
    self.assertLess(abs(sampler.draws_inverse_temperature - 1.0),
                    4 * sampler.draws_inverse_temperature_stderr + 0.05)
    self.assertEqual(set(sampler.summaries()),
                     {"sampler_inverse_temperature", "draws_inverse_temperature"})

  def test_config_names_the_sampler_class_and_rebuilds_it(self):
    sampler = DimodSampler(SimulatedAnnealingSampler(), 0.5, num_sweeps=7)
    config = random_rbm(2, 3, 1.0, sampler=sampler).get_config()["sampler"]
    self.assertEqual(json.loads(json.dumps(config)), config)
    rebuilt = samplers.get(config)
    self.assertIsInstance(rebuilt.sampler, SimulatedAnnealingSampler)
    self.assertEqual(rebuilt.get_config(), config)

  def test_bad_arguments_are_refused_in_one_line(self):
    for args, kwargs, expected in (
        (["dwave.samplers.NoSuchSampler"], {}, "not an importable dimod.Sampler"),
        (["numpy.ndarray"], {}, "not an importable dimod.Sampler"),
        ([object()], {}, "dimod.Sampler"),
        ([SimulatedAnnealingSampler()], {"sweeps": 3}, "no parameter 'sweeps'"),
        ([SimulatedAnnealingSampler()], {"num_reads": 3}, "set by the adapter"),
        ([SimulatedAnnealingSampler(), 0.0], {}, "inverse_temperature"),
        (["dimod.TrackingComposite"], {}, "without arguments"),
    ):
      with self.assertRaisesRegex(ValueError, expected):
        # A sampler given by its path is imported at its first use (`sampler`), not before.
        DimodSampler(*args, **kwargs).sampler  # pylint: disable=expression-not-assigned


class EffectiveTemperatureTest(tf.test.TestCase):

  def test_pseudo_likelihood_recovers_a_known_inverse_temperature_from_exact_samples(self):
    """β̂ of 20,000 exact draws of p_β within 4 sandwich standard errors of β (about ±0.03)."""
    rbm = random_rbm(6, 6, 1.0)
    for beta in (0.5, 1.0, 2.0):
      states = exact_samples(rbm, beta, 20000, seed=int(10 * beta))
      estimate, stderr = bqm_lib.pseudo_likelihood_inverse_temperature(
          states, rbm.biases.numpy(), rbm.edges, rbm.couplings.numpy())
      self.assertLess(stderr, 0.05 * beta)
      self.assertLess(abs(estimate - beta), 4 * stderr)

  def test_draws_against_their_fields_have_inverse_temperature_zero(self):
    rbm = random_rbm(6, 6, 1.0)
    states = exact_samples(rbm, -1.0, 5000, seed=0)
    estimate, _ = bqm_lib.pseudo_likelihood_inverse_temperature(
        states, rbm.biases.numpy(), rbm.edges, rbm.couplings.numpy())
    self.assertEqual(estimate, 0.0)


class CommandLineTest(tf.test.TestCase):

  @pytest.mark.slow  # A minute on two cores; .ci/run runs it.
  def test_run_with_a_dimod_sampler_writes_finite_results(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli([
        "--hparams=quickstart", f"--log_dir={log_dir}", "--num_train_iter=4", "--eval_every=4",
        *(arg for arg in TINY if not arg.startswith("--sampler")), "--sampler=dimod",
        "--dimod_sampler=dwave.samplers.SimulatedAnnealingSampler",
        '--dimod_sampler_args={"num_sweeps": 20, "beta_range": [1, 1]}',
        "--estimate_inverse_temperature"])
    self.assertEqual(result.returncode, 0, result.stderr)
    run = re.search(r"^new run in (\S+)$", result.stdout, re.M).group(1)
    with open(os.path.join(run, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(results["steps"], 4)
    self.assertTrue(np.isfinite(results["test_nll"]))
    self.assertEqual(results["hparams"]["dimod_sampler"],
                     "dwave.samplers.SimulatedAnnealingSampler")

  def test_unusable_dimod_hparams_are_refused_in_one_line(self):
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    for args, expected in (
        (["--sampler=dimod"], "needs dimod_sampler"),
        (["--sampler=dimod", "--dimod_sampler=dwave.samplers.SimulatedAnnealingSampler",
          "--dimod_sampler_args=[1]"], "JSON object"),
        (["--sampler=pcd", "--estimate_inverse_temperature"], "sampler=dimod only"),
    ):
      result = run_cli([f"--log_dir={log_dir}", *args])
      self.assertEqual(result.returncode, 2, result.stderr)
      self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
      self.assertIn(expected, result.stderr)
      self.assertFalse(os.path.exists(log_dir))


if __name__ == "__main__":
  tf.test.main()
