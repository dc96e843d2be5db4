"""Speed of the hot paths against the machine's floor, measured in one run.

    python bench/speed.py [--quick] [--cpu_time] [--json FILE]

For each item the table gives the measured time per unit of work, the floor, and their ratio.
The floor of an item is its arithmetic alone: the dense matrix products of the same shapes, in
the same order, as one compiled TensorFlow function on the same machine in the same run, with
nothing else (no random numbers, no nonlinearities, no bookkeeping). A ratio of 1.0 means the
item runs at the speed of its matrix products.

Items that sample also get an extended floor: the same products plus the arithmetic that no
sampler can drop, written as bare XLA-compiled TensorFlow — one threefry uniform and one logistic
σ per sampled unit (a Bernoulli draw), and for annealing one exponential per summed-out unit per
temperature (the log-weights need the free energy, a sum of softplus terms over those units, at
every temperature). On CPU the uniforms alone cost about two thirds of the products, so the
product floor is out of reach for a sampler; the extended floor is what remains for bookkeeping
to lose.

On a machine shared with other jobs wall time measures the neighbours: `--cpu_time` runs
TensorFlow on one thread and times by the process's CPU time instead (item and floor alike).

Items:
  train_*        one training step of the default configuration (2-layer-nonlin, dvaes_power,
                 batch 100, 1000 chains × 40 sweeps); floor: the sampler's 2·40 products of
                 [1000, 200]·[200, 200] plus every dense layer's forward product and its two
                 backward products at batch 100·K.
  gibbs          one block-Gibbs sweep of 1000 chains of a 200 + 200 RBM; floor: its 2 products.
  graph_gibbs    one colour-block sweep of 1000 chains of the 400-unit Chimera prior (first 400
                 nodes of C8, 2 colours); floor: its products [1000, 400]·[400, n_c] per colour.
  ais, pa        log Z by AIS, and by population annealing in 16 populations, at 1000
                 temperatures × 1024 samples (200 + 200 RBM); floor: 2 products of
                 [1024, 200]·[200, 200] per temperature.
  eval           IW evaluation of the 4-layer-nonlin model, per image × importance sample;
                 floor: the forward products of the 4 encoders and the decoder.
  dimod_sa       the prior's negative phase through the dimod adapter (dvae.samplers.DimodSampler)
                 around dwave-samplers' simulated annealing at fixed β = 1, 1000 chains × 40
                 sweeps of a 200 + 200 RBM (needs requirements-dwave.txt); floor: PCD's negative
                 phase at the same chains × sweeps, so the ratio is the adapter's cost against
                 the built-in sampler, not against matrix products. Simulated annealing updates
                 one spin at a time in C, where PCD multiplies matrices: the target allows 50×.
  memory         peak resident memory of a training process (default configuration).
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from dvae import config, data, graphs, training  # pylint: disable=g-import-not-at-top
from dvae.boltzmann import GraphBoltzmannMachine  # pylint: disable=g-import-not-at-top
from dvae.rbm import RBM  # pylint: disable=g-import-not-at-top


# Wall time, or the process's CPU time under --cpu_time.
clock = time.perf_counter


def best_time(fn, repeats, warmup=1):
  """The fastest of `repeats` timed calls of fn() (after `warmup` untimed ones), in seconds."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = clock()
    fn()
    times.append(clock() - start)
  return min(times)


def matmul_floor(shapes, repeats):
  """Seconds for one pass of bare products a[m, k]·b[k, n] for every (m, k, n) in `shapes`."""
  operands = [(tf.random.uniform([m, k]), tf.random.uniform([k, n])) for m, k, n in shapes]

  @tf.function
  def products():
    # Each product feeds a scalar into the next so that none can be skipped or reordered.
    carry = tf.constant(0.0)
    for a, b in operands:
      carry = tf.reduce_sum(tf.matmul(a + carry * 0.0, b)[:1, :1])
    return carry

  return best_time(lambda: products().numpy(), repeats)


