"""The discrete VAE with a relaxed Boltzmann prior, as one `keras.Model` (SPEC §1, §4).

Generative model: z ~ p(z) = e^{−E(z)}/Z (an RBM, or a Boltzmann machine on a hardware graph),
x ~ p(x|z) = Π_d Bern(x_d; σ(f(z)_d + b_d)) with f the decoder MLP and
b = logit(clip(x̄, 0.001, 0.999)) a fixed bias from the training mean x̄. Inference: a hierarchical posterior

    q(ζ|x) = Π_i q(ζ_i | x, ζ_<i),    q(ζ_i|·) an overlapping transformation of Bern(σ(l_i)),

whose logits l_i = g_i(x − x̄, ζ_0, …, ζ_{i−1}) come from one MLP per latent layer.

Training maximises either the ELBO

    L(x) = E_q[log p(x|ζ)] − c(t) · KL(q(z,ζ|x) ‖ p(z,ζ)),

or, for the DVAE# baselines with K > 1, the importance-weighted bound

    L_K(x) = E[log (1/K) Σ_k w_k],   log w_k = log p(x|ζ_k) + c(t) · (log p(ζ_k) − log q(ζ_k|x)),

whose gradient is Σ_k softmax_k(log w) ∇ log w_k. c(t) is the KL warm-up, a schedule of the
training step given to `compile` (the paper's is min(t / (0.3 T), 1), `kl_warm_up` below); the
model knows nothing else about the run. The gradient of log Z comes from the prior's sampler
through a surrogate (`dvae.rbm.RBM.train_log_z`).

log Z belongs to the prior (`dvae.boltzmann`). In the training loss its value is the prior's
running path estimate for the current parameters (sequential Monte Carlo along the training
path, or population annealing's own estimate under `sampler="pa"`), which is unbiased for Z
whatever the chains' mixing and cannot drift; its gradient is the sampler's. The epoch logs
carry it (`log_z`) with its standard error and the negative phase's lag.

Evaluation uses the discrete model: z ~ q(z|x) with binary z all the way down the
hierarchy and log w = log p(x|z) − E(z) − log Z − log q(z|x), with log Z the prior's
`current_log_z()`: an estimate for the current parameters, re-estimated with the seeded settings
of `compile(log_z=...)` when they changed (`evaluate` and `test_on_batch` do so before their
compiled step runs), so a reported NLL never uses a stale log Z.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from dvae import config, graphs, networks, priors, relaxations, samplers
from dvae.boltzmann import GraphBoltzmannMachine
from dvae.rbm import RBM


def kl_warm_up(num_train_iter):
  """The paper's KL warm-up c(t) = min(t / ⌊0.3 T⌋, 1) for a run of T steps, as a schedule."""
  return keras.optimizers.schedules.PolynomialDecay(
      initial_learning_rate=0.0, decay_steps=max(1, int(0.3 * num_train_iter)),
      end_learning_rate=1.0, power=1.0)


def step_logs(trackers):
  """The results of `trackers` (a dict of metrics) as a train or test step returns them.

  Under a multi-worker strategy Keras 3 averages a step's logs over the workers with
  `strategy.reduce("MEAN", value, axis=0)`, which needs an axis to reduce
  (tensorflow/tensorflow#72388); there each value gets one, of length 1.
  """
  logs = {name: tracker.result() for name, tracker in trackers.items()}
  strategy = tf.distribute.get_strategy()
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    if len(cluster.get("chief", [])) + len(cluster.get("worker", [])) > 1:
      logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
  return logs


# How a stale log Z is re-estimated unless `compile(log_z=...)` says otherwise.
DEFAULT_LOG_Z = {"method": "ais", "num_betas": 1000, "num_samples": 1024, "seed": [0, 0]}


def iw_log_mean_exp(log_w):
  """log (1/K) Σ_k exp(log w_k) along the last axis, in float64."""
  log_w = tf.cast(log_w, tf.float64)
  k = tf.cast(tf.shape(log_w)[-1], tf.float64)
  return tf.reduce_logsumexp(log_w, axis=-1) - tf.math.log(k)


