"""DVAE from parts, and the library behaviours of issue #21: pieces used alone agree with the
whole, Keras's arguments are honoured or refused in one line, and the inputs a user brings work."""

import os
import pickle

import keras
import numpy as np
import tensorflow as tf

import helpers
from dvae import config, likelihoods, networks, relaxations
from dvae.boltzmann import GraphBoltzmannMachine
from dvae.model import DVAE
from dvae.rbm import RBM


def _model(log_dir, **overrides):
  hparams = helpers.tiny_hparams(log_dir, **overrides)
  return DVAE.from_hparams(hparams, helpers.synthetic_dataset().train_mean)


def _images(num=40, seed=0):
  return helpers.synthetic_dataset(num_train=num, seed=seed).train


def _composed(num_dims=12, seed=None, relaxation="power", **kwargs):
  """A DVAE# from unseeded Dense layers and an RBM of 4 + 4 units."""
  encoder = keras.Sequential([keras.layers.Dense(16, "tanh"), keras.layers.Dense(8)])
  decoder = keras.Sequential([keras.layers.Dense(16, "tanh"), keras.layers.Dense(num_dims)])
  return DVAE(encoder, decoder, RBM(4, 4, num_chains=16, num_sweeps=2), num_dims,
              relaxation=relaxation, beta=30.0, seed=seed, **kwargs)


class CompositionTest(tf.test.TestCase):

  def test_hparams_builder_and_constructor_give_the_same_model(self):
    model = _model(self.get_temp_dir())
    clone = DVAE.from_config(model.get_config())
    for mine, theirs in zip(model.variables, clone.variables):
      self.assertAllEqual(mine, theirs, msg=mine.path)
    x = tf.constant(_images(10))
    self.assertAllEqual(model.discrete_log_weights(x, 3, [1, 2]),
                        clone.discrete_log_weights(x, 3, [1, 2]))

  def test_composed_model_saves_and_loads(self):
    model = _composed()
    x = (np.random.default_rng(0).random([40, 12]) < 0.5).astype(np.float32)
    model.compile(keras.optimizers.Adam(1e-2), eval_iw_samples=5)
    model.fit(x, batch_size=20, epochs=1, verbose=0)
    path = os.path.join(self.get_temp_dir(), "composed.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    self.assertAllEqual(loaded.discrete_log_weights(x, 3, [1, 2]),
                        model.discrete_log_weights(x, 3, [1, 2]))
    restored = _composed()
    tf.train.Checkpoint(model=model).write(os.path.join(self.get_temp_dir(), "ckpt"))
    tf.train.Checkpoint(model=restored).read(
        os.path.join(self.get_temp_dir(), "ckpt")).assert_existing_objects_matched()
    self.assertAllEqual(restored.discrete_log_weights(x, 3, [1, 2]),
                        model.discrete_log_weights(x, 3, [1, 2]))

  def test_graph_machine_is_a_prior_part(self):
    import networkx as nx  # pylint: disable=g-import-not-at-top
    encoder = keras.Sequential([keras.layers.Dense(6)])
    decoder = keras.Sequential([keras.layers.Dense(10)])
    machine = GraphBoltzmannMachine(nx.cycle_graph(6), num_chains=8, num_sweeps=2)
    model = DVAE(encoder, decoder, machine, 10, relaxation="dvaes_exp", beta=10.0, seed=0)
    x = (np.random.default_rng(0).random([8, 10]) < 0.5).astype(np.float32)
    model.compile(eval_iw_samples=3)
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    self.assertAllEqual(model.prior_machine.chains.shape, (8, 6))

  def test_parts_of_the_wrong_width_are_refused_in_one_line(self):
    encoder = keras.Sequential([keras.layers.Dense(5)])
    decoder = keras.Sequential([keras.layers.Dense(12)])
    with self.assertRaisesRegex(ValueError, "encoder 0 gives 5 outputs"):
      DVAE(encoder, decoder, RBM(4, 4), 12, beta=30.0)
    with self.assertRaisesRegex(ValueError, "split evenly"):
      DVAE([encoder] * 3, decoder, RBM(4, 4), 12, beta=30.0)
    with self.assertRaisesRegex(ValueError, "unknown relaxation 'wavy'"):
      DVAE(encoder, decoder, RBM(4, 4), 12, relaxation="wavy", beta=30.0)
    with self.assertRaisesRegex(TypeError, "prior must be a dvae.boltzmann.BoltzmannMachine"):
      DVAE(encoder, decoder, "rbm", 12, beta=30.0)

  def test_hparams_alone_get_a_clear_error_and_dicts_are_resolved(self):
    with self.assertRaisesRegex(TypeError, r"DVAE.from_hparams\(hparams, train_mean\)"):
      DVAE(config.HParams())
    with self.assertRaisesRegex(TypeError, r"DVAE.from_hparams"):
      DVAE({"struct": "1-layer-lin"})
    with self.assertRaisesRegex(ValueError, "needs train_mean"):
      DVAE.from_hparams(config.HParams())
    mean = np.full(784, 0.3, np.float32)
    model = DVAE.from_hparams({"struct": "1-layer-lin", "num_chains": 10}, mean)
    self.assertEqual(model.prior_machine.num_units, 200)
    unresolved = DVAE.from_hparams(config.HParams(struct="1-layer-lin", num_chains=10), mean)
    self.assertEqual(unresolved.beta, model.beta)


