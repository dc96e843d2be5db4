"""The training loss's running log Z against a long AIS, and the negative phase's lag.

Trains one configuration on binarized MNIST (the data that ships with the package; or with
`--data=synthetic` on the tests' four noisy stroke prototypes, `tests/helpers.py`, whose prior
grows sharp modes within a few hundred steps) and, every
`--every` steps, compares the prior's running log Z (`dvae.boltzmann`: the path estimate under
pcd and dimod samplers, population annealing's own under pa) with AIS at the same parameters
(`--ais_betas` temperatures × 1024 particles). It prints, per check, the error running − AIS,
the running estimate's reported standard error, the AIS's, and the mean `negative_phase_lag`
since the previous check (nats per step; zero for a sampler whose states follow the model):

    PYTHONPATH=. python bench/running_log_z.py --struct=4-layer-nonlin --num_chains=1000 \
        --num_sweeps=40 --steps=1500 --every=250
    PYTHONPATH=. python bench/running_log_z.py --sampler=pa --num_chains=1000 --num_sweeps=40
    PYTHONPATH=. python bench/running_log_z.py --data=synthetic --baseline=dvaepp_power \
        --train_batch_size=100 --steps=120 --every=60 --ais_betas=2000 --seed=8

Any other `--name=value` is an hparam (`dvae.config.HParams`).
"""

import argparse
import json
import os
import sys
import tempfile

import keras
import numpy as np

from dvae import config, data, training


def at_parameters(machine, flat, estimate):
  """estimate() with the machine's parameters set to the flat vector `flat`, then restored."""
  current = [v.numpy() for v in machine.parameters()]
  offsets = np.cumsum([v.size for v in current])[:-1]
  for variable, value in zip(machine.parameters(), np.split(flat, offsets)):
    variable.assign(value.reshape(variable.shape))
  try:
    return estimate()
  finally:
    for variable, value in zip(machine.parameters(), current):
      variable.assign(value)


class Check(keras.callbacks.Callback):
  """At each epoch end: running log Z − AIS at the running estimate's parameters."""

  def __init__(self, ais_betas):
    super().__init__()
    self.ais_betas = ais_betas
    self.lags = []

  def on_train_batch_end(self, batch, logs=None):
    self.lags.append(float(self.model.prior_machine.negative_phase_lag.numpy()))

  def on_epoch_end(self, epoch, logs=None):
    machine = self.model.prior_machine
    log_z, stderr = at_parameters(
        machine, machine.running_log_z_parameters.numpy(),
        lambda: machine.log_z_ais(self.ais_betas, 1024, seed=[7, epoch]))
    running = float(machine.running_log_z.numpy())
    print(f"step {int(self.model.train_steps.numpy()):6d}  running − AIS "
          f"{running - float(log_z):+8.3f}  (running s.e. "
          f"{float(machine.running_log_z_stderr.numpy()):.3f}, AIS s.e. {float(stderr):.3f})"
          f"  lag {np.mean(self.lags):+.4f} nats/step  kl {logs['kl']:.2f}  "
          f"loss {logs['loss']:.2f}", flush=True)
    self.lags = []


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=1500,
                      help="steps to train (also num_train_iter unless given)")
  parser.add_argument("--every", type=int, default=250)
  parser.add_argument("--ais_betas", type=int, default=10_000)
  parser.add_argument("--data", choices=("binarized_mnist", "synthetic"),
                      default="binarized_mnist")
  args, rest = parser.parse_known_args()
  overrides = {}
  for item in rest:
    key, value = item[2:].split("=", 1)
    try:
      overrides[key] = json.loads(value)
    except ValueError:
      overrides[key] = value
  hparams, _ = config.load_hparams("quickstart", {
      "num_train_iter": args.steps, **overrides, "log_dir": tempfile.mkdtemp()})
  if args.data == "synthetic":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
    import helpers  # pylint: disable=import-outside-toplevel
    dataset = helpers.synthetic_dataset()
  else:
    dataset = data.load_dataset("binarized_mnist")
  run = training.Run(hparams, dataset, log=lambda _: None)
  print(f"{hparams.struct} {hparams.baseline} sampler={hparams.sampler} "
        f"{hparams.num_chains} × {hparams.num_sweeps}, lr {hparams.base_lr}", flush=True)
  run.model.fit(data.train_dataset(dataset, hparams.train_batch_size, seed=hparams.seed),
                steps_per_epoch=args.every, epochs=args.steps // args.every, verbose=0,
                callbacks=[Check(args.ais_betas)])


if __name__ == "__main__":
  main()
