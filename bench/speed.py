"""Speed of the hot paths against the machine's floor, measured in one run.

    python bench/speed.py [--quick] [--cpu_time] [--json FILE]

For each item the table gives the measured time per unit of work, the floor, and their ratio.
The floor of an item is its arithmetic alone: the dense matrix products of the same shapes, in
the same order, as one compiled TensorFlow function on the same machine in the same run, with
nothing else (no random numbers, no nonlinearities, no bookkeeping). A ratio of 1.0 means the
item runs at the speed of its matrix products.

Items also get an extended floor: the same products plus the arithmetic that no implementation
can drop, written as bare TensorFlow in one compiled function (XLA or TensorFlow's graph,
whichever runs faster). For a sampler: one threefry uniform and one logistic σ per sampled unit
(a Bernoulli draw); for annealing, the log-weights on the marginal path, which need the free
energy of the current state (a sum of softplus terms over the summed-out units) at the step's
two temperatures, so two exponentials per summed-out unit per step; for population annealing
also a softmax, a cumulative sum and a gather of the states per step. On CPU the uniforms alone
cost about two thirds of the products, so the product floor is out of reach for a sampler. For
training, `bare_step_floor` (the whole gradient step outside the sampler, below) plus the
sampler's; for evaluation, `bare_eval_floor`. The extended floor is what remains for
bookkeeping to lose.

On a machine shared with other jobs wall time measures the neighbours: `--cpu_time` runs
TensorFlow on one thread and times by the process's CPU time instead (item and floor alike).

Items:
  train_small_x* one training step of a small configuration (1-layer-lin, 100 chains × 5 PCD
                 sweeps, K = 1) at one step per call of fit's compiled loop (x1) and ten (x10,
                 `--steps_per_execution=10`); floors as for train_*.
  train_*        one training step of the default configuration (2-layer-nonlin, dvaes_power,
                 batch 100, 1000 chains × 40 sweeps); floor: the sampler's 2·40 products of
                 [1000, 200]·[200, 200], every dense layer's forward product and its two
                 backward products at batch 100·K, and the prior's (`prior_shapes`: mean field,
                 energies of the means and of the chains, the running log Z's energy change).
  gibbs          one block-Gibbs sweep of 1000 chains of a 200 + 200 RBM; floor: its 2 products.
  graph_gibbs    one colour-block sweep of 1000 chains of the 400-unit Chimera prior (first 400
                 nodes of C8, 2 colours); floor: its products [1000, 400]·[400, n_c] per colour;
                 extended floor: with a threefry uniform and a σ per unit (`colour_sweep_floor`).
  ais, pa        log Z by AIS, and by population annealing in 16 populations, at 1000
                 temperatures × 1024 samples (200 + 200 RBM); floor: 2 products of
                 [1024, 200]·[200, 200] per temperature.
  eval           IW evaluation of the 4-layer-nonlin model, per image × importance sample;
                 floor: the forward products of the 4 encoders and the decoder, and the
                 prior's energy [N, 200]·[200, 200].
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
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from dvae import config, data, graphs, priors, training  # pylint: disable=g-import-not-at-top
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


def fastest_compilation(fn, repeats, *args):
  """Seconds of fn(*args) compiled as a TensorFlow graph or by XLA, whichever is faster.

  On CPU neither wins everywhere: XLA fuses elementwise arithmetic and has the faster threefry
  generator, TensorFlow's graph runs the products through oneDNN, which is faster at these
  shapes (an IW evaluation measured 30 % slower under XLA).
  """
  return min(best_time(lambda: tf.nest.map_structure(lambda t: t.numpy(), compiled(*args)),  # pylint: disable=cell-var-from-loop
                       repeats)
             for compiled in (tf.function(fn), tf.function(fn, jit_compile=True)))


def sampler_floor(num_chains, num_keep, num_sum, num_steps, annealing, repeats, resample=False):
  """Seconds for `num_steps` bare steps of the extended floor (module docstring).

  Each step: a = z_k·W, one uniform per unit of both sides from a single threefry draw,
  z_s = [u < σ(a)], z_k = [u' < σ(z_s·Wᵀ)]. With `annealing`, the free energy of the current
  state at the step's two temperatures: e^{−β|a|} and e^{−β'|a|} summed into the log-weights.
  With `resample`, the states are then gathered by ancestor indices from the cumulative
  normalised weights (one softmax, one cumulative sum, one gather of [N, n_k] per step).
  """
  w = tf.random.normal([num_keep, num_sum], stddev=0.1)
  start = tf.cast(tf.random.uniform([num_chains, num_keep]) < 0.5, tf.float32)

  @tf.function(jit_compile=True)
  def steps(z_keep):
    def step(i, z_keep, log_w):
      activation = tf.matmul(z_keep, w)
      if annealing:
        beta, beta_before = (tf.cast(j, tf.float32) / num_steps for j in (i + 1, i))
        magnitude = tf.abs(activation)
        log_w += tf.reduce_sum(tf.exp(-beta * magnitude) - tf.exp(-beta_before * magnitude),
                               axis=-1)
      if resample:
        cdf = tf.math.cumsum(tf.nn.softmax(log_w))
        ancestors = tf.minimum(tf.cast(num_chains * cdf, tf.int32), num_chains - 1)
        z_keep, activation = tf.gather(z_keep, ancestors), tf.gather(activation, ancestors)
        log_w = tf.zeros_like(log_w)
      uniform = tf.random.stateless_uniform([num_chains, num_sum + num_keep], tf.stack([i, 0]),
                                            alg="threefry")
      z_sum = tf.cast(uniform[:, :num_sum] < tf.sigmoid(activation), tf.float32)
      z_keep = tf.cast(uniform[:, num_sum:] < tf.sigmoid(tf.matmul(z_sum, w, transpose_b=True)),
                       tf.float32)
      return i + 1, z_keep, log_w

    return tf.while_loop(lambda i, *_: i < num_steps, step,
                         (tf.constant(0), z_keep, tf.zeros([num_chains])))[1:]

  return best_time(lambda: [t.numpy() for t in steps(start)], repeats)


def colour_sweep_floor(num_chains, colour_sizes, num_sweeps, repeats):
  """Seconds for `num_sweeps` bare colour-block Gibbs sweeps (units ordered by colour).

  Each sweep: one threefry uniform per unit, and for each colour class c in turn
  z_c = [u_c < σ(z·W_{:,c})], a product [N, n]·[n, n_c].
  """
  num_units = sum(colour_sizes)
  w = tf.random.normal([num_units, num_units], stddev=0.1)
  bounds = np.cumsum([0] + list(colour_sizes))
  start = tf.cast(tf.random.uniform([num_chains, num_units]) < 0.5, tf.float32)

  @tf.function(jit_compile=True)
  def sweeps(z):
    def sweep(i, z):
      uniform = tf.random.stateless_uniform([num_chains, num_units], tf.stack([i, 0]),
                                            alg="threefry")
      for low, high in zip(bounds[:-1], bounds[1:]):
        block = tf.cast(uniform[:, low:high] < tf.sigmoid(tf.matmul(z, w[:, low:high])),
                        tf.float32)
        z = tf.concat([z[:, :low], block, z[:, high:]], axis=1)
      return i + 1, z

    return tf.while_loop(lambda i, _: i < num_sweeps, sweep, (tf.constant(0), z))[1]

  return best_time(lambda: sweeps(start).numpy(), repeats)


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


def prior_shapes(hp):
  """(m, k, n) of the products of the DVAE# prior terms outside the sampler's sweeps.

  The mean-field log p(ζ) (`dvae.priors.MarginalRelaxationPrior`): 2 products per iteration and
  the energy of the means with its coupling gradient, at B·K rows; the surrogate −mean E(chains)
  with its coupling gradient and the running log Z's energy change (value and tangent), at
  the sampler's chains.
  """
  rows, half = hp.train_batch_size * hp.k, hp.latent_units * hp.num_latent_layers // 2
  chains = hp.num_chains
  return ([(rows, half, half)] * (2 * priors.MEAN_FIELD_ITERATIONS + 1) + [(half, rows, half)]
          + [(chains, half, half), (half, chains, half)] + [(chains, half, half)] * 2)


def training_shapes(hp):
  rows = hp.train_batch_size * hp.k
  forward = network_shapes(hp, rows)
  # Backward: the gradient with respect to the input and to the kernel of each layer.
  backward = [(m, n, k) for m, k, n in forward] + [(k, m, n) for m, k, n in forward]
  half = hp.latent_units * hp.num_latent_layers // 2
  sampler = [(hp.num_chains, half, half)] * (2 * hp.num_sweeps)
  return sampler + forward + backward + prior_shapes(hp)


def bare_mlp_variables(hp, width_in, width_out):
  """Variables of an MLP of the model's shape: per hidden layer a kernel, the batch norm's γ,
  shift and moving moments; then the output kernel and bias."""
  widths = [width_in] + [hp.hidden_units] * hp.num_hidden
  hidden = [dict(w=tf.Variable(tf.random.normal([a, b], stddev=a ** -0.5)),
                 gamma=tf.Variable(tf.ones([b])), shift=tf.Variable(tf.zeros([b])),
                 mean=tf.Variable(tf.zeros([b])), var=tf.Variable(tf.ones([b])))
            for a, b in zip(widths, widths[1:])]
  return (hidden, tf.Variable(tf.random.normal([widths[-1], width_out], stddev=widths[-1] ** -0.5)),
          tf.Variable(tf.zeros([width_out])))


def bare_mlp(variables, h, training):
  """dense → batch norm (batch moments and moving averages if `training`) → tanh, then dense."""
  hidden, kernel, bias = variables
  for layer in hidden:
    a = tf.matmul(h, layer["w"])
    if training:
      mean, var = tf.nn.moments(a, axes=[0])
      layer["mean"].assign(0.8 * layer["mean"] + 0.2 * mean)
      layer["var"].assign(0.8 * layer["var"] + 0.2 * var)
    else:
      mean, var = layer["mean"], layer["var"]
    h = tf.tanh((a - mean) * tf.math.rsqrt(var + 1e-2) * layer["gamma"] + layer["shift"])
  return tf.matmul(h, kernel) + bias


def bare_energy(z, b1, b2, w):
  """E(z) of an RBM with halves b1, b2 and couplings w."""
  half = b1.shape[0]
  z1, z2 = z[:, :half], z[:, half:]
  return -(tf.linalg.matvec(z1, b1) + tf.linalg.matvec(z2, b2)
           + tf.reduce_sum(tf.matmul(z1, w) * z2, axis=-1))


def bare_step_floor(hp, repeats):
  """Seconds for one bare compiled DVAE# (power-function) gradient step without the sampler.

  The arithmetic of a training step that no bookkeeping can drop, written as plain TensorFlow
  in one function (`fastest_compilation`): the encoders and decoder (dense → batch norm → tanh,
  batch-norm moving averages), two uniforms per latent unit for the mixture draw
  z = [u < σ(l)], ζ₀ = u'^β, with its implicit gradient ∂ζ/∂l = q(1 − q)(R(ζ|0) − R(ζ|1)) / q(ζ),
  log q(ζ|x), the mean-field log p(ζ) (fields b(ζ), 5 block updates, energy and entropy), the
  Bernoulli log-likelihood, the importance weights for K > 1, the weight decay, the surrogate
  −mean E(chains), the running log Z's energy change at the chains, and Adam's update of every
  parameter. The products are the same as in `training_shapes` less the sampler's.
  """
  rows, units, layers = hp.train_batch_size * hp.k, hp.latent_units, hp.num_latent_layers
  half, beta, lam = units * layers // 2, float(hp.beta), 1.0 / float(hp.beta)
  floor = float(np.finfo(np.float32).epsneg)

  encoders = [bare_mlp_variables(hp, 784 + i * units, units) for i in range(layers)]
  decoder = bare_mlp_variables(hp, layers * units, 784)
  b1, b2 = tf.Variable(tf.zeros([half])), tf.Variable(tf.zeros([half]))
  w = tf.Variable(tf.random.normal([half, half], stddev=0.1))
  trainable = [b1, b2, w] + [v for hidden, kernel, bias in encoders + [decoder]
                             for v in [kernel, bias] + [l[n] for l in hidden
                                                        for n in ("w", "gamma", "shift")]]
  decayed = [w] + [v for hidden, kernel, _ in encoders + [decoder]
                   for v in [kernel] + [l[n] for l in hidden for n in ("w", "gamma")]]
  moments = [[tf.Variable(tf.zeros_like(v)) for v in trainable] for _ in range(2)]
  previous = [tf.Variable(v) for v in (b1, b2, w)]
  x = tf.cast(tf.random.uniform([rows, 784]) < 0.3, tf.float32)
  chains = tf.cast(tf.random.uniform([hp.num_chains, 2 * half]) < 0.5, tf.float32)

  def log_r0(zeta):
    return -math.log(beta) + (lam - 1.0) * tf.math.log(tf.maximum(zeta, floor))

  @tf.custom_gradient
  def mixture_draw(logits, uniform, uniform0):
    q = tf.sigmoid(logits)
    zeta0 = tf.exp(beta * tf.math.log(uniform0))
    zeta = tf.where(uniform < q, 1.0 - zeta0, zeta0)

    def grad(upstream):
      cdf0, cdf1 = tf.exp(lam * tf.math.log(zeta)), 1.0 - tf.exp(lam * tf.math.log1p(-zeta))
      density = (1.0 - q) * tf.exp(log_r0(zeta)) + q * tf.exp(log_r0(1.0 - zeta))
      return upstream * q * (1.0 - q) * (cdf0 - cdf1) / density, None, None
    return zeta, grad

  def step(seed):
    with tf.GradientTape() as tape:
      inputs, zetas, log_q = [x - 0.3], [], 0.0
      for i, variables in enumerate(encoders):
        logits = bare_mlp(variables, tf.concat(inputs + zetas, axis=-1), True)
        uniform = tf.random.stateless_uniform([rows, 2 * units], seed + i)
        zeta = mixture_draw(logits, uniform[:, :units], uniform[:, units:])
        log_q += tf.reduce_sum(tf.math.reduce_logsumexp(tf.stack(
            [-tf.nn.softplus(logits) + log_r0(zeta),
             -tf.nn.softplus(-logits) + log_r0(1.0 - zeta)]), axis=0), axis=-1)
        zetas.append(zeta)
      zeta = tf.concat(zetas, axis=-1)
      log_px = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=x, logits=bare_mlp(decoder, zeta, True)), axis=-1)
      base = log_r0(zeta)
      field = log_r0(1.0 - zeta) - base
      f1, f2 = tf.stop_gradient(field[:, :half]) + b1, tf.stop_gradient(field[:, half:]) + b2
      m1 = tf.fill([rows, half], 0.5)
      for _ in range(priors.MEAN_FIELD_ITERATIONS):
        logits2 = tf.matmul(m1, w) + f2
        logits1 = tf.matmul(tf.sigmoid(logits2), w, transpose_b=True) + f1
        m1 = tf.sigmoid(logits1)
      mf_logits = tf.stop_gradient(tf.concat([logits1, logits2], axis=-1))
      means = tf.sigmoid(mf_logits)
      log_p = (-bare_energy(means, b1, b2, w) + tf.reduce_sum(field * means + base, axis=-1) + tf.reduce_sum(
          tf.nn.softplus(mf_logits) - means * mf_logits, axis=-1))
      surrogate = tf.reduce_mean(-bare_energy(chains, b1, b2, w))
      log_w = tf.reshape(log_px - log_q + log_p + surrogate - tf.stop_gradient(surrogate),
                         [-1, hp.k])
      objective = tf.reduce_mean(tf.reduce_sum(
          tf.stop_gradient(tf.nn.softmax(log_w, axis=-1)) * log_w, axis=-1))
      loss = 0.5e-4 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in decayed]) - objective
    grads = tape.gradient(loss, trainable)
    z1, z2 = chains[:, :half], chains[:, half:]
    change = -(tf.linalg.matvec(z1, b1 - previous[0]) + tf.linalg.matvec(z2, b2 - previous[1])
               + tf.reduce_sum(tf.matmul(z1, w - previous[2]) * z2, axis=-1))
    running = tf.reduce_logsumexp(-change)
    for p, v in zip(previous, (b1, b2, w)):
      p.assign(v)
    for v, g, m, s in zip(trainable, grads, *moments):
      m.assign(0.9 * m + 0.1 * g)
      s.assign(0.999 * s + 0.001 * tf.square(g))
      v.assign_sub(1e-3 * m / (tf.sqrt(s) + 1e-3))
    return loss + running

  return fastest_compilation(step, repeats, tf.constant([1, 2]))


def bench_training(args, k, sampler, struct="2-layer-nonlin", steps_per_execution=1, steps=10,
                   **hparams):
  """(seconds per step, floor, extended floor) of `fit` on the configuration; one epoch of
  `steps` (twice that without --quick) steps per fit call, as run_training.py trains: each call
  has a fixed cost of a few milliseconds, which fewer steps would not amortise."""
  hp, _ = config.load_hparams(None, dict(
      struct=struct, baseline="dvaes_power", k=k, sampler=sampler, log_dir=args.scratch,
      num_train_iter=1_000_000, **hparams))
  dataset = data.load_dataset("binarized_mnist")
  model = training.Run(hp, dataset, log=lambda _: None).model
  model.compile(optimizer=model.optimizer, kl_coefficient=model.kl_coefficient,
                steps_per_execution=steps_per_execution)
  batches = data.train_dataset(dataset, hp.train_batch_size, seed=0)
  steps = steps if args.quick else 2 * steps
  seconds = best_time(lambda: model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0),
                      repeats=2 if args.quick else 3) / steps
  half = hp.latent_units * hp.num_latent_layers // 2
  sampler = sampler_floor(hp.num_chains, half, half, hp.num_sweeps, sampler == "pa", repeats=5,
                          resample=sampler == "pa")
  return (seconds, matmul_floor(training_shapes(hp), repeats=5),
          bare_step_floor(hp, repeats=5) + sampler)


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
  sizes = [int(n) for n in np.bincount(machine.colours)]
  shapes = [(1000, 400, n) for n in sizes]
  return (seconds, matmul_floor(shapes, repeats=20),
          colour_sweep_floor(1000, sizes, sweeps, repeats=3) / sweeps)


def bench_log_z(args, method):
  rbm = RBM(200, 200)
  rbm.w.assign(tf.random.normal([200, 200], stddev=0.1))
  num_betas = 100 if args.quick else 1000
  estimate = getattr(rbm, f"log_z_{method}")
  seconds = best_time(lambda: estimate(num_betas, 1024, seed=[1, 2])[0].numpy(),
                      repeats=2 if args.quick else 3)
  floor = matmul_floor([(1024, 200, 200)] * 2 * num_betas, repeats=3)
  extended = sampler_floor(1024, 200, 200, num_betas, True, repeats=3,
                           resample=method == "pa")
  return seconds, floor, extended, num_betas


def bare_eval_floor(hp, images, samples, repeats):
  """Seconds for the bare IW log-weights of `images` × `samples` (module docstring, eval)."""
  rows, units, layers = images * samples, hp.latent_units, hp.num_latent_layers
  half = units * layers // 2
  encoders = [bare_mlp_variables(hp, 784 + i * units, units) for i in range(layers)]
  decoder = bare_mlp_variables(hp, layers * units, 784)
  b1, b2 = tf.zeros([half]), tf.zeros([half])
  w = tf.random.normal([half, half], stddev=0.1)
  x = tf.repeat(tf.cast(tf.random.uniform([images, 784]) < 0.3, tf.float32), samples, axis=0)

  def log_weights(seed):
    inputs, z, log_q = [x - 0.3], [], 0.0
    for i, variables in enumerate(encoders):
      logits = bare_mlp(variables, tf.concat(inputs + z, axis=-1), False)
      z.append(tf.cast(tf.random.stateless_uniform([rows, units], seed + i) < tf.sigmoid(logits),
                       tf.float32))
      log_q += tf.reduce_sum(z[-1] * logits - tf.nn.softplus(logits), axis=-1)
    z = tf.concat(z, axis=-1)
    log_px = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=x, logits=bare_mlp(decoder, z, False)), axis=-1)
    return tf.reshape(log_px - bare_energy(z, b1, b2, w) - log_q, [images, samples])

  return fastest_compilation(log_weights, repeats, tf.constant([1, 2]))


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
  half = hp.latent_units * hp.num_latent_layers // 2
  floor = matmul_floor(network_shapes(hp, images * samples)
                       + [(images * samples, half, half)], repeats=3)
  extended = bare_eval_floor(hp, images, samples, repeats=3)
  return tuple(t / (images * samples) for t in (seconds, floor, extended))


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
  # A small configuration, where the per-step cost of fit's Python loop shows, run one step per
  # call and ten (the `steps_per_execution` hparam).
  for steps_per_execution in (1, 10):
    seconds, floor, extended = bench_training(
        args, 1, "pcd", struct="1-layer-lin", num_chains=100, num_sweeps=5,
        steps_per_execution=steps_per_execution, steps=100)
    add(f"train_small_x{steps_per_execution}", "step (1-layer-lin, 100 chains × 5)", seconds,
        floor, 1.5, extended)
  seconds, floor, extended = bench_gibbs(args)
  add("gibbs", "sweep (1000 chains, 200+200)", seconds, floor, 1.3, extended)
  seconds, floor, extended = bench_graph_gibbs(args)
  add("graph_gibbs", "sweep (1000 chains, Chimera 400)", seconds, floor, 1.3, extended)
  for method in ("ais", "pa"):
    seconds, floor, extended, num_betas = bench_log_z(args, method)
    add(method, f"log Z ({num_betas} temperatures × 1024)", seconds, floor, 1.3, extended)
  seconds, floor, extended = bench_eval(args)
  add("eval", "image × sample (4-layer-nonlin)", seconds, floor, 1.5, extended)
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