@keras.saving.register_keras_serializable(package="dvae")
class DVAE(keras.Model):
  """A DVAE / DVAE++ / DVAE# model for binary vectors of D pixels (784 for 28×28 MNIST).

  Args:
    hparams: a `dvae.config.HParams`, or its dict (structure, widths, baseline, β, K, sampler,
      seed); the run's schedule in it (steps, evaluation settings) is not read.
    train_mean: [D] per-pixel mean of the training split (x̄); it fixes D.

  Metrics: training logs the epoch means of `loss` (−bound + weight decay, with the running
  log Z), `reconstruction` (−E log p(x|ζ)), `kl`, `weight_decay`, `log_z` (the running path
  estimate of log Z), `log_z_stderr` (its standard error) and `negative_phase_lag` (nats per
  step; `dvae.boltzmann`); evaluation logs `loss`,
  the importance-weighted NLL estimate −log (1/k) Σ_j w_j of the discrete model with
  k = `eval_iw_samples` (so `val_loss` is the validation NLL, which `ModelCheckpoint` and
  `EarlyStopping` minimise by default), and `neg_elbo`.

  Example:

  ```python
  hp, _ = dvae.config.load_hparams("quickstart")
  model = DVAE(hp, data.train_mean)
  model.compile(keras.optimizers.Adam(1e-3, epsilon=1e-3), kl_coefficient=kl_warm_up(10_000))
  model.fit(batches, steps_per_epoch=1000, epochs=10, validation_data=valid_batches)
  ```
  """

  def __init__(self, hparams, train_mean, **kwargs):
    kwargs.setdefault("name", "dvae")
    super().__init__(**kwargs)
    if isinstance(hparams, dict):
      hparams = config.HParams(**hparams)
    self.hparams = hparams
    train_mean = np.asarray(train_mean, np.float32)
    self.num_dims = int(train_mean.shape[0])
    self.relaxation = priors.RELAXATION_OF_BASELINE[hparams.baseline]
    self._shifted = self.relaxation == "shifted_gaussian"
    units = hparams.latent_units
    # Each network's initialisation has its own block of seeds, derived from the run's seed.
    seeds = [10 * (hparams.num_latent_layers + 1) * hparams.seed + 10 * i
             for i in range(hparams.num_latent_layers + 1)]
    # One attribute per network and per scale (not a list): TensorFlow checkpoints see
    # attributes, not the entries of a Keras-tracked list.
    for i in range(hparams.num_latent_layers):
      setattr(self, f"encoder_{i}", networks.mlp(
          hparams.num_hidden, units * (2 if self._shifted else 1), name=f"encoder_{i}",
          seed=seeds[i], hidden_units=hparams.hidden_units))
    self.decoder_net = networks.mlp(hparams.num_hidden, self.num_dims, name="decoder",
                                    seed=seeds[-1], hidden_units=hparams.hidden_units)
    num_latents = hparams.num_latent_layers * units
    sampler = samplers.from_hparams(hparams)
    if hparams.prior == "rbm":
      self.rbm = RBM(num_latents // 2, num_latents - num_latents // 2,
                     num_chains=hparams.num_chains, num_sweeps=hparams.num_sweeps,
                     sampler=sampler, name="rbm")
    else:
      # Latent unit k (layers concatenated in order) is node k of the graph in sorted order.
      self.rbm = GraphBoltzmannMachine(
          graphs.latent_graph(hparams.prior, num_latents, hparams.graph_size),
          num_chains=hparams.num_chains, num_sweeps=hparams.num_sweeps, sampler=sampler,
          name="rbm")
    self.prior = priors.make_prior(hparams.baseline, self.rbm, hparams.beta,
                                   num_latent_layers=hparams.num_latent_layers)
    self.train_mean = self.add_weight(
        shape=[self.num_dims], trainable=False, name="train_mean",
        initializer=keras.initializers.Constant(train_mean))
    # The Gaussian-integral posterior learns σ = |0.2 s| + 0.05 per unit, s initialised to 1.
    if self._shifted:
      for i in range(hparams.num_latent_layers):
        setattr(self, f"gi_scale_{i}",
                self.add_weight(shape=[units], initializer="ones", name=f"gi_scale_{i}"))
    self.rbm.log_z_refresh = DEFAULT_LOG_Z
    self.trains_iw = self.prior.trains_iw and hparams.k > 1
    self._train_trackers = {name: keras.metrics.Mean(name=name) for name in (
        "loss", "reconstruction", "kl", "weight_decay", "log_z", "log_z_stderr",
        "negative_phase_lag")}
    self._test_trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "neg_elbo")}
    self.kl_coefficient = lambda step: tf.constant(1.0)
    self.eval_iw_samples = 100
    self._build_networks()

  def get_config(self):
    return {"name": self.name, "hparams": dataclasses.asdict(self.hparams),
            "train_mean": self.train_mean.numpy().tolist()}

  @property
  def encoder_nets(self):
    return [getattr(self, f"encoder_{i}") for i in range(self.hparams.num_latent_layers)]

  @property
  def gi_scales(self):
    if not self._shifted:
      return []
    return [getattr(self, f"gi_scale_{i}") for i in range(self.hparams.num_latent_layers)]

  def _build_networks(self):
    width = self.num_dims
    for net in self.encoder_nets:
      net.build((None, width))
      width += self.hparams.latent_units
    self.decoder_net.build((None, self.hparams.num_latent_layers * self.hparams.latent_units))
    self.built = True

  def compile(self, optimizer="adam", kl_coefficient=1.0, eval_iw_samples=100, log_z=None,
              jit_compile=False, **kwargs):
    """Keras's `compile`, plus the run's two settings the steps read.

    Args:
      optimizer: as for `keras.Model.compile` (its learning rate may be a schedule).
      kl_coefficient: c(t), a number or a schedule of the optimizer step such as
        `kl_warm_up(num_train_iter)`.
      eval_iw_samples: k, importance samples per image in `test_step` (`evaluate`).
      log_z: how a stale log Z is re-estimated before evaluation: `update_log_z` keyword
        arguments with a seed, e.g. {"method": "ais", "num_betas": 1000, "num_samples": 1024,
        "seed": [0, 0]} (the default, `DEFAULT_LOG_Z`), or {"method": "exact"}.
      jit_compile: whole-step XLA; off by default (the sampler's loops are compiled on their
        own).
      **kwargs: the rest of `keras.Model.compile`'s arguments.
    """
    super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
    self._kl_schedule = kl_coefficient
    self.kl_coefficient = (kl_coefficient if callable(kl_coefficient)
                           else lambda step: tf.constant(float(kl_coefficient)))
    self.eval_iw_samples = int(eval_iw_samples)
    self.rbm.log_z_refresh = DEFAULT_LOG_Z if log_z is None else log_z

  def get_compile_config(self):
    compile_config = super().get_compile_config()
    if compile_config is not None:
      compile_config.update(kl_coefficient=keras.saving.serialize_keras_object(self._kl_schedule),
                            eval_iw_samples=self.eval_iw_samples, log_z=self.rbm.log_z_refresh)
    return compile_config

  def compile_from_config(self, config):
    self.compile(**keras.saving.deserialize_keras_object(config))
    self.optimizer.build(self.trainable_variables)

  @property
  def metrics(self):
    return [*self._train_trackers.values(), *self._test_trackers.values()]

  # --- The paper's pieces: encode, relax, decode. -------------------------------------------

  def posterior(self, layer, params):
    """q(ζ_i | x, ζ_<i) from the raw output of encoder network `layer`."""
    if self._shifted:
      logits, shift_logits = tf.split(params, 2, axis=-1)
      return relaxations.posterior(
          "shifted_gaussian", logits,
          delta_mu=0.5 * (tf.sigmoid(shift_logits) - 0.5),
          scale=tf.abs(0.2 * self.gi_scales[layer]) + 0.05)
    return relaxations.posterior(self.relaxation, params, beta=self.hparams.beta)

  def encode(self, x, seed, training=False, discrete=False):
    """Ancestral sampling through the hierarchical posterior.

    Args:
      x: [batch, D] binary images.
      seed: stateless seed, int32 [2].
      training: batch-norm mode.
      discrete: sample binary z ~ q(z|x) (evaluation) instead of relaxed ζ ~ q(ζ|x).

    Returns:
      (posteriors, samples): one posterior distribution and one [batch, units] sample per
      latent layer.
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, len(self.encoder_nets)))
    inputs = [x - self.train_mean]
    posteriors, samples = [], []
    for layer, (net, layer_seed) in enumerate(zip(self.encoder_nets, seeds)):
      q = self.posterior(layer, net(tf.concat(inputs + samples, axis=-1), training=training))
      sample = q.discrete().sample(seed=layer_seed) if discrete else q.sample(seed=layer_seed)
      posteriors.append(q)
      samples.append(tf.cast(sample, tf.float32))
    return posteriors, samples

  def decode(self, latents, training=False):
    """Bernoulli logits of p(x|ζ) for [batch, num_latents] latents."""
    mean = tf.clip_by_value(self.train_mean, 0.001, 0.999)
    return self.decoder_net(latents, training=training) + tf.math.log(mean) - tf.math.log1p(-mean)

  def log_likelihood(self, x, latents, training=False):
    """log p(x|ζ) per example."""
    logits = self.decode(latents, training=training)
    return -tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=-1)

  def call(self, x, training=False):
    """Reconstruction probabilities σ(f(z)) for z ~ q(z|x) at a fixed seed."""
    _, z = self.encode(x, tf.constant([0, 0]), training=training, discrete=True)
    return tf.sigmoid(self.decode(tf.concat(z, axis=-1), training=training))

  def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
             **kwargs):
    """`keras.Model.export` with the input signature [None, D] float32: `serve(x)` gives the
    reconstruction probabilities of `call`. `dvae.export.export_model` writes the SavedModel
    with the encode, decode, sample and log-likelihood endpoints."""
    if input_signature is None:
      input_signature = [tf.TensorSpec([None, self.num_dims], tf.float32, name="x")]
    return super().export(filepath, format=format, verbose=verbose,
                          input_signature=input_signature, **kwargs)

  def generate(self, num_images):
    """Pixel probabilities σ(f(z)) of the first `num_images` states of the prior's chains."""
    return tf.sigmoid(self.decode(self.rbm.chains[:num_images]))

  # --- log Z. --------------------------------------------------------------------------------

  def evaluate(self, *args, **kwargs):
    """`keras.Model.evaluate` with a log Z of the current parameters (`ensure_current_log_z` of
    the prior first: its compiled steps cannot estimate one)."""
    self.rbm.ensure_current_log_z()
    return super().evaluate(*args, **kwargs)

  def test_on_batch(self, *args, **kwargs):
    """`keras.Model.test_on_batch` with a log Z of the current parameters (as `evaluate`)."""
    self.rbm.ensure_current_log_z()
    return super().test_on_batch(*args, **kwargs)

  # --- Objectives. ---------------------------------------------------------------------------

  def step_seed(self, step):
    """A stateless seed for training step `step`: the same step always draws the same noise."""
    return tf.stack([tf.constant(self.hparams.seed, tf.int32),
                     tf.cast(step % (2**31 - 1), tf.int32)])

  def objective_terms(self, x, seed, kl_coeff, training=True):
    """The bound's parts on one batch.

    Returns a dict of scalars: `objective` (the bound to maximise, KL warm-up applied),
    `reconstruction` (−E log p(x|ζ)), `kl` (E[log q(ζ|x) − log p(ζ)] or the analytic KL) and
    `log_z` (the prior's running estimate as value, the sampler's gradient of log Z;
    `dvae.boltzmann.BoltzmannMachine.train_log_z`).
    """
    k = self.hparams.k
    encode_seed, prior_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    x = tf.repeat(x, k, axis=0)  # Each row repeated K times consecutively.
    posteriors, zetas = self.encode(x, encode_seed, training=training)
    log_px = self.log_likelihood(x, tf.concat(zetas, axis=-1), training=training)
    log_z = self.rbm.train_log_z(prior_seed)
    if self.trains_iw:
      log_q = tf.add_n([tf.reduce_sum(q.log_prob(zeta), axis=-1)
                        for q, zeta in zip(posteriors, zetas)])
      kl = log_q - self.prior.log_prob(tf.concat(zetas, axis=-1), log_z)
      log_w = tf.reshape(log_px - kl_coeff * kl, [-1, k])
      weights = tf.stop_gradient(tf.nn.softmax(log_w, axis=-1))
      objective = tf.reduce_mean(tf.reduce_sum(weights * log_w, axis=-1))
    else:
      kl = self.prior.kl(posteriors, zetas, log_z)
      objective = tf.reduce_mean(log_px - kl_coeff * kl)
    return {"objective": objective, "reconstruction": -tf.reduce_mean(log_px),
            "kl": tf.reduce_mean(kl), "log_z": log_z}

  def weight_decay(self):
    """1e-4 · ½‖θ‖² over network kernels, batch-norm scales and the RBM couplings."""
    return tf.add_n(self.losses) + self.rbm.weight_decay_loss()

  def train_step(self, data):
    data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    step = self.optimizer.iterations
    kl_coeff = tf.cast(self.kl_coefficient(step), tf.float32)
    # Under a distribution strategy every replica draws its own noise, and the optimizer sums
    # the replicas' gradients, so each replica contributes 1/num_replicas of the loss.
    replica = tf.distribute.get_replica_context()
    seed = tf.random.experimental.stateless_fold_in(
        self.step_seed(step), replica.replica_id_in_sync_group)
    with tf.GradientTape() as tape:
      terms = self.objective_terms(data, seed, kl_coeff)
      decay = self.weight_decay()
      loss = decay - terms["objective"]
      replica_loss = loss / replica.num_replicas_in_sync
    variables = self.trainable_variables
    grads = tape.gradient(replica_loss, variables)
    self.optimizer.apply(grads, variables)
    for name, value in (("loss", loss), ("reconstruction", terms["reconstruction"]),
                        ("kl", terms["kl"]), ("weight_decay", decay), ("log_z", terms["log_z"]),
                        ("log_z_stderr", self.rbm.running_log_z_stderr),
                        ("negative_phase_lag", self.rbm.negative_phase_lag)):
      self._train_trackers[name].update_state(value)
    return step_logs(self._train_trackers)

  # --- Evaluation of the discrete model. -----------------------------------------------------

  def discrete_log_weights(self, x, num_samples, seed):
    """log w = log p(x|z) − E(z) − log Z − log q(z|x) for `num_samples` z ~ q(z|x) per image.

    log Z is the prior's `current_log_z()`: eagerly re-estimated if stale; inside a
    `tf.function`, checked (call `rbm.ensure_current_log_z()` first).

    Returns [batch, num_samples] float32.
    """
    x = tf.repeat(x, num_samples, axis=0)
    posteriors, z = self.encode(x, seed, discrete=True)
    log_q = tf.add_n([tf.reduce_sum(q.discrete().log_prob(sample), axis=-1)
                      for q, sample in zip(posteriors, z)])
    z = tf.concat(z, axis=-1)
    log_w = (self.log_likelihood(x, z) + self.prior.discrete_log_prob(z)
             - log_q)
    return tf.reshape(log_w, [-1, num_samples])

  def test_step(self, data):
    data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    log_w = self.discrete_log_weights(data, self.eval_iw_samples, tf.constant([1, 0]))
    self._test_trackers["loss"].update_state(-iw_log_mean_exp(log_w))
    self._test_trackers["neg_elbo"].update_state(-tf.reduce_mean(log_w, axis=-1))
    return step_logs(self._test_trackers)
