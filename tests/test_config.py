"""`dvae.config`: every bad value is refused with one helpful line; flags win; tables resolve."""

import dataclasses
import json
import math
import os
import typing

import tensorflow as tf
from absl.testing import parameterized

from dvae import config

# SPEC §6 transcribed as printed: dataset, structure row, β for the baselines in the order
# dvae_spike_exp dvaepp_exp dvaepp_power dvaes_gi dvaes_gauss dvaes_exp dvaes_unexp dvaes_power.
SPEC_BETA_TABLE = """
binarized_mnist 1-layer-lin      5 12 40 40 40 12 40 40
binarized_mnist 1-layer-nonlin   5 14 30 30 30 12 30 40
binarized_mnist 2/4-layer-nonlin 4 10 30 30 25 10 16 30
omniglot        1-layer-lin      4 14 40 40 40 12 40 40
omniglot        1-layer-nonlin   4 12 40 30 25 10 16 30
omniglot        2/4-layer-nonlin 4 10 30 25 25 8  16 20
"""
SPEC_BASELINE_ORDER = ("dvae_spike_exp", "dvaepp_exp", "dvaepp_power", "dvaes_gi",
                       "dvaes_gauss", "dvaes_exp", "dvaes_unexp", "dvaes_power")


class ConfigTestCase(tf.test.TestCase, parameterized.TestCase):

  def write_json(self, content, name="h.json"):
    path = os.path.join(self.get_temp_dir(), name)
    with open(path, "w", encoding="utf-8") as f:
      f.write(content if isinstance(content, str) else json.dumps(content))
    return path

  def assertRefused(self, expected, source=None, overrides=None):
    with self.assertRaises(config.ConfigError) as raised:
      config.load_hparams(source, overrides)
    message = str(raised.exception)
    self.assertLen(message.splitlines(), 1, message)
    for fragment in expected:
      self.assertIn(fragment, message)
    return message


class TablesTest(ConfigTestCase):

  def test_beta_table_matches_spec_for_every_dataset_structure_and_baseline(self):
    checked = 0
    for line in SPEC_BETA_TABLE.strip().splitlines():
      dataset, row, *betas = line.split()
      structs = ["2-layer-nonlin", "4-layer-nonlin"] if row.startswith("2/4") else [row]
      for struct in structs:
        for baseline, beta in zip(SPEC_BASELINE_ORDER, betas):
          self.assertEqual(config.default_beta(dataset, struct, baseline), float(beta))
          checked += 1
    self.assertEqual(checked, 2 * len(config.STRUCTURES) * len(config.BASELINES))

  def test_default_beta_names_the_allowed_values_for_an_unknown_combination(self):
    with self.assertRaisesRegex(ValueError, "dvaes_power"):
      config.default_beta("binarized_mnist", "2-layer-nonlin", "dvae_sharp")

  def test_structures_give_latent_layers_units_and_hidden_layers_of_spec(self):
    expected = {"1-layer-lin": (1, 200, 0), "1-layer-nonlin": (1, 200, 2),
                "2-layer-nonlin": (2, 200, 2), "4-layer-nonlin": (4, 100, 2)}
    for struct, (layers, units, hidden) in expected.items():
      hparams, _ = config.load_hparams(None, {"struct": struct})
      self.assertEqual((hparams.num_latent_layers, hparams.latent_units, hparams.num_hidden),
                       (layers, units, hidden))
      # The RBM splits the concatenated latents into two equal halves.
      self.assertEqual(layers * units % 2, 0)
      self.assertEqual(hparams.hidden_units, 200)
    self.assertEqual(config.HIDDEN_UNITS, 200)

  def test_default_eval_batches_are_those_of_spec(self):
    for dataset, batch in (("binarized_mnist", 1000), ("omniglot", 269),
                           ("dynamic_mnist", 1000)):
      self.assertEqual(config.load_hparams(None, {"dataset": dataset})[0].eval_batch_size, batch)