def sampler_floor(num_chains, num_keep, num_sum, num_steps, annealing, repeats):
  """Seconds for `num_steps` bare steps of the extended floor (module docstring).

  Each step: a = z_k·W, one uniform per unit of both sides from a single threefry draw,
  z_s = [u < σ(a)], z_k = [u' < σ(z_s·Wᵀ)], and with `annealing` Σ e^{−β|a|} summed into a
  carry.
  """
  w = tf.random.normal([num_keep, num_sum], stddev=0.1)
  start = tf.cast(tf.random.uniform([num_chains, num_keep]) < 0.5, tf.float32)

  @tf.function(jit_compile=True)
  def steps(z_keep):
    def step(i, z_keep, carry):
      activation = tf.matmul(z_keep, w)
      if annealing:
        beta = tf.cast(i, tf.float32) / num_steps
        carry += tf.reduce_sum(tf.exp(-beta * tf.abs(activation)), axis=-1)
      uniform = tf.random.stateless_uniform([num_chains, num_sum + num_keep], tf.stack([i, 0]),
                                            alg="threefry")
      z_sum = tf.cast(uniform[:, :num_sum] < tf.sigmoid(activation), tf.float32)
      z_keep = tf.cast(uniform[:, num_sum:] < tf.sigmoid(tf.matmul(z_sum, w, transpose_b=True)),
                       tf.float32)
      return i + 1, z_keep, carry

    return tf.while_loop(lambda i, *_: i < num_steps, step,
                         (tf.constant(0), z_keep, tf.zeros([num_chains])))[1:]

  return best_time(lambda: [t.numpy() for t in steps(start)], repeats)


def network_shapes(hp, rows):
  """(m, k, n) of the forward products of every dense layer of the encoders and decoder."""
  units, layers, hidden = hp.latent_units, hp.num_latent_layers, hp.num_hidden
  shapes = []
  for i in range(layers):
    widths = [784 + i * units] + [200] * hidden + [units]
    shapes += [(rows, a, b) for a, b in zip(widths, widths[1:])]
  widths = [layers * units] + [200] * hidden + [784]
  shapes += [(rows, a, b) for a, b in zip(widths, widths[1:])]
  return shapes


def training_shapes(hp):
  rows = hp.train_batch_size * hp.k
  forward = network_shapes(hp, rows)
  # Backward: the gradient with respect to the input and to the kernel of each layer.
  backward = [(m, n, k) for m, k, n in forward] + [(k, m, n) for m, k, n in forward]
  half = hp.latent_units * hp.num_latent_layers // 2
  sampler = [(hp.num_chains, half, half)] * (2 * hp.num_sweeps)
  return sampler + forward + backward


def bench_training(args, k, sampler):
  hp, _ = config.load_hparams(None, dict(
      struct="2-layer-nonlin", baseline="dvaes_power", k=k, sampler=sampler,
      log_dir=args.scratch, num_train_iter=1_000_000))
  dataset = data.load_dataset("binarized_mnist")
  model = training.Run(hp, dataset, log=lambda _: None).model
  batches = data.train_dataset(dataset, hp.train_batch_size, seed=0)
  # One epoch of `steps` steps through Keras's fit, as run_training.py trains; each fit call
  # has a fixed cost of a few milliseconds, which fewer than ten steps would not amortise.
  steps = 10 if args.quick else 20
  seconds = best_time(lambda: model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0),
                      repeats=2 if args.quick else 3) / steps
  half = hp.latent_units * hp.num_latent_layers // 2
  network = network_shapes(hp, hp.train_batch_size * hp.k)
  network_floor = matmul_floor(
      network + [(m, n, k) for m, k, n in network] + [(k, m, n) for m, k, n in network],
      repeats=5)
  sampler = sampler_floor(hp.num_chains, half, half, hp.num_sweeps, sampler == "pa", repeats=5)
  return seconds, matmul_floor(training_shapes(hp), repeats=5), network_floor + sampler


