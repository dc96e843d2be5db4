"""Conditions from a user's `.npz` (#21): `train_cond`, `valid_cond`, `test_cond` load beside their
splits (labels one-hot), malformed ones are refused in one line, a conditional run trains,
evaluates and exports through `run_training.py`, conditioning measurably helps on data that the
condition determines, and data without conditions gives the same batches as before."""

import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from dvae import config, data, evaluation
from dvae.model import DVAE, kl_warm_up
from test_own_data import results_of, run_cli

TINY_CONDITIONAL_RUN = [
    "--struct=1-layer-lin", "--latent_units=8", "--sampler=pcd", "--num_chains=20",
    "--num_sweeps=2", "--train_batch_size=10", "--num_train_iter=20", "--eval_every=10",
    "--periodic_eval_iw_samples=2", "--eval_iw_samples=3", "--final_log_z_betas=100"]


def binary(rng, shape):
  return (rng.random(shape) < 0.5).astype(np.uint8)


def labelled_patterns(rng, num_classes=4, num_dims=16, peak=0.95):
  """x | c ~ Π Bern(μ_c) with μ_cd ∈ {peak, 1 − peak} on a random pattern per class: a function
  drawing (x [n, 4, 4] uint8, labels [n]) and the exact log p(x|c)."""
  mu = np.where(rng.random([num_classes, num_dims]) < 0.5, peak, 1 - peak)

  def draw(n):
    labels = rng.integers(0, num_classes, n)
    x = (rng.random([n, num_dims]) < mu[labels]).astype(np.uint8)
    return x.reshape(n, 4, 4), labels

  def log_prob(x, labels):
    x = x.reshape(len(x), -1)
    return (x * np.log(mu[labels]) + (1 - x) * np.log1p(-mu[labels])).sum(-1)

  return draw, log_prob