class ResolutionTest(ConfigTestCase):

  def test_defaults_are_the_reference_configuration_with_table_values_resolved(self):
    hparams, notes = config.load_hparams()
    self.assertEqual(
        (hparams.dataset, hparams.struct, hparams.baseline, hparams.k, hparams.sampler,
         hparams.num_chains, hparams.num_sweeps, hparams.num_train_iter,
         hparams.train_batch_size, hparams.eval_iw_samples, hparams.periodic_eval_iw_samples,
         hparams.base_lr, hparams.distribute),
        ("binarized_mnist", "2-layer-nonlin", "dvaes_power", 1, "pa", 1000, 40, 1_000_000, 100,
         4000, 100, 3e-3, "none"))
    self.assertEqual(hparams.beta, 30.0)
    self.assertEqual(hparams.eval_batch_size, 1000)
    self.assertEqual(hparams.eval_every, 20_000)
    self.assertEqual(notes, ["beta=30.0 from the β table for binarized_mnist, "
                             "2-layer-nonlin, dvaes_power"])

  def test_beta_follows_the_dataset_structure_and_baseline_chosen_by_flags(self):
    hparams, _ = config.load_hparams(None, {"dataset": "omniglot", "struct": "1-layer-nonlin",
                                            "baseline": "dvaes_gauss"})
    self.assertEqual(hparams.beta, 25.0)
    self.assertEqual(hparams.eval_batch_size, 269)

  def test_an_explicit_beta_is_kept_and_an_int_is_accepted_as_float(self):
    hparams, notes = config.load_hparams(self.write_json({"beta": 7}))
    self.assertEqual(hparams.beta, 7.0)
    self.assertIsInstance(hparams.beta, float)
    self.assertEmpty(notes)

  def test_eval_every_is_ten_thousand_up_to_a_hundred_thousand_steps(self):
    for steps, every in ((4, 10_000), (100_000, 10_000), (100_001, 20_000)):
      hparams, _ = config.load_hparams(None, {"num_train_iter": steps})
      self.assertEqual(hparams.eval_every, every)

  def test_null_and_empty_paths_mean_unset(self):
    path = self.write_json({"beta": None, "data_dir": None, "export_dir": "exports"})
    hparams, _ = config.load_hparams(path, {"export_dir": "", "data_dir": ""})
    self.assertIsNone(hparams.data_dir)
    self.assertIsNone(hparams.export_dir)
    self.assertEqual(hparams.beta, 30.0)

  def test_to_dict_round_trips_through_a_json_file(self):
    hparams, _ = config.load_hparams(None, {"k": 5, "dataset": "omniglot", "seed": 3})
    again, notes = config.load_hparams(self.write_json(json.dumps(hparams.to_dict())))
    self.assertEqual(again, hparams)
    self.assertEmpty(notes)

  def test_every_field_has_a_scalar_type_a_flag_can_carry(self):
    for name, hint in typing.get_type_hints(config.HParams).items():
      kinds = {t for t in typing.get_args(hint) or (hint,) if t is not type(None)}
      self.assertLen(kinds, 1, name)
      self.assertIn(kinds.pop(), (bool, int, float, str), name)