def bench_gibbs(args):
  rbm = RBM(200, 200, num_chains=1000)
  rbm.w.assign(tf.random.normal([200, 200], stddev=0.1))
  sweeps = 10 if args.quick else 100
  sweep = tf.function(lambda z: rbm.gibbs_sweeps(z, sweeps, seed=[1, 2]))
  seconds = best_time(lambda: sweep(rbm.chains).numpy(), repeats=3) / sweeps
  return (seconds, matmul_floor([(1000, 200, 200)] * 2, repeats=20),
          sampler_floor(1000, 200, 200, sweeps, False, repeats=3) / sweeps)


def bench_graph_gibbs(args):
  machine = GraphBoltzmannMachine(graphs.latent_graph("chimera", 400), num_chains=1000)
  machine.couplings.assign(tf.random.normal(machine.couplings.shape, stddev=0.1))
  sweeps = 10 if args.quick else 100
  sweep = tf.function(lambda z: machine.gibbs_sweeps(z, sweeps, seed=[1, 2]))
  seconds = best_time(lambda: sweep(machine.chains).numpy(), repeats=3) / sweeps
  shapes = [(1000, 400, int(n)) for n in np.bincount(machine.colours)]
  return seconds, matmul_floor(shapes, repeats=20)


def bench_log_z(args, method):
  rbm = RBM(200, 200)
  rbm.w.assign(tf.random.normal([200, 200], stddev=0.1))
  num_betas = 100 if args.quick else 1000
  estimate = getattr(rbm, f"log_z_{method}")
  seconds = best_time(lambda: estimate(num_betas, 1024, seed=[1, 2])[0].numpy(),
                      repeats=2 if args.quick else 3)
  floor = matmul_floor([(1024, 200, 200)] * 2 * num_betas, repeats=3)
  return seconds, floor, sampler_floor(1024, 200, 200, num_betas, True, repeats=3), num_betas


def bench_eval(args):
  hp, _ = config.load_hparams(None, dict(struct="4-layer-nonlin", baseline="dvaes_power",
                                         log_dir=args.scratch, num_train_iter=1_000_000))
  dataset = data.load_dataset("binarized_mnist")
  model = training.Run(hp, dataset, log=lambda _: None).model
  images, samples = 100, 100 if args.quick else 1000
  log_weights = tf.function(model.discrete_log_weights)
  batch = tf.constant(dataset.test[:images])
  seconds = best_time(lambda: log_weights(batch, samples, tf.constant([0, 1])).numpy(),
                      repeats=2 if args.quick else 3)
  floor = matmul_floor(network_shapes(hp, images * samples), repeats=3)
  return seconds / (images * samples), floor / (images * samples)


def bench_dimod(args):
  """Seconds per negative phase of the dimod adapter around simulated annealing, and of PCD."""
  from dwave.samplers import SimulatedAnnealingSampler  # pylint: disable=g-import-not-at-top
  from dvae.samplers import DimodSampler  # pylint: disable=g-import-not-at-top
  times = []
  for sampler in (DimodSampler(SimulatedAnnealingSampler(), num_sweeps=40, beta_range=[1, 1],
                               proposal_acceptance_criteria="Gibbs"), "pcd"):
    rbm = RBM(200, 200, num_chains=1000, num_sweeps=40, sampler=sampler)
    rbm.w.assign(tf.random.normal([200, 200], stddev=0.1))
    step = tf.function(rbm.train_log_z)
    times.append(best_time(lambda: step(tf.constant([1, 2])).numpy(),  # pylint: disable=cell-var-from-loop
                           repeats=2 if args.quick else 5))
  return tuple(times)


