"""Accuracy and wall time of the RBM's AIS and population-annealing log Z against a reference.

AIS's Ẑ is unbiased, so log Ẑ is a stochastic lower bound on log Z: its error is downward on
average, and an NLL computed with it is optimistic by the same amount. This measures it.

Random RBMs (the default): a 20 + 200-unit RBM, whose 20-unit side makes exact enumeration the
reference, with biases ~ N(0, bias_scale²) and couplings W ~ N(0, scale²) for a few scales:

    python bench/log_z_accuracy.py --scales 0.1 0.3 0.5 --repeats 5

Trained RBMs: `--weights` is an .npz of b1, b2, w (such as tests/trained_rbm_200_200.npz), or
a run directory whose best checkpoint holds them; `--sharpen` multiplies them by each factor
(a stand-in for longer training), and the reference is exact where the smaller side has at
most 20 units, else AIS with `--reference_betas` temperatures:

    python bench/log_z_accuracy.py --weights tests/trained_rbm_200_200.npz --sharpen 1 2 4 \
        --settings ais:1000:linear ais:10000:linear ais:10000:quadratic --repeats 3

For each weight set and setting (method:temperatures:schedule) the table gives the mean and the
largest |error| over the repeats (each with its own seed), the mean reported standard error, how
many repeats had |error| ≤ 2 · stderr, and the mean wall time of one estimate. The row
`checked` is `RBM.log_z_ais_checked` at its settings (the final evaluation's): its "stderr"
column is the error it reports, stderr + |difference to 10× fewer temperatures|, and `≤2se`
then counts |error| ≤ that error.
"""

import argparse
import glob
import os
import time

import numpy as np
import tensorflow as tf

from dvae.boltzmann import MAX_EXACT_UNITS
from dvae.rbm import RBM


def random_rbm(num_left, num_right, scale, bias_scale, seed):
  rng = np.random.default_rng(seed)
  return rbm_of(rng.normal(0.0, bias_scale, num_left), rng.normal(0.0, bias_scale, num_right),
                rng.normal(0.0, scale, (num_left, num_right)))


def rbm_of(b1, b2, w):
  rbm = RBM(len(b1), len(b2))
  rbm.b1.assign(b1)
  rbm.b2.assign(b2)
  rbm.w.assign(w)
  return rbm


def trained_weights(path):
  """(b1, b2, w) of an .npz file, or of the best checkpoint of a run directory."""
  if path.endswith(".npz"):
    weights = np.load(path)
    return weights["b1"], weights["b2"], weights["w"]
  indexes = glob.glob(os.path.join(path, "**", "checkpoints", "best", "ckpt-*.index"),
                      recursive=True)
  if not indexes:
    raise SystemExit(f"no .npz and no best checkpoint under {path}")
  reader = tf.train.load_checkpoint(max(indexes, key=os.path.getmtime)[:-len(".index")])
  return tuple(reader.get_tensor(f"model/rbm/{name}/.ATTRIBUTES/VARIABLE_VALUE")
               for name in ("b1", "b2", "w"))


def timed(fn):
  start = time.perf_counter()
  estimate, stderr = (float(v) for v in fn())
  return estimate, stderr, time.perf_counter() - start


def estimator(setting, num_samples, num_populations):
  """A function (rbm, seed) → (log Ẑ, error) for "checked" or "method:betas:schedule"."""
  if setting == "checked":
    def checked(rbm, seed):
      log_z, _, check = rbm.log_z_ais_checked(num_samples=num_samples, seed=seed)
      return log_z, check["error"]
    return checked
  method, num_betas, schedule = setting.split(":")
  if method == "pa":
    return lambda rbm, seed: rbm.log_z_pa(int(num_betas), num_samples, seed,
                                          num_populations, schedule)
  return lambda rbm, seed: rbm.log_z_ais(int(num_betas), num_samples, seed, schedule)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_left", type=int, default=20)
  parser.add_argument("--num_right", type=int, default=200)
  parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 0.3, 0.5])
  parser.add_argument("--bias_scale", type=float, default=1.0)
  parser.add_argument("--weights", help=".npz of b1, b2, w, or a run directory")
  parser.add_argument("--sharpen", type=float, nargs="+", default=[1.0])
  parser.add_argument("--settings", nargs="+",
                      default=["ais:1000:linear", "pa:1000:linear"],
                      help="method:temperatures:schedule, or checked")
  parser.add_argument("--num_samples", type=int, default=1024)
  parser.add_argument("--num_populations", type=int, default=16)
  parser.add_argument("--reference_betas", type=int, default=100_000)
  parser.add_argument("--reference_samples", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  if args.weights:
    weights = trained_weights(args.weights)
    machines = [(f"×{factor:g}", rbm_of(*(factor * np.asarray(v) for v in weights)))
                for factor in args.sharpen]
  else:
    machines = [(f"W {scale:g}", random_rbm(args.num_left, args.num_right, scale,
                                            args.bias_scale, args.seed))
                for scale in args.scales]
  print(f"{args.num_samples} samples (PA: {args.num_populations} populations), "
        f"{args.repeats} repeats; reference: exact, or AIS {args.reference_betas} linear × "
        f"{args.reference_samples}")
  print(f"{'prior':>8} {'reference':>10} {'ref s.e.':>8} {'setting':>20} {'mean err':>9} "
        f"{'max|err|':>9} {'stderr':>8} {'≤2se':>5} {'time s':>7}")
  for name, rbm in machines:
    if min(rbm.num_left, rbm.num_right) <= MAX_EXACT_UNITS:
      reference, reference_stderr, _ = timed(rbm.log_z_exact)
    else:
      reference, reference_stderr, _ = timed(lambda: rbm.log_z_ais(
          args.reference_betas, args.reference_samples, tf.constant([args.seed, -2]),
          "linear"))
    for setting in args.settings:
      method = estimator(setting, args.num_samples, args.num_populations)
      method(rbm, tf.constant([args.seed, -1]))  # Traces the graph outside the timing.
      runs = np.array([timed(lambda: method(rbm, tf.constant([args.seed, r])))
                       for r in range(args.repeats)])
      errors, stderrs, times = runs[:, 0] - reference, runs[:, 1], runs[:, 2]
      covered = int(np.sum(np.abs(errors) <= 2 * stderrs if setting != "checked"
                           else np.abs(errors) <= stderrs))
      print(f"{name:>8} {reference:10.3f} {reference_stderr:8.4f} {setting:>20} "
            f"{errors.mean():9.4f} {np.abs(errors).max():9.4f} {stderrs.mean():8.4f} "
            f"{covered:>2}/{args.repeats:<2} {times.mean():7.2f}", flush=True)


if __name__ == "__main__":
  main()