class DataAndWidthsTest(ConfigTestCase):
  """#11: a user's file as the data set, binarization protocols, widths, evaluation batches."""

  def test_a_npz_path_is_a_dataset_named_by_its_stem_with_mnist_beta(self):
    hparams, notes = config.load_hparams(None, {"dataset": "some/where/cells.npz"})
    self.assertEqual(hparams.dataset, os.path.abspath("some/where/cells.npz"))
    self.assertEqual(hparams.dataset_name, "cells")
    self.assertEqual(hparams.binarization, "none")
    self.assertIsNone(hparams.eval_batch_size, "resolved once D is known")
    self.assertEqual(hparams.beta, config.default_beta("binarized_mnist", hparams.struct,
                                                       hparams.baseline))
    self.assertIn("β table for binarized_mnist", notes[0])

  def test_binarization_defaults_to_each_published_protocol_and_a_flag_overrides_it(self):
    for dataset, expected in (("binarized_mnist", "none"), ("omniglot", "dynamic"),
                              ("dynamic_mnist", "dynamic")):
      self.assertEqual(config.load_hparams(None, {"dataset": dataset})[0].binarization, expected)
    hparams, _ = config.load_hparams(None, {"dataset": "omniglot", "binarization": "static"})
    self.assertEqual(hparams.binarization, "static")

  def test_widths_default_to_the_structure_and_flags_override_them(self):
    hparams, _ = config.load_hparams(None, {"struct": "4-layer-nonlin", "latent_units": 16,
                                            "hidden_units": 32})
    self.assertEqual((hparams.num_latent_layers, hparams.latent_units, hparams.num_hidden,
                      hparams.hidden_units), (4, 16, 2, 32))

  def test_any_positive_eval_batch_is_accepted(self):
    for batch in (1, 333, 10_001):
      self.assertEqual(config.load_hparams(None, {"eval_batch_size": batch})[0].eval_batch_size,
                       batch)

  def test_a_files_eval_batch_follows_its_dimension(self):
    hparams, _ = config.load_hparams(None, {"dataset": "x.npz"})
    for num_dims, batch in ((16, 1000), (784, 1000), (1000, 784), (10**6, 1), (10**7, 1)):
      self.assertEqual(config.for_data(hparams, num_dims).eval_batch_size, batch)
    chosen, _ = config.load_hparams(None, {"dataset": "x.npz", "eval_batch_size": 7})
    self.assertEqual(config.for_data(chosen, 10**6).eval_batch_size, 7)


class SourcesAndFlagsTest(ConfigTestCase):

  @parameterized.parameters("quickstart", "quickstart.json", "binarized_mnist", "omniglot")
  def test_bare_name_is_found_in_the_repository_hparams_folder(self, name):
    hparams, _ = config.load_hparams(name)
    if name.startswith("quickstart"):
      self.assertEqual((hparams.struct, hparams.sampler, hparams.baseline, hparams.k),
                       ("1-layer-lin", "pcd", "dvaes_power", 1))
    else:
      self.assertEqual(hparams.dataset, name)
      self.assertEqual(hparams, config.load_hparams(None, {"dataset": name})[0],
                       "the reference files hold the reference defaults")

  def test_bare_name_is_found_in_a_given_hparams_dir(self):
    self.write_json({"k": 3}, name="mine.json")
    hparams, _ = config.load_hparams("mine", hparams_dir=self.get_temp_dir())
    self.assertEqual(hparams.k, 3)

  def test_flag_that_contradicts_the_file_wins_and_is_noted(self):
    path = self.write_json({"k": 1, "sampler": "pa", "seed": 4})
    hparams, notes = config.load_hparams(path, {"k": 5, "sampler": "pa", "num_chains": 10})
    self.assertEqual((hparams.k, hparams.sampler, hparams.num_chains, hparams.seed),
                     (5, "pa", 10, 4))
    overrides = [note for note in notes if "overrides" in note]
    self.assertEqual(overrides, [f"flag --k=5 overrides k=1 from {path}"])

  def test_missing_file_names_it_and_the_available_bare_names(self):
    self.assertRefused(["no_such_config", "quickstart", "omniglot"], "no_such_config")
    self.assertRefused(["missing/dir.json"], "missing/dir.json")