def bench_memory(args):
  """Peak RSS (MiB) of a separate process that trains the default configuration."""
  steps = 5 if args.quick else 50
  script = (
      "import sys; sys.path.insert(0, {repo!r});"
      "from dvae import config, data, training;"
      "hp, _ = config.load_hparams(None, dict(struct='2-layer-nonlin', log_dir={scratch!r},"
      " num_train_iter=1000000));"
      "d = data.load_dataset('binarized_mnist');"
      "m = training.Run(hp, d, log=lambda _: None).model;"
      "m.fit(data.train_dataset(d, hp.train_batch_size, seed=0), steps_per_epoch={steps},"
      " verbose=0);"
      # VmHWM is the process's own peak: unlike ru_maxrss of a child, it does not count the
      # pages the child shared with this (large) process between fork and exec.
      "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
  ).format(repo=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
           scratch=args.scratch, steps=steps)
  result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                          text=True)
  return int(result.stdout.split()[-1]) / 1024


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer repeats; under two minutes")
  parser.add_argument("--cpu_time", action="store_true",
                      help="one TensorFlow thread, timed by process CPU time (shared machines)")
  parser.add_argument("--json", help="also write the table to this JSON file")
  parser.add_argument("--scratch", default="/tmp/dvae-bench", help="scratch log directory")
  args = parser.parse_args()
  if args.cpu_time:
    global clock  # pylint: disable=global-statement
    clock = time.process_time
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

  rows = []

  def add(item, unit, seconds, floor, target, extended_floor=None):
    rows.append(dict(item=item, unit=unit, seconds=seconds, floor_seconds=floor,
                     ratio=seconds / floor, target_ratio=target,
                     extended_floor_seconds=extended_floor,
                     extended_ratio=extended_floor and seconds / extended_floor))

  for k in (1, 5):
    for sampler in ("pcd", "pa"):
      seconds, floor, extended = bench_training(args, k, sampler)
      add(f"train_k{k}_{sampler}", "step", seconds, floor, 1.5, extended)
  seconds, floor, extended = bench_gibbs(args)
  add("gibbs", "sweep (1000 chains, 200+200)", seconds, floor, 1.3, extended)
  add("graph_gibbs", "sweep (1000 chains, Chimera 400)", *bench_graph_gibbs(args), 1.3)
  for method in ("ais", "pa"):
    seconds, floor, extended, num_betas = bench_log_z(args, method)
    add(method, f"log Z ({num_betas} temperatures × 1024)", seconds, floor, 1.3, extended)
  add("eval", "image × sample (4-layer-nonlin)", *bench_eval(args), 1.5)
  add("dimod_sa", "negative phase (1000 chains × 40)", *bench_dimod(args), 50.0)
  memory = bench_memory(args)

  print(f"{'item':<14} {'unit':<36} {'time':>12} {'floor':>12} {'ratio':>7} {'target':>7} "
        f"{'ext. floor':>12} {'ratio':>7}")
  for row in rows:
    extended = (f"{row['extended_floor_seconds'] * 1e3:>10.3f}ms {row['extended_ratio']:>7.2f}"
                if row["extended_floor_seconds"] else "")
    print(f"{row['item']:<14} {row['unit']:<36} {row['seconds'] * 1e3:>10.3f}ms "
          f"{row['floor_seconds'] * 1e3:>10.3f}ms {row['ratio']:>7.2f} {row['target_ratio']:>7.1f} "
          f"{extended}")
  print(f"{'memory':<14} {'peak RSS of a training process':<36} {memory:>10.0f}MiB "
        f"{'':>12} {'':>7} {'≤2048':>7}")
  for row in rows:
    if row["item"].startswith("train"):
      print(f"{row['item']}: {1 / row['seconds']:.1f} steps/s; 1e6 steps ≈ "
            f"{row['seconds'] * 1e6 / 3600:.1f} h")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"rows": rows, "peak_rss_mib": memory,
                 "device": tf.config.list_logical_devices()[0].device_type,
                 "quick": args.quick, "cpu_time": args.cpu_time}, f, indent=2)


if __name__ == "__main__":
  main()
