"""#15: the bench's floors run (a smoke test at tiny sizes; `bench/speed.py` measures)."""

import os
import sys

import tensorflow as tf

from dvae import config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
import speed  # pylint: disable=g-import-not-at-top,wrong-import-position


class FloorsTest(tf.test.TestCase):

  def test_floors_run_and_take_time(self):
    hp, _ = config.load_hparams(None, dict(
        struct="2-layer-nonlin", baseline="dvaes_power", k=2, latent_units=8, hidden_units=16,
        train_batch_size=4, num_chains=6, num_sweeps=2, log_dir=self.get_temp_dir(),
        num_train_iter=10))
    half = hp.latent_units * hp.num_latent_layers // 2
    floors = [
        speed.matmul_floor(speed.training_shapes(hp), repeats=1),
        speed.bare_step_floor(hp, repeats=1),
        speed.bare_eval_floor(hp, images=2, samples=3, repeats=1),
        speed.sampler_floor(hp.num_chains, half, half, hp.num_sweeps, annealing=True, repeats=1,
                            resample=True),
        speed.colour_sweep_floor(hp.num_chains, [3, 5], num_sweeps=2, repeats=1),
    ]
    for seconds in floors:
      self.assertGreater(seconds, 0.0)


if __name__ == "__main__":
  tf.test.main()
