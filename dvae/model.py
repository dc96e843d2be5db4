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

whose gradient is Σ_k softmax_k(log w) ∇ log w_k. c(t) = min(t / (0.3 T), 1) is the KL
warm-up over the first 30% of the T training steps. The gradient of log Z comes from the
prior's sampler through a surrogate (`dvae.rbm.RBM.train_log_z`).

Evaluation uses the discrete model: z ~ q(z|x) with binary z all the way down the
hierarchy and log w = log p(x|z) − E(z) − log Z − log q(z|x), with log Z the stored
estimate of `self.rbm.log_z`.
"""

import keras
import numpy as np
import tensorflow as tf

from dvae import graphs, networks, priors, relaxations, samplers
from dvae.boltzmann import GraphBoltzmannMachine
from dvae.rbm import RBM


def kl_coefficient(step, num_train_iter):
  """The KL warm-up c(t) = min(t / (0.3 T), 1)."""
  return tf.minimum(tf.cast(step, tf.float32) / (0.3 * num_train_iter), 1.0)


def iw_log_mean_exp(log_w):
  """log (1/K) Σ_k exp(log w_k) along the last axis, in float64."""
  log_w = tf.cast(log_w, tf.float64)
  k = tf.cast(tf.shape(log_w)[-1], tf.float64)
  return tf.reduce_logsumexp(log_w, axis=-1) - tf.math.log(k)


class DVAE(keras.Model):
  """A DVAE / DVAE++ / DVAE# model for binary vectors of D pixels (784 for 28×28 MNIST).

  Args:
    hparams: a `dvae.config.HParams` (structure, widths, baseline, β, K, sampler, schedule, seed).
    train_mean: [D] per-pixel mean of the training split (x̄); it fixes D.

  Example:

  ```python
  hp, _ = dvae.config.load_hparams("quickstart")
  model = DVAE(hp, data.train_mean)
  model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-3))
  logs = model.train_step(x_batch)
  ```
  """

  def __init__(self, hparams, train_mean, **kwargs):
    super().__init__(name="dvae", **kwargs)
    self.hparams = hparams
    self.relaxation = priors.RELAXATION_OF_BASELINE[hparams.baseline]
    self._shifted = self.relaxation == "shifted_gaussian"
    units = hparams.latent_units
    # Each network's initialisation has its own block of seeds, derived from the run's seed.
    seeds = [10 * (hparams.num_latent_layers + 1) * hparams.seed + 10 * i
             for i in range(hparams.num_latent_layers + 1)]
    self.encoder_nets = [
        networks.mlp(hparams.num_hidden, units * (2 if self._shifted else 1),
                     name=f"encoder_{i}", seed=seeds[i], hidden_units=hparams.hidden_units)
        for i in range(hparams.num_latent_layers)]
    self.num_dims = int(np.shape(train_mean)[-1])
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
        initializer=keras.initializers.Constant(np.asarray(train_mean, np.float32)))
    # The Gaussian-integral posterior learns σ = |0.2 s| + 0.05 per unit, s initialised to 1.
    self.gi_scales = [
        self.add_weight(shape=[units], initializer="ones", name=f"gi_scale_{i}")
        for i in range(hparams.num_latent_layers)] if self._shifted else []
    self.trains_iw = self.prior.trains_iw and hparams.k > 1
    self._trackers = {name: keras.metrics.Mean(name=name) for name in (
        "loss", "reconstruction", "kl", "weight_decay", "neg_elbo", "nll")}
    self._build_networks()

  def _build_networks(self):
    width = self.num_dims
    for net in self.encoder_nets:
      net.build((None, width))
      width += self.hparams.latent_units
    self.decoder_net.build((None, self.hparams.num_latent_layers * self.hparams.latent_units))
    self.built = True

  @property
  def metrics(self):
    return list(self._trackers.values())

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

  def generate(self, num_images):
    """Pixel probabilities σ(f(z)) of the first `num_images` states of the prior's chains."""
    return tf.sigmoid(self.decode(self.rbm.chains[:num_images]))

  # --- Objectives. ---------------------------------------------------------------------------

  def step_seed(self, step):
    """A stateless seed for training step `step`: the same step always draws the same noise."""
    return tf.stack([tf.constant(self.hparams.seed, tf.int32),
                     tf.cast(step % (2**31 - 1), tf.int32)])

  def objective_terms(self, x, seed, kl_coeff, training=True):
    """The bound's parts on one batch.

    Returns a dict of scalars: `objective` (the bound to maximise, KL warm-up applied),
    `reconstruction` (−E log p(x|ζ)), `kl` (E[log q(ζ|x) − log p(ζ)] or the analytic KL) and
    `log_z_surrogate` (the sampler's surrogate, whose gradient is ∂log Z/∂θ). log Z enters the
    bound with the stored estimate as its value and the surrogate's gradient; the estimate is
    refreshed at every evaluation, so between evaluations the reported loss is offset by the
    change of log Z since the last one (the gradient is unaffected).
    """
    k = self.hparams.k
    encode_seed, prior_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    x = tf.repeat(x, k, axis=0)  # Each row repeated K times consecutively.
    posteriors, zetas = self.encode(x, encode_seed, training=training)
    log_px = self.log_likelihood(x, tf.concat(zetas, axis=-1), training=training)
    surrogate = self.rbm.train_log_z(prior_seed)
    log_z = tf.stop_gradient(self.rbm.log_z) + surrogate - tf.stop_gradient(surrogate)
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
            "kl": tf.reduce_mean(kl), "log_z_surrogate": surrogate}

  def weight_decay(self):
    """1e-4 · ½‖θ‖² over network kernels, batch-norm scales and the RBM couplings."""
    return tf.add_n(self.losses) + self.rbm.weight_decay_loss()

  def train_step(self, data):
    step = self.optimizer.iterations
    kl_coeff = kl_coefficient(step, self.hparams.num_train_iter)
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
    logs = {"loss": loss, "reconstruction": terms["reconstruction"], "kl": terms["kl"],
            "weight_decay": decay}
    for name, value in logs.items():
      self._trackers[name].update_state(value)
    logs.update(log_z_surrogate=terms["log_z_surrogate"], kl_coefficient=kl_coeff,
                grad_norm=tf.linalg.global_norm(grads),
                learning_rate=tf.convert_to_tensor(self.optimizer.learning_rate))
    return logs

  # --- Evaluation of the discrete model. -----------------------------------------------------

  def discrete_log_weights(self, x, num_samples, seed):
    """log w = log p(x|z) − E(z) − log Z − log q(z|x) for `num_samples` z ~ q(z|x) per image.

    Returns [batch, num_samples] float32.
    """
    x = tf.repeat(x, num_samples, axis=0)
    posteriors, z = self.encode(x, seed, discrete=True)
    log_q = tf.add_n([tf.reduce_sum(q.discrete().log_prob(sample), axis=-1)
                      for q, sample in zip(posteriors, z)])
    z = tf.concat(z, axis=-1)
    log_w = (self.log_likelihood(x, z) + self.prior.discrete_log_prob(z, self.rbm.log_z)
             - log_q)
    return tf.reshape(log_w, [-1, num_samples])

  def test_step(self, data):
    log_w = self.discrete_log_weights(
        data, self.hparams.periodic_eval_iw_samples, tf.constant([1, 0]))
    self._trackers["neg_elbo"].update_state(-tf.reduce_mean(log_w, axis=-1))
    self._trackers["nll"].update_state(-iw_log_mean_exp(log_w))
    return {name: self._trackers[name].result() for name in ("neg_elbo", "nll")}