class ConditionLoaderTest(tf.test.TestCase, parameterized.TestCase):

  def save(self, name="data", **arrays):
    path = os.path.join(self.get_temp_dir(), f"{name}.npz")
    np.savez(path, **arrays)
    return path

  def assertRefused(self, path, expected):
    with self.assertRaises(data.DataError) as caught:
      data.load_dataset(path)
    message = str(caught.exception)
    self.assertNotIn("\n", message)
    for part in [path, *expected]:
      self.assertIn(part, message)

  def test_conditions_load_beside_each_split(self):
    rng = np.random.default_rng(0)
    arrays = dict(train=binary(rng, [20, 3, 4]), valid=binary(rng, [5, 3, 4]),
                  test=binary(rng, [6, 3, 4]))
    conditions = {f"{split}_cond": rng.normal(size=[len(x), 2]) for split, x in arrays.items()}
    dataset = data.load_dataset(self.save(**arrays, **conditions))
    self.assertEqual(dataset.condition_dims, 2)
    self.assertEqual(dataset.image_shape, (3, 4))
    for split in data.SPLITS:
      c = getattr(dataset, f"{split}_cond")
      self.assertEqual(c.dtype, np.float32)
      self.assertAllClose(c, conditions[f"{split}_cond"])
      self.assertEqual(getattr(dataset, split).shape, (len(arrays[split]), 12))

  def test_without_valid_the_conditions_are_carved_like_the_rows(self):
    rng = np.random.default_rng(1)
    train = binary(rng, [25, 6])
    index = np.arange(25.0)[:, None]
    dataset = data.load_dataset(self.save(train=train, train_cond=index, test=train[:3],
                                          test_cond=index[:3]))
    # The last ⌊25 / 10⌋ = 2 training rows validate, with their own conditions.
    self.assertAllEqual(dataset.valid, train[-2:])
    self.assertAllEqual(dataset.valid_cond, index[-2:])
    self.assertAllEqual(dataset.train, train[:-2])
    self.assertAllEqual(dataset.train_cond, index[:-2])

  def test_labels_become_one_hot_with_k_over_all_splits(self):
    rng = np.random.default_rng(2)
    dataset = data.load_dataset(self.save(
        train=binary(rng, [6, 4]), train_cond=np.array([0, 1, 2, 0, 1, 2], np.int64),
        valid=binary(rng, [2, 4]), valid_cond=np.array([1, 1], np.uint8),
        test=binary(rng, [3, 4]), test_cond=np.array([4.0, 0.0, 2.0])))
    self.assertEqual(dataset.condition_dims, 5)
    self.assertAllEqual(dataset.train_cond, np.eye(5)[[0, 1, 2, 0, 1, 2]])
    self.assertAllEqual(dataset.valid_cond, np.eye(5)[[1, 1]])
    self.assertAllEqual(dataset.test_cond, np.eye(5)[[4, 0, 2]])

  def test_a_file_without_conditions_is_unconditional(self):
    rng = np.random.default_rng(3)
    dataset = data.load_dataset(self.save(train=binary(rng, [10, 4]), test=binary(rng, [2, 4])))
    self.assertEqual(dataset.condition_dims, 0)
    self.assertIsNone(dataset.train_cond)

  @parameterized.named_parameters(
      ("row_mismatch", dict(train_cond=np.zeros([9, 2]), test_cond=np.zeros([4, 2])),
       ["train_cond has 9 rows, but train has 10"]),
      ("missing_test_cond", dict(train_cond=np.zeros([10, 2])), ["lacks test_cond"]),
      ("missing_valid_cond", dict(valid=np.zeros([3, 4]), train_cond=np.zeros([10, 2]),
                                  test_cond=np.zeros([4, 2])), ["lacks valid_cond"]),
      ("valid_cond_without_valid", dict(train_cond=np.zeros([10, 2]), valid_cond=np.zeros([1, 2]),
                                        test_cond=np.zeros([4, 2])), ["valid_cond but no valid"]),
      ("nan", dict(train_cond=np.zeros([10, 2]), test_cond=np.array([[0, np.nan]] * 4)),
       ["test_cond has values such as nan"]),
      ("infinity", dict(train_cond=np.full([10, 2], np.inf), test_cond=np.zeros([4, 2])),
       ["train_cond has values such as inf"]),
      ("complex", dict(train_cond=np.zeros([10, 2], complex), test_cond=np.zeros([4, 2])),
       ["train_cond has dtype complex128"]),
      ("time", dict(train_cond=np.zeros([10, 2], "m8[s]"), test_cond=np.zeros([4, 2])),
       ["train_cond has dtype timedelta64[s]"]),
      ("non_integer_labels", dict(train_cond=np.full(10, 0.5), test_cond=np.zeros(4)),
       ["train_cond has values such as 0.5", "class labels"]),
      ("negative_labels", dict(train_cond=np.zeros(10, int), test_cond=np.full(4, -1)),
       ["test_cond has values such as -1", "class labels"]),
      ("mixed_forms", dict(train_cond=np.zeros(10, int), test_cond=np.zeros([4, 2])),
       ["labels [N] and some rows [N, C]"]),
      ("different_widths", dict(train_cond=np.zeros([10, 2]), test_cond=np.zeros([4, 3])),
       ["train_cond 2, test_cond 3"]),
      ("zero_width", dict(train_cond=np.zeros([10, 0]), test_cond=np.zeros([4, 0])),
       ["train_cond has shape [10, 0]"]),
      ("three_dimensional", dict(train_cond=np.zeros([10, 2, 2]), test_cond=np.zeros([4, 2, 2])),
       ["train_cond has shape [10, 2, 2]"]),
  )
  def test_malformed_conditions_are_refused_in_one_line(self, conditions, expected):
    arrays = dict(train=np.zeros([10, 4]), test=np.zeros([4, 4]))
    self.assertRefused(self.save(**{**arrays, **conditions}), expected)

  def test_object_conditions_are_refused_and_never_unpickled(self):
    ragged = np.empty(10, dtype=object)
    ragged[:] = [[0.0]] * 10
    path = self.save(train=np.zeros([10, 4]), train_cond=ragged, test=np.zeros([4, 4]),
                     test_cond=np.zeros([4, 1]))
    self.assertRefused(path, ["train_cond", "pickled Python objects"])

  def test_conditions_take_part_in_the_fingerprint(self):
    rng = np.random.default_rng(4)
    arrays = dict(train=binary(rng, [10, 4]), test=binary(rng, [4, 4]))
    plain = data.fingerprint(data.load_dataset(self.save("plain", **arrays)))
    labelled = data.fingerprint(data.load_dataset(self.save(
        "one", **arrays, train_cond=np.zeros(10, int), test_cond=np.ones(4, int))))
    relabelled = data.fingerprint(data.load_dataset(self.save(
        "two", **arrays, train_cond=np.ones(10, int), test_cond=np.zeros(4, int))))
    self.assertLen({plain, labelled, relabelled}, 3)

  def test_pipelines_pair_each_row_with_its_condition(self):
    rng = np.random.default_rng(5)
    train = binary(rng, [23, 6]).astype(np.float32)
    index = np.arange(23, dtype=np.float32)[:, None]
    plain = data.Dataset(train=train, valid=train[:5], test=train[:4],
                         train_mean=train.mean(0), dynamic_binarization=False)
    conditional = data.Dataset(train=train, valid=train[:5], test=train[:4],
                               train_mean=train.mean(0), dynamic_binarization=False,
                               train_cond=index, valid_cond=index[:5], test_cond=index[:4])
    batches = list(data.train_dataset(conditional, 7, seed=3).take(8))
    for batch, expected in zip(batches, data.train_dataset(plain, 7, seed=3).take(8)):
      self.assertAllEqual(batch["x"], expected)
      self.assertAllEqual(batch["x"], train[batch["condition"].numpy()[:, 0].astype(int)])
    valid = list(data.eval_dataset(conditional.valid, 2, conditional.valid_cond))
    self.assertAllEqual(np.concatenate([b["condition"] for b in valid]), index[:5])
    self.assertAllEqual(np.concatenate([b["x"] for b in valid]), train[:5])