class RefusalTest(ConfigTestCase):
  """Each row: ConfigError, one line, naming the key, its origin and what is allowed."""

  @parameterized.named_parameters(
      ("unknown_key", {"num_train_steps": 10}, ["num_train_steps", "did you mean 'num_train_iter'",
                                                "allowed: dataset"]),
      ("string_for_int", {"k": "five"}, ["hparam k", "an integer", '"five"']),
      ("float_for_int", {"k": 1.5}, ["hparam k", "an integer"]),
      ("bool_for_int", {"k": True}, ["hparam k", "an integer", "bool"]),
      ("bool_for_float", {"base_lr": False}, ["base_lr", "a number"]),
      ("string_for_float", {"beta": "x"}, ["beta", "a number or null"]),
      ("int_for_string", {"data_dir": 3}, ["data_dir", "a string or null"]),
      ("int_for_bool", {"verify_data": 1}, ["verify_data", "true or false"]),
      ("null_for_required", {"k": None}, ["hparam k", "an integer"]),
      ("unknown_dataset", {"dataset": "cifar"}, ["cifar", "binarized_mnist, omniglot"]),
      ("unknown_struct", {"struct": "3-layer"}, ["3-layer", "1-layer-lin", "4-layer-nonlin"]),
      ("unknown_baseline", {"baseline": "dvae_sharp"}, ["dvae_sharp", "dvaes_power"]),
      ("unknown_sampler", {"sampler": "gibbs"}, ["gibbs", "pcd, pa"]),
      ("unknown_distribute", {"distribute": "tpu"}, ["tpu", "none, mirrored, multi_worker"]),
      ("k_below_one", {"k": 0}, ["k=0", "≥ 1"]),
      ("zero_beta", {"beta": 0}, ["beta=0.0", "> 0"]),
      ("negative_beta", {"beta": -1.0}, ["beta=-1.0", "> 0"]),
      ("zero_learning_rate", {"base_lr": 0.0}, ["base_lr", "> 0"]),
      ("zero_chains", {"num_chains": 0}, ["num_chains=0", "≥ 1"]),
      ("zero_sweeps", {"num_sweeps": 0}, ["num_sweeps=0", "≥ 1"]),
      ("zero_steps", {"num_train_iter": 0}, ["num_train_iter=0", "≥ 1"]),
      ("negative_batch", {"train_batch_size": -1}, ["train_batch_size=-1", "≥ 1"]),
      ("zero_final_iw_samples", {"eval_iw_samples": 0}, ["eval_iw_samples=0", "≥ 1"]),
      ("zero_periodic_iw_samples", {"periodic_eval_iw_samples": 0},
       ["periodic_eval_iw_samples=0", "≥ 1"]),
      ("zero_eval_every", {"eval_every": 0}, ["eval_every=0", "≥ 1"]),
      ("zero_checkpoint_steps", {"checkpoint_every_steps": 0}, ["checkpoint_every_steps", "≥ 1"]),
      ("zero_checkpoint_secs", {"checkpoint_every_secs": 0}, ["checkpoint_every_secs", "> 0"]),
      ("negative_seed", {"seed": -1}, ["seed=-1", "2147483647"]),
      ("seed_beyond_int32", {"seed": 2**31}, ["seed=2147483648", "2147483647"]),
      ("empty_log_dir", {"log_dir": ""}, ["log_dir", "non-empty"]),
      ("zero_eval_batch", {"eval_batch_size": 0}, ["eval_batch_size=0", "≥ 1"]),
      ("zero_latent_units", {"latent_units": 0}, ["latent_units=0", "≥ 1"]),
      ("zero_hidden_units", {"hidden_units": 0}, ["hidden_units=0", "≥ 1"]),
      ("zero_steps_per_execution", {"steps_per_execution": 0}, ["steps_per_execution=0", "≥ 1"]),
      ("float_steps_per_execution", {"steps_per_execution": 2.5},
       ["hparam steps_per_execution", "an integer"]),
      ("one_latent_unit_in_all", {"struct": "1-layer-lin", "latent_units": 1},
       ["latent_units=1", "two halves of the RBM"]),
      ("unknown_binarization", {"binarization": "otsu"}, ["otsu", "none, static, dynamic"]),
      ("directory_as_dataset", {"dataset": "my_data/"}, ["my_data/", "a path to a .npz file"]),
  )
  def test_bad_value_is_refused_in_a_file_and_as_a_flag(self, values, expected):
    path = self.write_json(values)
    self.assertIn(path, self.assertRefused(expected, source=path))
    self.assertIn("flag --", self.assertRefused(expected, overrides=values))

  def test_non_finite_numbers_are_refused(self):
    for value in (math.nan, math.inf):
      self.assertRefused(["beta", "finite"], overrides={"beta": value})
    self.assertRefused(["base_lr", "finite"], source=self.write_json('{"base_lr": NaN}'))

  @parameterized.named_parameters(
      ("truncated", '{"k": 1,', ["not valid JSON", "one JSON object"]),
      ("not_an_object", "[1, 2]", ["JSON list, not an object"]),
      ("duplicate_key", '{"k": 1, "k": 2}', ["'k' appears more than once"]),
      ("empty_file", "", ["not valid JSON"]),
  )
  def test_unusable_json_is_refused(self, content, expected):
    path = self.write_json(content)
    self.assertIn(path, self.assertRefused(expected, source=path))

  def test_non_utf8_file_is_refused(self):
    path = os.path.join(self.get_temp_dir(), "latin1.json")
    with open(path, "wb") as f:
      f.write(b'{"log_dir": "caf\xe9"}')
    self.assertRefused([path, "not valid JSON"], source=path)

  def test_config_error_is_a_value_error(self):
    self.assertTrue(issubclass(config.ConfigError, ValueError))

  def test_hparams_is_immutable(self):
    hparams, _ = config.load_hparams()
    with self.assertRaises(dataclasses.FrozenInstanceError):
      hparams.k = 2


