"""End-to-end properties of the DVAE model, its trainer, its evaluator and its export."""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from scipy.special import logsumexp

import helpers
from dvae import config, data, evaluation, training
from dvae.model import DVAE, iw_log_mean_exp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quiet(_):
  pass


def _fit_epochs(model, dataset, epochs, steps, seed=0, batch_size=20):
  """Fits `epochs` × `steps` steps; returns the epoch means of the loss."""
  batches = data.train_dataset(dataset, batch_size, seed=seed)
  history = model.fit(batches, steps_per_epoch=steps, epochs=epochs, shuffle=False, verbose=0)
  return history.history["loss"]


class TrainingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*itertools.product(config.BASELINES, (1, 3)))
  def test_every_baseline_trains_with_finite_decreasing_loss(self, baseline, k):
    struct = "2-layer-nonlin" if baseline == "dvae_spike_exp" and k == 3 else "1-layer-lin"
    # A long nominal schedule keeps the KL weight near 0 and the learning rate constant, so
    # over a short run the loss is essentially the reconstruction term and must fall.
    hp = helpers.tiny_hparams(self.get_temp_dir(), baseline=baseline, k=k, struct=struct,
                              num_train_iter=1_000_000, base_lr=2e-2)
    dataset = helpers.synthetic_dataset()
    run = training.Run(hp, dataset, log=_quiet)
    self.assertEqual(run.model.trains_iw, baseline.startswith("dvaes") and k > 1)
    losses = _fit_epochs(run.model, dataset, epochs=4, steps=10)
    self.assertTrue(np.all(np.isfinite(losses)), losses)
    self.assertLess(losses[-1], losses[0] - 1.0)
    results = run.final_evaluation()
    with open(os.path.join(run.directory, "results.json")) as f:
      self.assertEqual(json.load(f)["steps"], 40)
    for key in ("val_nll", "test_nll", "val_neg_elbo", "test_neg_elbo", "log_z"):
      self.assertTrue(np.isfinite(results[key]), key)

  def test_same_seed_gives_identical_training_trajectory(self):
    dataset = helpers.synthetic_dataset()
    trajectories = []
    for run in range(2):
      hp = helpers.tiny_hparams(os.path.join(self.get_temp_dir(), str(run)), seed=7,
                                baseline="dvaes_gi", k=2)
      model = training.Run(hp, dataset, log=_quiet).model
      trajectories.append(_fit_epochs(model, dataset, epochs=5, steps=1))
    self.assertAllEqual(trajectories[0], trajectories[1])

  def test_training_step_traces_once(self):
    hp = helpers.tiny_hparams(self.get_temp_dir(), num_train_iter=30, eval_every=15,
                              checkpoint_every_steps=5)
    run = training.Run(hp, helpers.synthetic_dataset(), log=_quiet)
    traces = []
    train_step = run.model.train_step

    def counted(batch):
      traces.append(1)  # Python runs only while tf.function traces.
      return train_step(batch)

    run.model.train_step = counted
    run.fit(verbose=0)
    self.assertEqual(run.step, 30)
    self.assertLen(traces, 1)

  def test_run_resumed_mid_epoch_finishes_with_the_same_chains_and_evaluations(self):
    hp = helpers.tiny_hparams(self.get_temp_dir(), num_train_iter=12, eval_every=12,
                              checkpoint_every_steps=6)
    dataset = helpers.synthetic_dataset()
    first = training.Run(hp, dataset, log=_quiet)
    _fit_epochs(first.model, dataset, epochs=1, steps=7)
    first.save_latest()
    chains = first.model.prior_machine.chains.numpy()
    second = training.Run(hp, dataset, log=_quiet)
    self.assertEqual(second.restore_latest(), 7)
    self.assertAllEqual(second.model.prior_machine.chains.numpy(), chains)
    second.fit(verbose=0)
    self.assertEqual(second.step, 12)
    with open(os.path.join(second.directory, "eval_history.jsonl")) as f:
      self.assertEqual([json.loads(line)["step"] for line in f], [12])
    self.assertEqual(int(second.best_step.numpy()), 12)


class LikelihoodTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dataset = helpers.synthetic_dataset(num_eval=10)
    hp = helpers.tiny_hparams(self.get_temp_dir(), baseline="dvaepp_power")
    self.model = DVAE.from_hparams(hp, self.dataset.train_mean)
    rng = np.random.default_rng(3)
    rbm = self.model.prior_machine
    rbm.w.assign(rng.normal(0, 0.05, rbm.w.shape))
    rbm.b1.assign(rng.normal(0, 0.5, rbm.b1.shape))
    rbm.b2.assign(rng.normal(0, 0.5, rbm.b2.shape))
    self.model.prior_machine.update_log_z("ais", num_betas=200, num_samples=256, seed=[1, 2])

  def test_iw_bound_is_at_least_elbo_for_the_same_samples(self):
    log_w = self.model.discrete_log_weights(tf.constant(self.dataset.valid), 50, [0, 1])
    self.assertAllGreaterEqual(iw_log_mean_exp(log_w) - tf.reduce_mean(
        tf.cast(log_w, tf.float64), axis=-1), 0.0)

  def test_nll_estimate_does_not_increase_with_k(self):
    nll = [evaluation.evaluate(self.model, self.dataset.valid, k, batch_size=10)["nll"]
           for k in (1, 10, 100)]
    elbo = evaluation.evaluate(self.model, self.dataset.valid, 100, batch_size=10)["neg_elbo"]
    # Averaged over 10 images the Monte Carlo noise of each estimate is well under a nat,
    # while the gaps between k = 1, 10, 100 are several nats for an untrained model.
    self.assertGreater(nll[0], nll[1])
    self.assertGreater(nll[1], nll[2])
    self.assertAllClose(elbo, nll[0], atol=3.0)

  def test_chunked_evaluation_equals_one_pass_over_the_same_samples(self):
    images = self.dataset.valid[:4]
    chunked = evaluation.evaluate(self.model, images, 30, batch_size=4, max_rows=4 * 7)
    whole = evaluation.evaluate(self.model, images, 30, batch_size=4, max_rows=4 * 30)
    self.assertTrue(np.isfinite(chunked["nll"]) and np.isfinite(whole["nll"]))
    # Different chunks draw different samples; both are estimates of the same quantity.
    self.assertAllClose(chunked["nll"], whole["nll"], atol=2.0)