class SmoothingObjectTest(tf.test.TestCase):
  """A relaxation given as a smoothing object r(ζ|z=0) with parameters of the user's."""

  def test_a_smoothing_object_trains_the_iw_bound_and_round_trips_through_a_keras_file(self):
    smoothing = relaxations.UniformExponentialSmoothing(beta=12.0, eps=0.1)
    model = _composed(num_dims=784, seed=0, relaxation=smoothing, k=3)
    self.assertTrue(model.trains_iw)
    self.assertIsNone(model.beta)
    # The posterior is the mirrored mixture of exactly this smoothing.
    q = model.posterior(0, tf.zeros([2, 4]))
    self.assertIsInstance(q, relaxations.OverlappingMixture)
    zeta = tf.constant([[0.05, 0.5, 0.9, 0.99]] * 2)
    expected = np.log(0.5 * np.exp(smoothing.log_prob(zeta)) +
                      0.5 * np.exp(smoothing.log_prob(1.0 - zeta)))
    self.assertAllClose(q.log_prob(zeta), expected, rtol=1e-5)
    model.compile(keras.optimizers.Adam(1e-2), eval_iw_samples=5)
    images = _images(num=100)
    model.fit(images, batch_size=50, epochs=1, verbose=0)
    nll = model.evaluate(images, batch_size=100, verbose=0)[0]
    self.assertTrue(np.isfinite(nll))
    path = os.path.join(self.get_temp_dir(), "smoothing.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    self.assertIsInstance(loaded.smoothing, relaxations.UniformExponentialSmoothing)
    self.assertAllClose(loaded.smoothing.parameters["eps"], 0.1)
    self.assertEqual(loaded.evaluate(images, batch_size=100, verbose=0)[0], nll)

  def test_other_objects_and_crafted_configurations_are_refused(self):
    with self.assertRaisesRegex(ValueError, "smoothing object"):
      _composed(relaxation=object())
    with self.assertRaisesRegex(ValueError, "not a smoothing configuration"):
      relaxations.smoothing_from_config({"class_name": "os.system", "parameters": {}})
    with self.assertRaisesRegex(ValueError, "not a smoothing configuration"):
      relaxations.smoothing_from_config({"class_name": "PowerSmoothing",
                                         "parameters": {"beta": "30"}})


class PiecesTest(tf.test.TestCase):

  def test_encoder_alone_centres_its_input_and_the_likelihood_owns_the_bias(self):
    model = _model(self.get_temp_dir())
    x = tf.constant(_images(5))
    posteriors, _ = model.encode(x, 3)
    self.assertAllEqual(model.encoder_0(x), posteriors[0].logits)
    self.assertIsInstance(model.encoder_0.layers[0], networks.Offset)
    z = tf.zeros([1, 200])
    mean = np.clip(helpers.synthetic_dataset().train_mean, 0.001, 0.999)
    self.assertAllClose(model.likelihood.mean(model.decoder_net(z))[0],
                        tf.sigmoid(model.decoder_net.layers[-1].bias + np.log(mean / (1 - mean))))

  def test_encode_takes_an_int_seed(self):
    model = _model(self.get_temp_dir())
    x = tf.constant(_images(5))
    self.assertAllEqual(model.encode(x, 3)[1][0], model.encode(x, [3, 0])[1][0])

  def test_generate_beyond_the_chains_is_refused_and_sample_draws_any_number(self):
    model = _model(self.get_temp_dir(), num_chains=16)
    self.assertEqual(model.generate(16).shape, (16, 784))
    with self.assertRaisesRegex(ValueError, r"at most 16 or draw more with sample\(100\)"):
      model.generate(100)
    self.assertEqual(model.sample(100, num_sweeps=2, seed=[0, 1]).shape, (100, 784))

  def test_objective_terms_leave_the_chains_alone(self):
    model = _model(self.get_temp_dir())
    chains = model.prior_machine.chains.numpy()
    terms = model.objective_terms(tf.constant(_images(5)), tf.constant([1, 2]), 1.0)
    self.assertEqual(terms["bound"].shape, (5,))
    self.assertAllEqual(model.prior_machine.chains, chains)


class KerasArgumentsTest(tf.test.TestCase):

  def test_evaluate_returns_nll_and_neg_elbo(self):
    model = _model(self.get_temp_dir())
    model.compile(eval_iw_samples=3)
    model.prior_machine.set_log_z(model.prior_machine.log_z.numpy())
    nll, neg_elbo = model.evaluate(_images(20), batch_size=10, verbose=0)
    self.assertGreaterEqual(neg_elbo, nll)
    self.assertEqual(model.metrics_names.count("loss"), 1)

  def test_loss_and_metrics_are_refused_at_compile(self):
    model = _model(self.get_temp_dir())
    with self.assertRaisesRegex(ValueError, "takes no loss"):
      model.compile(loss="mse")
    with self.assertRaisesRegex(ValueError, "takes no metrics"):
      model.compile(metrics=["accuracy"])

  def test_mixed_precision_is_refused_at_compile(self):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
      model = _composed(seed=0)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    with self.assertRaisesRegex(ValueError, "mixed precision"):
      model.compile()

  def test_zero_sample_weights_remove_examples_from_the_gradient(self):
    x = _images(40)
    weights = np.zeros(40, np.float32)
    weights[::5] = 1.0
    garbage = x.copy()
    garbage[weights == 0] = 1.0 - garbage[weights == 0]
    trained = []
    for images in (x, garbage):
      model = _model(self.get_temp_dir())
      model.compile(keras.optimizers.Adam(1e-2), eval_iw_samples=2)
      model.fit(images, sample_weight=weights, batch_size=20, epochs=1, shuffle=False,
                verbose=0)
      trained.append(model.decoder_net.get_weights()[0])
    self.assertAllEqual(trained[0], trained[1])
    unweighted = _model(self.get_temp_dir())
    unweighted.compile(keras.optimizers.Adam(1e-2), eval_iw_samples=2)
    unweighted.fit(x, batch_size=20, epochs=1, shuffle=False, verbose=0)
    self.assertNotAllClose(unweighted.decoder_net.get_weights()[0], trained[0])

  def test_evaluate_weighs_examples(self):
    model = _model(self.get_temp_dir())
    model.compile(eval_iw_samples=4)
    model.prior_machine.set_log_z(model.prior_machine.log_z.numpy())
    x = _images(10)
    weights = np.arange(10, dtype=np.float32)
    nll, _ = model.evaluate(x, sample_weight=weights, batch_size=10, verbose=0)
    per_example = -model.discrete_log_weights(tf.constant(x), 4, tf.constant([1, 0]))
    from dvae.model import iw_log_mean_exp  # pylint: disable=g-import-not-at-top
    per_example = -iw_log_mean_exp(-per_example).numpy()
    self.assertAllClose(nll, np.sum(weights * per_example) / weights.sum(), rtol=1e-5)

  def test_epoch_loss_is_a_mean_over_examples(self):
    model = _model(self.get_temp_dir())
    model.compile(eval_iw_samples=2)
    model.fit(_images(50), batch_size=20, epochs=1, verbose=0)
    self.assertEqual(float(model._trackers["loss"].count.numpy()), 50.0)  # pylint: disable=protected-access

  def test_set_random_seed_fixes_the_initial_weights_of_a_composed_model(self):
    weights = []
    for seed in (1, 2, 1):
      keras.utils.set_random_seed(seed)
      model = _composed()
      weights.append((model.encoder_0.get_weights()[0], model.seed))
    self.assertAllEqual(weights[0][0], weights[2][0])
    self.assertEqual(weights[0][1], weights[2][1])
    self.assertNotAllClose(weights[0][0], weights[1][0])

  def test_recompiling_keeps_the_warm_up_and_the_steps_noise_going(self):
    from dvae.model import kl_warm_up  # pylint: disable=g-import-not-at-top
    model = _model(self.get_temp_dir())
    model.compile(keras.optimizers.Adam(1e-3), kl_coefficient=kl_warm_up(100))
    model.fit(_images(60), batch_size=20, epochs=1, verbose=0)
    model.compile(keras.optimizers.Adam(1e-4), kl_coefficient=kl_warm_up(100))
    self.assertEqual(int(model.train_steps.numpy()), 3)
    model.fit(_images(20), batch_size=20, epochs=1, verbose=0)
    self.assertEqual(int(model.train_steps.numpy()), 4)
    self.assertAllClose(model.kl_coefficient(model.train_steps), 4 / 30)

  def test_frozen_prior_trains_and_evaluates(self):
    model = _model(self.get_temp_dir())
    model.prior_machine.trainable = False
    model.compile(keras.optimizers.Adam(1e-2), eval_iw_samples=2)
    w = model.prior_machine.w.numpy()
    model.fit(_images(40), batch_size=20, epochs=1, verbose=0,
              validation_data=_images(10, seed=1))
    self.assertAllEqual(model.prior_machine.w, w)
    self.assertTrue(np.isfinite(model.evaluate(_images(10), verbose=0)[0]))

  def test_uncompiled_model_saves_and_pickles(self):
    model = _model(self.get_temp_dir())
    model.save(os.path.join(self.get_temp_dir(), "m.keras"))
    clone = pickle.loads(pickle.dumps(model))
    self.assertAllEqual(clone.decoder_net.get_weights()[0], model.decoder_net.get_weights()[0])


class InputsTest(tf.test.TestCase):

  def test_uint8_and_image_shaped_inputs_train(self):
    model = _model(self.get_temp_dir())
    model.compile(eval_iw_samples=2)
    images = _images(40).astype(np.uint8).reshape(40, 28, 28)
    history = model.fit(images, batch_size=20, epochs=1, verbose=0)
    self.assertTrue(np.isfinite(history.history["loss"][0]))
    self.assertEqual(model(images[:3]).shape, (3, 784))

  def test_wrong_width_is_one_clear_line(self):
    model = _model(self.get_temp_dir())
    with self.assertRaisesRegex(ValueError, r"rows of D = 784 values"):
      model(np.zeros([3, 100], np.float32))

  def test_condition_is_required_exactly_when_the_model_has_one(self):
    model = _composed(seed=0)
    with self.assertRaisesRegex(ValueError, "has no condition"):
      model({"x": np.zeros([2, 12]), "condition": np.zeros([2, 1])})
    conditional = _composed(seed=0, condition_dims=3)
    with self.assertRaisesRegex(ValueError, "takes a condition of width 3"):
      conditional(np.zeros([2, 12], np.float32))

  def test_conditional_model_export_serves_x_and_condition(self):
    model = _composed(seed=0, condition_dims=3)
    rng = np.random.default_rng(0)
    x = (rng.random([5, 12]) < 0.5).astype(np.float32)
    c = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 5)]
    path = os.path.join(self.get_temp_dir(), "conditional_export")
    model.export(path, verbose=False)
    loaded = tf.saved_model.load(path)
    served = loaded.serve(tf.constant(x), tf.constant(c))
    self.assertEqual(served.shape, (5, 12))
    self.assertAllClose(served, model({"x": x, "condition": c}), atol=1e-6)
    with self.assertRaisesRegex(ValueError, "dvae.export.export_model"):
      model.export(os.path.join(self.get_temp_dir(), "onnx"), format="onnx")


