"""Accuracy and wall time of the RBM's AIS and population-annealing log Z against exact log Z.

The default is the paper's setting (1000 inverse temperatures, 1024 samples) on a 20 + 200-unit
RBM, whose 20-unit side makes exact enumeration possible, with biases ~ N(0, bias_scale²) and
couplings W ~ N(0, scale²) for a few scales around those a trained model reaches:

    python bench/log_z_accuracy.py --scales 0.1 0.3 0.5 --repeats 5

For each scale and method the table gives the mean and the largest |error| over the repeats (each
with its own seed), the mean reported standard error, how many repeats had |error| ≤ 2 · stderr,
and the mean wall time of one estimate.
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from dvae.rbm import RBM


def random_rbm(num_left, num_right, scale, bias_scale, seed):
  rng = np.random.default_rng(seed)
  rbm = RBM(num_left, num_right)
  rbm.b1.assign(rng.normal(0.0, bias_scale, num_left))
  rbm.b2.assign(rng.normal(0.0, bias_scale, num_right))
  rbm.w.assign(rng.normal(0.0, scale, (num_left, num_right)))
  return rbm


def timed(fn):
  start = time.perf_counter()
  estimate, stderr = (float(v) for v in fn())
  return estimate, stderr, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_left", type=int, default=20)
  parser.add_argument("--num_right", type=int, default=200)
  parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 0.3, 0.5])
  parser.add_argument("--bias_scale", type=float, default=1.0)
  parser.add_argument("--num_betas", type=int, default=1000)
  parser.add_argument("--num_samples", type=int, default=1024)
  parser.add_argument("--num_populations", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  methods = {
      "ais": lambda rbm, seed: rbm.log_z_ais(args.num_betas, args.num_samples, seed=seed),
      "pa": lambda rbm, seed: rbm.log_z_pa(args.num_betas, args.num_samples, seed=seed,
                                           num_populations=args.num_populations),
  }
  print(f"RBM {args.num_left} + {args.num_right}, b ~ N(0, {args.bias_scale}²), "
        f"{args.num_betas} inverse temperatures, {args.num_samples} samples "
        f"(PA: {args.num_populations} populations), {args.repeats} repeats")
  print(f"{'scale':>6} {'exact':>10} {'exact s':>8} {'method':>6} {'mean err':>9} "
        f"{'max|err|':>9} {'stderr':>8} {'≤2se':>5} {'time s':>7}")
  for scale in args.scales:
    rbm = random_rbm(args.num_left, args.num_right, scale, args.bias_scale, args.seed)
    exact, _, exact_time = timed(rbm.log_z_exact)
    for name, method in methods.items():
      method(rbm, tf.constant([args.seed, -1]))  # Traces the graph outside the timing.
      runs = np.array([timed(lambda: method(rbm, tf.constant([args.seed, r])))
                       for r in range(args.repeats)])
      errors, stderrs, times = runs[:, 0] - exact, runs[:, 1], runs[:, 2]
      covered = int(np.sum(np.abs(errors) <= 2 * stderrs))
      print(f"{scale:6.2f} {exact:10.3f} {exact_time:8.2f} {name:>6} {errors.mean():9.4f} "
            f"{np.abs(errors).max():9.4f} {stderrs.mean():8.4f} {covered:>2}/{args.repeats:<2} "
            f"{times.mean():7.2f}")


if __name__ == "__main__":
  main()