class ExactLikelihoodTest(tf.test.TestCase):

  def test_iw_estimate_with_many_samples_matches_enumerated_log_px(self):
    # An RBM prior over 200 latents cannot be enumerated, but the IW estimator does not care
    # how big the prior is: fix q(z|x) so that only the first 8 units vary (all others are
    # pinned by ±88 logits), and the exact log p(x) is a sum over 2^8 configurations.
    dataset = helpers.synthetic_dataset(num_eval=3)
    hp = helpers.tiny_hparams(self.get_temp_dir(), baseline="dvaepp_power")
    model = DVAE.from_hparams(hp, dataset.train_mean)
    rbm = model.prior_machine
    rng = np.random.default_rng(5)
    rbm.w.assign(rng.normal(0, 0.1, rbm.w.shape) * (np.arange(100) < 4)[:, None]
                 * (np.arange(100) < 4)[None, :])
    rbm.b1.assign(np.where(np.arange(100) < 4, rng.normal(0, 0.3, 100), -88.0))
    rbm.b2.assign(np.where(np.arange(100) < 4, rng.normal(0, 0.3, 100), -88.0))
    # Every pinned unit adds log(1 + e^-88) = 0 in float64 terms; the rest is enumerated.
    b1, b2, w = (v.numpy().astype(np.float64)[:4] for v in (rbm.b1, rbm.b2, rbm.w))
    halves = np.array(list(itertools.product([0, 1], repeat=4)), np.float64)
    log_z = logsumexp(halves @ b1[:, None] + (halves @ b2)[None, :]
                      + halves @ w[:, :4] @ halves.T)
    model.prior_machine.set_log_z(log_z)
    encoder = model.encoder_nets[0].layers[-1]
    kernel, bias = encoder.get_weights()
    free = np.zeros(200, bool)
    free[[0, 1, 2, 3, 100, 101, 102, 103]] = True
    kernel[:, ~free] = 0.0
    kernel[:, free] *= 0.05
    bias[~free] = -88.0
    encoder.set_weights([kernel, bias])
    # A mild prior and a decoder that depends mildly on z keep the relative variance v of the
    # importance weights under 1, so the estimator's standard deviation √(v/k) and downward
    # bias v/(2k) at k = 10,000 are far below the tolerance.
    decoder = model.decoder_net.layers[-1]
    kernel, bias = decoder.get_weights()
    decoder.set_weights([0.1 * kernel, bias])

    x = dataset.valid
    states = np.array(list(itertools.product([0, 1], repeat=8)), np.float32)
    z = np.zeros([256, 200], np.float32)
    z[:, free] = states
    log_prior = -rbm.energy(z).numpy().astype(np.float64) - rbm.log_z.numpy()
    for image in x:
      log_px_z = model.log_likelihood(np.repeat(image[None], 256, 0), z).numpy()
      exact = logsumexp(log_prior + log_px_z)
      estimate = -evaluation.evaluate(model, image[None], 10_000, batch_size=1)["nll"]
      self.assertAllClose(estimate, exact, atol=0.02)


class ExportTest(tf.test.TestCase):

  def test_saved_model_reproduces_outputs_in_a_fresh_process(self):
    from dvae import export  # pylint: disable=g-import-not-at-top
    dataset = helpers.synthetic_dataset(num_eval=5)
    hp = helpers.tiny_hparams(self.get_temp_dir(), baseline="dvaes_gi", struct="2-layer-nonlin")
    model = DVAE.from_hparams(hp, dataset.train_mean)
    model.prior_machine.update_log_z("ais", num_betas=50, num_samples=64, seed=[0, 0])
    path = os.path.join(self.get_temp_dir(), "export")
    export.export_model(model, path)
    with self.assertRaises(export.ExportDirExistsError):
      export.export_model(model, path)

    z = (np.random.default_rng(0).random([3, 400]) < 0.5).astype(np.float32)
    expected = {
        "decode": model.likelihood.mean(model.decode(z)).numpy(),
        "log_likelihood": iw_log_mean_exp(
            model.discrete_log_weights(dataset.valid, 7, [1, 2])).numpy(),
        "logits_1": model.encode(dataset.valid, tf.constant([3, 4]),
                                 discrete=True)[0][1].logits.numpy(),
    }
    np.savez(os.path.join(self.get_temp_dir(), "inputs.npz"), z=z, x=dataset.valid)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({path!r})
        d = np.load({os.path.join(self.get_temp_dir(), 'inputs.npz')!r})
        np.savez({os.path.join(self.get_temp_dir(), 'outputs.npz')!r},
                 decode=m.decode(d['z']).numpy(),
                 log_likelihood=m.log_likelihood(d['x'], 7, [1, 2]).numpy(),
                 logits_1=m.encode(d['x'], [3, 4])['logits_1'].numpy(),
                 sample=m.sample(6, [0, 1]).numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    outputs = np.load(os.path.join(self.get_temp_dir(), "outputs.npz"))
    for name, value in expected.items():
      self.assertAllClose(outputs[name], value, rtol=1e-5, atol=1e-5)
    self.assertEqual(outputs["sample"].shape, (6, 784))
    self.assertAllInRange(outputs["sample"], 0.0, 1.0)


if __name__ == "__main__":
  tf.test.main()