class LikelihoodsTest(tf.test.TestCase):

  def test_log_probs_match_the_formulas(self):
    rng = np.random.default_rng(0)
    h = rng.normal(size=[3, 4]).astype(np.float32)
    x = rng.normal(size=[3, 4]).astype(np.float32)
    gaussian = likelihoods.Gaussian(scale=0.5)
    self.assertAllClose(gaussian.log_prob(x, h), np.sum(
        -0.5 * ((x - h) / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi), -1))
    bits = (x > 0).astype(np.float32)
    self.assertAllClose(likelihoods.Bernoulli().log_prob(bits, h), np.sum(
        bits * h - np.log1p(np.exp(h)), -1), rtol=1e-5)
    categorical = likelihoods.Categorical(3)
    logits = rng.normal(size=[3, 4 * 3]).astype(np.float32)
    levels = rng.integers(0, 3, [3, 4])
    log_softmax = logits.reshape(3, 4, 3) - np.log(np.exp(logits.reshape(3, 4, 3)).sum(-1,
                                                                                         keepdims=True))
    self.assertAllClose(categorical.log_prob(levels.astype(np.float32), logits), np.take_along_axis(
        log_softmax, levels[..., None], -1).sum((1, 2)), rtol=1e-5)
    self.assertEqual(categorical.sample(logits, [0, 1]).shape, (3, 4))