def _digest(arrays):
  digest = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    digest.update(f"{a.dtype.str}{a.shape};".encode())
    digest.update(a.tobytes())
  return digest.hexdigest()[:16]


class UnconditionalDataUnchangedTest(tf.test.TestCase):
  """Digests of the batches, evaluation batches and fingerprints of data without conditions,
  recorded with the implementation before conditions existed (commit 8df0665): a resumed run's
  stream and a run's identity do not change."""

  RECORDED = {  # name: (12 batches from step 0, 7 from step 5, eval batches, fingerprint)
      "binary": ("f1ccae5f106ad3d4", "ae4993076735e316", "c10de871f09b028f", "c70e7bb16b7787c9"),
      "dynamic": ("4135f4f49d94d67f", "15035a42094d1aef", "fc0f743471284b2d", "d1a4777d665323de"),
      "real": ("660f7d312bc0bcbc", "124e161480c25e68", "738adb3a040f34dc", "418285160feccac9"),
  }

  def test_batches_and_fingerprints_are_bit_identical_to_before(self):
    rng = np.random.default_rng(0)
    trains = {"binary": (rng.random([37, 12]) < 0.4).astype(np.float32),
              "dynamic": rng.random([37, 12]).astype(np.float32),
              "real": rng.normal(size=[37, 12]).astype(np.float32)}
    for name, train in trains.items():
      dataset = data.Dataset(train=train, valid=train[:7], test=train[:5],
                             train_mean=train.mean(axis=0),
                             dynamic_binarization=name == "dynamic")
      got = (_digest([b.numpy() for b in data.train_dataset(dataset, 8, seed=7).take(12)]),
             _digest([b.numpy() for b in data.train_dataset(dataset, 8, seed=7,
                                                            start_step=5).take(7)]),
             _digest([b.numpy() for b in data.eval_dataset(dataset.valid, 3)]),
             data.fingerprint(dataset))
      self.assertEqual(got, self.RECORDED[name], name)

  def test_a_loaded_file_is_bit_identical_to_before(self):
    rng = np.random.default_rng(1)
    path = os.path.join(self.get_temp_dir(), "grey.npz")
    np.savez(path, train=rng.random([23, 3, 4]), test=rng.random([6, 3, 4]))
    dataset = data.load_dataset(path, binarization="static")
    self.assertEqual(_digest([dataset.train, dataset.valid, dataset.test, dataset.train_mean]),
                     "2176ac50d50258a3")
    self.assertEqual(data.fingerprint(dataset), "c686cdaa43dc3d08")