if __name__ == "__main__":
  tf.test.main()


class MalformedInputTest(ConfigTestCase):
  """Inputs that used to end in a traceback: one line each."""

  def test_deeply_nested_json_hparams_file_is_one_line(self):
    path = self.write_json('{"k": ' + "[" * 100_000 + "]" * 100_000 + "}")
    self.assertRefused([path, "not valid JSON"], path)

  def test_an_integer_of_thousands_of_digits_is_one_line(self):
    path = self.write_json('{"k": ' + "9" * 5000 + "}")
    self.assertRefused([path, "not valid JSON"], path)

  def test_counts_beyond_int32_are_refused(self):
    self.assertRefused(["num_train_iter", "≤ 2147483647"], None, {"num_train_iter": 10**20})
    self.assertRefused(["num_chains", "≤ 2147483647"], None, {"num_chains": 4_000_000_000})

  @parameterized.parameters("..x", ".x", "x", "os..path", "a.b-c.D")
  def test_a_dimod_sampler_that_is_no_import_path_is_one_line(self, path):
    self.assertRefused(["not an import path"], None,
                       {"sampler": "dimod", "dimod_sampler": path})

  def test_deeply_nested_dimod_sampler_args_are_one_line(self):
    self.assertRefused(["dimod_sampler_args", "must be a JSON object"], None, {
        "sampler": "dimod", "dimod_sampler": "dwave.samplers.SimulatedAnnealingSampler",
        "dimod_sampler_args": "[" * 100_000})

  def test_dimod_sampler_args_of_a_type_the_sampler_refuses_are_refused_up_front(self):
    message = self.assertRefused(["num_sweeps", "SimulatedAnnealingSampler.sample"], None, {
        "sampler": "dimod", "dimod_sampler": "dwave.samplers.SimulatedAnnealingSampler",
        "dimod_sampler_args": '{"num_sweeps": "abc"}'})
    self.assertLess(len(message), 400)
    config.load_hparams(None, {
        "sampler": "dimod", "dimod_sampler": "dwave.samplers.SimulatedAnnealingSampler",
        "dimod_sampler_args": '{"num_sweeps": 5}'})