class ConditioningHelpsTest(tf.test.TestCase):

  def test_conditional_model_beats_unconditional_on_label_determined_data(self):
    """x | c is one of 4 product-Bernoulli patterns chosen by the label: with c the true NLL is
    16·H(0.95) ≈ 3.18 nats, without it at least log 4 ≈ 1.39 nats more."""
    rng = np.random.default_rng(0)
    draw, log_prob = labelled_patterns(rng)
    (train, train_labels), (valid, valid_labels), (test, test_labels) = (
        draw(2000), draw(200), draw(1000))
    path = os.path.join(self.get_temp_dir(), "labelled.npz")
    np.savez(path, train=train, train_cond=train_labels, valid=valid, valid_cond=valid_labels,
             test=test, test_cond=test_labels)
    conditional = data.load_dataset(path)
    self.assertEqual(conditional.condition_dims, 4)
    unconditional = data.Dataset(
        train=conditional.train, valid=conditional.valid, test=conditional.test,
        train_mean=conditional.train_mean, dynamic_binarization=False)
    true_nll = float(-log_prob(test, test_labels).mean())
    hparams, _ = config.load_hparams(None, dict(
        dataset="binarized_mnist", struct="1-layer-nonlin", latent_units=8, hidden_units=64,
        sampler="pcd", num_chains=100, num_sweeps=5, train_batch_size=50, seed=0))
    steps, nll = 300, {}
    for name, dataset in (("conditional", conditional), ("unconditional", unconditional)):
      model = DVAE.from_hparams(hparams, dataset.train_mean,
                                condition_dims=dataset.condition_dims)
      model.compile(keras.optimizers.Adam(3e-3, epsilon=1e-3), kl_coefficient=kl_warm_up(steps))
      model.fit(data.train_dataset(dataset, 50, seed=0), steps_per_epoch=steps, epochs=1,
                verbose=0)
      model.prior_machine.update_log_z("exact")
      nll[name] = evaluation.evaluate(model, dataset.test, 100, 500,
                                      conditions=dataset.test_cond)["nll"]
    print(f"true conditional NLL {true_nll:.3f}, measured {nll}")
    # The IW estimate with the exact log Z is a stochastic upper bound on the NLL.
    self.assertBetween(nll["conditional"], true_nll - 0.1, true_nll + 0.5)
    self.assertGreater(nll["unconditional"], true_nll + np.log(4) - 0.1)
    self.assertLess(nll["conditional"], nll["unconditional"] - 1.0)

  def test_evaluate_needs_conditions_exactly_for_a_conditional_model(self):
    hparams, _ = config.load_hparams(None, dict(
        dataset="binarized_mnist", struct="1-layer-lin", latent_units=8, sampler="pcd",
        num_chains=20, num_sweeps=2))
    x = np.zeros([4, 6], np.float32)
    model = DVAE.from_hparams(hparams, x.mean(0), condition_dims=3)
    model.prior_machine.update_log_z("exact")
    with self.assertRaisesRegex(ValueError, "condition of width 3"):
      evaluation.evaluate(model, x, 2, 2)
    with self.assertRaisesRegex(ValueError, r"\[N, 3\]"):
      evaluation.evaluate(model, x, 2, 2, conditions=np.zeros([4, 2]))
    scores = evaluation.evaluate(model, x, 2, 2, conditions=np.eye(4, 3))
    self.assertTrue(np.isfinite(scores["nll"]))


class ConditionalCliTest(tf.test.TestCase):

  def test_a_conditional_file_trains_evaluates_and_exports(self):
    rng = np.random.default_rng(0)
    draw, _ = labelled_patterns(rng)
    (train, train_labels), (test, test_labels) = draw(200), draw(50)
    path = os.path.join(self.get_temp_dir(), "labelled.npz")
    np.savez(path, train=train, train_cond=train_labels, test=test, test_cond=test_labels)
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    export_dir = os.path.join(self.get_temp_dir(), "export")
    result = run_cli([f"--dataset={path}", f"--log_dir={log_dir}", f"--export_dir={export_dir}",
                      *TINY_CONDITIONAL_RUN])
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("conditional model p(x|c)", result.stdout)
    results, run = results_of(log_dir)
    self.assertEqual(results["condition_dims"], 4)
    for key in ("val_nll", "test_nll", "val_neg_elbo", "test_neg_elbo"):
      self.assertTrue(np.isfinite(results[key]), key)
    with open(os.path.join(run, "eval_history.jsonl")) as f:
      history = [json.loads(line) for line in f]
    self.assertEqual([record["step"] for record in history], [10, 20])
    self.assertTrue(all(np.isfinite(record["test_nll"]) for record in history))

    loaded = tf.saved_model.load(export_dir)
    self.assertEqual(int(loaded.condition_dims()), 4)
    conditions = np.eye(4, dtype=np.float32)[test_labels[:5]]
    seed = tf.constant([1, 2])
    x = test[:5].reshape(5, 16).astype(np.float32)
    log_p = loaded.log_likelihood(x, tf.constant(4), seed, conditions).numpy()
    self.assertEqual(log_p.shape, (5,))
    self.assertTrue(np.isfinite(log_p).all())
    self.assertEqual(loaded.sample(tf.constant(5), seed, conditions).shape, (5, 16))
    self.assertEqual(loaded.decode(tf.zeros([5, 8]), conditions).shape, (5, 16))
    self.assertEqual(loaded.encode(x, seed, conditions)["logits_0"].shape, (5, 8))
    with self.assertRaises(tf.errors.InvalidArgumentError):
      loaded.sample(tf.constant(4), seed, conditions)

  def test_malformed_conditions_are_refused_by_the_cli_in_one_line(self):
    path = os.path.join(self.get_temp_dir(), "bad.npz")
    np.savez(path, train=np.zeros([10, 4]), train_cond=np.zeros(9, int), test=np.zeros([2, 4]),
             test_cond=np.zeros(2, int))
    log_dir = os.path.join(self.get_temp_dir(), "logs")
    result = run_cli([f"--dataset={path}", f"--log_dir={log_dir}", *TINY_CONDITIONAL_RUN])
    self.assertEqual(result.returncode, 2, result.stderr)
    lines = result.stderr.strip().splitlines()
    self.assertLen(lines, 1, result.stderr)
    self.assertIn("train_cond has 9 rows, but train has 10", lines[0])
    self.assertFalse(os.path.exists(log_dir))
