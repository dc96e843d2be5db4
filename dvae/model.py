"""The discrete VAE with a relaxed Boltzmann prior, as one `keras.Model` built from parts
(SPEC §1, §4).

Generative model: z ~ p(z) = e^{−E(z)}/Z (an RBM, or any Boltzmann machine, e.g. on a hardware
graph), x ~ p(x|z, c) = Π_d p(x_d | f(z, c)_d) with f the decoder network and p(x_d|·) the
likelihood (`dvae.likelihoods`: Bernoulli, Gaussian, categorical), c an optional condition.
Inference: a hierarchical posterior

    q(ζ|x, c) = Π_i q(ζ_i | x, c, ζ_<i),
        q(ζ_i|·) an overlapping transformation of Bern(σ(l_i)),

whose logits l_i = g_i(x, ζ_0, …, ζ_{i−1}, c) come from one encoder network per latent layer.
The parts are given to the constructor: the encoder networks g_i, the decoder f, the prior
machine, the relaxation (with its β), the likelihood and the condition's width.
`DVAE.from_hparams` builds the paper's configurations on top: MLPs whose encoders start with
the centring x − x̄ (`dvae.networks.Offset`) and a Bernoulli likelihood with the bias
logit(clip(x̄, 0.001, 0.999)), x̄ the training mean.

Training maximises either the ELBO

    L(x) = E_q[log p(x|ζ)] − c(t) · KL(q(z,ζ|x) ‖ p(z,ζ)),

or, for the DVAE# baselines with K > 1, the importance-weighted bound

    L_K(x) = E[log (1/K) Σ_k w_k],
        log w_k = log p(x|ζ_k) + c(t) · (log p(ζ_k) − log q(ζ_k|x)),

whose gradient is Σ_k softmax_k(log w) ∇ log w_k. c(t) is the KL warm-up, a schedule of the
model's own training-step counter `train_steps` given to `compile` (the paper's is
min(t / (0.3 T), 1), `kl_warm_up` below), so compiling again (a new optimizer, fine-tuning)
resumes the warm-up and the steps' noise where they were. The gradient of log Z comes from
the prior's sampler through a surrogate (`dvae.boltzmann.BoltzmannMachine.train_log_z`).

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

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from dvae import config, graphs, likelihoods, networks, priors, relaxations, samplers
from dvae.boltzmann import BoltzmannMachine, GraphBoltzmannMachine
from dvae.clamped import ClampedLabelMachine
from dvae.rbm import RBM

if typing.TYPE_CHECKING:
  import tensorflow_probability as tfp

# The DVAE# baseline that trains with each relaxation given by its name alone.
BASELINE_OF_RELAXATION = {
    "spike_exp": "dvae_spike_exp", "shifted_gaussian": "dvaes_gi", "gaussian": "dvaes_gauss",
    "exponential": "dvaes_exp", "uniform_exponential": "dvaes_unexp", "power": "dvaes_power",
}


def kl_warm_up(num_train_iter: int) -> keras.optimizers.schedules.LearningRateSchedule:
  """The paper's KL warm-up c(t) = min(t / ⌊0.3 T⌋, 1) for a run of T steps, as a schedule.

  Args:
    num_train_iter: T, the run's training steps.

  Returns:
    A Keras schedule of the training step t, for `DVAE.compile(kl_coefficient=...)`.
  """
  return keras.optimizers.schedules.PolynomialDecay(
      initial_learning_rate=0.0, decay_steps=max(1, int(0.3 * num_train_iter)),
      end_learning_rate=1.0, power=1.0)


def step_logs(trackers: Mapping[str, keras.metrics.Metric]) -> dict[str, tf.Tensor]:
  """The results of `trackers` (a dict of metrics) as a train or test step returns them.

  Under a multi-worker strategy Keras 3 averages a step's logs over the workers with
  `strategy.reduce("MEAN", value, axis=0)`, which needs an axis to reduce
  (tensorflow/tensorflow#72388); there each value gets one, of length 1.

  Args:
    trackers: the metrics to report, by name.

  Returns:
    Each metric's result by name: a scalar, or [1] in a multi-worker run of several workers.
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


def iw_log_mean_exp(log_w: tf.Tensor | np.ndarray) -> tf.Tensor:
  """log (1/K) Σ_k exp(log w_k) along the last axis, in float64.

  Args:
    log_w: [..., K] log importance weights.

  Returns:
    float64 [...], the log of the mean weight.
  """
  log_w = tf.cast(log_w, tf.float64)
  k = tf.cast(tf.shape(log_w)[-1], tf.float64)
  return tf.reduce_logsumexp(log_w, axis=-1) - tf.math.log(k)


def _stateless_seed(seed):
  """An int32 [2] stateless seed from an int or a pair."""
  if isinstance(seed, (int, np.integer)):
    return tf.constant([int(seed), 0], tf.int32)
  return tf.cast(seed, tf.int32)


def _weights_kept(args, kwargs):
  """`fit`/`evaluate` keyword arguments under which Keras hands `sample_weight` to the steps.

  Keras drops the sample weights of data without targets (`pack_x_y_sample_weight`); the model
  has no targets, so with weights it gets placeholder targets (zeros, never read).
  """
  if kwargs.get("sample_weight") is None or len(args) > 1 or kwargs.get("y") is not None:
    return kwargs
  x = args[0] if args else kwargs.get("x")
  rows = len(x["x"] if isinstance(x, dict) else x)
  return {**kwargs, "y": np.zeros([rows], np.float32)}


def _without_build_configs(serialized):
  """A serialized Keras object with the build configs of it and its layers removed."""
  if isinstance(serialized, dict):
    return {key: _without_build_configs(value) for key, value in serialized.items()
            if key != "build_config"}
  if isinstance(serialized, list):
    return [_without_build_configs(value) for value in serialized]
  return serialized


def _output_width(net, width):
  """The last dimension of `net`'s output for inputs [1, width] (builds `net`)."""
  return int(net(tf.zeros([1, width]), training=False).shape[-1])


@keras.saving.register_keras_serializable(package="dvae")
class DVAE(keras.Model):
  """A DVAE / DVAE++ / DVAE# model of D-dimensional data, built from its parts.

  Args:
    encoders: one Keras layer or model per latent layer (or a single one for one layer).
      Encoder i maps the concatenation [x, ζ_0, …, ζ_{i−1}, c] ([B, D + i·u + C], x as
      given to the model, so a network that wants x centred centres it itself) to the
      posterior logits l_i [B, u] (for the Gaussian-integral relaxation [B, 2u]: the logits,
      then the logits of the shifts).
    decoder: a Keras layer or model mapping [z, c] ([B, n + C]) to the likelihood's parameters
      ([B, likelihood.num_outputs(D)]).
    prior: the Boltzmann machine over the n = (number of encoders) · u latent units, a
      `dvae.boltzmann.BoltzmannMachine` (`dvae.rbm.RBM`, `GraphBoltzmannMachine`, ...), or a
      `dvae.clamped.ClampedLabelMachine` whose label units are clamped to the condition (then
      the condition is the label, one-hot, and `condition_dims` its number of classes).
    num_dims: D, the width of a data row.
    relaxation: a baseline of `dvae.config.BASELINES` (the relaxation and the bound it trains
      with, e.g. "dvaes_power", "dvaepp_exp"), a relaxation name of `BASELINE_OF_RELAXATION`
      ("power", "exponential", "gaussian", ...: its DVAE# baseline), or a smoothing object
      r(ζ|z=0) on [0, 1] (`dvae.relaxations.PowerSmoothing(beta=30.)`, any of that module's
      smoothing classes, with parameters of your choice): the posterior is then the mirrored
      `OverlappingMixture` of it and the prior DVAE#'s `MarginalRelaxationPrior` of it.
    beta: the relaxation's sharpness β (for the Gaussian integral: the lower bound on λ); not
      used with a smoothing object, which holds its own parameters.
    likelihood: a `dvae.likelihoods.Likelihood` or one of its names ("bernoulli", "gaussian").
    condition_dims: C, the width of the condition c (0: an unconditional model). A conditional
      model takes `{"x": x, "condition": c}` wherever it takes data.
    k: importance samples K of the training bound (the IW bound for the DVAE# baselines when
      K > 1, else the ELBO averaged over K samples).
    seed: the seed of the training steps' noise; None draws one from NumPy's global generator
      (which `keras.utils.set_random_seed` seeds).
    **kwargs: `keras.Model` arguments (name, ...).

  Raises:
    TypeError: hparams given in place of the parts (`from_hparams` builds from them), or a
      prior that is not a `dvae.boltzmann.BoltzmannMachine` or a `ClampedLabelMachine`.
    ValueError: a prior whose units do not split evenly over the encoders, a
      `ClampedLabelMachine` whose classes are not the condition's width, a `num_dims` that
      is not a positive integer, an unknown relaxation, a relaxation name without `beta`, or
      networks whose output widths do not fit the posterior, the prior and the likelihood.

  Metrics: training logs the epoch means per example of `loss` (−bound + weight decay, with
  the prior's running log Z), `reconstruction` (−E log p(x|ζ)), `kl` and `weight_decay`, and the
  epoch means of `log_z` (the running path estimate of log Z), `log_z_stderr` (its standard
  error) and `negative_phase_lag` (nats per step; `dvae.boltzmann`); evaluation logs `loss`, the
  importance-weighted NLL estimate −log (1/k) Σ_j w_j of the discrete model with
  k = `eval_iw_samples`, and `neg_elbo`: `nll, neg_elbo = model.evaluate(x)`, and `val_loss` is
  the validation NLL, which `ModelCheckpoint` and `EarlyStopping` minimise by default. Sample
  weights (`fit(x, sample_weight=w)`, `evaluate` likewise) weigh examples in the bound and in
  these means.

  Example (the paper's configurations; see README "Library" for parts of your own):

  ```python
  hp, _ = dvae.config.load_hparams("quickstart")
  model = DVAE.from_hparams(hp, data.train_mean)
  model.compile(keras.optimizers.Adam(1e-3, epsilon=1e-3), kl_coefficient=kl_warm_up(10_000))
  model.fit(batches, steps_per_epoch=1000, epochs=10, validation_data=valid_batches)
  ```
  """

  def __init__(self, encoders: keras.layers.Layer | Sequence[keras.layers.Layer],
               decoder: keras.layers.Layer | None = None,
               prior: BoltzmannMachine | None = None, num_dims: int | None = None,
               relaxation: (str | tfp.distributions.Distribution
                            | dict[str, typing.Any]) = "dvaes_power",
               beta: float | None = None,
               likelihood: str | likelihoods.Likelihood = "bernoulli", condition_dims: int = 0,
               k: int = 1, seed: int | None = None, **kwargs: typing.Any):
    if isinstance(encoders, (dict, config.HParams)):
      raise TypeError("DVAE is built from its parts; build one from hparams with "
                      "DVAE.from_hparams(hparams, train_mean)")
    kwargs.setdefault("name", "dvae")
    super().__init__(**kwargs)
    encoders = list(encoders) if isinstance(encoders, (list, tuple)) else [encoders]
    if not isinstance(prior, (BoltzmannMachine, ClampedLabelMachine)):
      raise TypeError(f"prior must be a dvae.boltzmann.BoltzmannMachine (an RBM, a "
                      f"GraphBoltzmannMachine, ...) or a dvae.clamped.ClampedLabelMachine, got "
                      f"{type(prior).__name__}")
    if (isinstance(prior, ClampedLabelMachine)
        and int(condition_dims) != prior.num_classes):
      raise ValueError(f"a ClampedLabelMachine's condition is the label, one-hot: "
                       f"condition_dims must be its num_classes ({prior.num_classes}), got "
                       f"{condition_dims!r}")
    if not encoders or prior.num_units % len(encoders):
      raise ValueError(f"the prior's {prior.num_units} units must split evenly over the "
                       f"{len(encoders)} encoders (one per latent layer)")
    if num_dims is None or int(num_dims) != num_dims or num_dims < 1:
      raise ValueError(f"num_dims (D, the width of a data row) must be a positive integer, "
                       f"got {num_dims!r}")
    if isinstance(relaxation, dict):
      relaxation = relaxations.smoothing_from_config(relaxation)
    self.smoothing = relaxation if isinstance(relaxation, relaxations.SMOOTHING_TYPES) else None
    if self.smoothing is not None:
      # DVAE#'s objective with a smoothing of the user's (its own parameters, no β here).
      self.baseline, self.relaxation, beta = None, type(relaxation).__name__, None
    else:
      self.baseline = BASELINE_OF_RELAXATION.get(relaxation, relaxation)
      if self.baseline not in priors.RELAXATION_OF_BASELINE:
        raise ValueError(f"unknown relaxation {relaxation!r}; allowed: baselines "
                         f"{', '.join(config.BASELINES)}, relaxations "
                         f"{', '.join(BASELINE_OF_RELAXATION)}, or a smoothing object of "
                         "dvae.relaxations")
      if beta is None:
        raise ValueError(f"the relaxation {relaxation!r} needs its sharpness beta")
      self.relaxation = priors.RELAXATION_OF_BASELINE[self.baseline]
    self.num_dims, self.k = int(num_dims), int(k)
    self.beta = None if beta is None else float(beta)
    self.condition_dims = int(condition_dims)
    self.seed = int(np.random.randint(2**31 - 1)) if seed is None else int(seed)
    self._shifted = self.relaxation == "shifted_gaussian"
    self.num_latent_layers = len(encoders)
    self.latent_units = prior.num_units // len(encoders)
    # One attribute per network and per scale (not a list): TensorFlow checkpoints see
    # attributes, not the entries of a Keras-tracked list.
    for i, encoder in enumerate(encoders):
      setattr(self, f"encoder_{i}", encoder)
    self.decoder_net = decoder
    self.prior_machine = prior
    self.clamped_labels = isinstance(prior, ClampedLabelMachine)
    # The machine whose energy the bound's prior terms use: a label-conditional prior's label 0,
    # to whose biases each example's label adds its field (`dvae.clamped`).
    machine = prior.label_0 if self.clamped_labels else prior
    self.likelihood = likelihoods.get(likelihood)
    if self.smoothing is not None:
      self.prior = priors.MarginalRelaxationPrior(machine, self.smoothing)
    else:
      self.prior = priors.make_prior(self.baseline, machine, self.beta,
                                     num_latent_layers=self.num_latent_layers)
    # The Gaussian-integral posterior learns σ = |0.2 s| + 0.05 per unit, s initialised to 1.
    if self._shifted:
      for i in range(self.num_latent_layers):
        setattr(self, f"gi_scale_{i}", self.add_weight(
            shape=[self.latent_units], initializer="ones", name=f"gi_scale_{i}"))
    # Training steps taken: the KL warm-up and the steps' noise are functions of it.
    self.train_steps = self.add_weight(shape=[], dtype="int64", initializer="zeros",
                                       trainable=False, aggregation="only_first_replica",
                                       name="train_steps")
    self.prior_machine.log_z_refresh = DEFAULT_LOG_Z
    self.trains_iw = self.prior.trains_iw and self.k > 1
    # One tracker per name: `loss` is the training loss in training and the NLL in evaluation
    # (Keras resets every tracker when a fit epoch or an evaluation starts).
    self._trackers = {name: keras.metrics.Mean(name=name) for name in (
        "loss", "reconstruction", "kl", "weight_decay", "neg_elbo", "log_z", "log_z_stderr",
        "negative_phase_lag")}
    self._kl_schedule = 1.0
    self.kl_coefficient = lambda step: tf.constant(1.0)
    self.eval_iw_samples = 100
    self._build_networks()

  @classmethod
  def from_hparams(cls, hparams: config.HParams | dict[str, typing.Any],
                   train_mean: np.ndarray | Sequence[float] | None = None,
                   num_classes: int | None = None, condition_dims: int = 0) -> DVAE:
    """The paper's model for a configuration: MLP encoders and decoder, its prior, relaxation
    and likelihood.

    Args:
      hparams: a `dvae.config.HParams`, or a dict of hparams (validated and resolved by
        `dvae.config.load_hparams`); the run's schedule in it (steps, evaluation settings) is
        not read.
      train_mean: [D] per-dimension mean x̄ of the training split; it fixes D, centres the
        encoders' input and sets the likelihood's bias.
      num_classes: K, for the categorical likelihood.
      condition_dims: C, the width of a condition (0: none).

    Returns:
      A `DVAE`.

    Raises:
      ValueError: without `train_mean`; `dvae.config.ConfigError` for invalid hparams.
    """
    if train_mean is None:
      raise ValueError("DVAE.from_hparams needs train_mean, the [D] mean of the training data")
    if isinstance(hparams, dict):
      hparams = config.load_hparams(None, hparams)[0]
    elif hparams.beta is None or hparams.latent_units is None:
      hparams = config.load_hparams(None, {
          key: value for key, value in dataclasses.asdict(hparams).items()
          if value is not None})[0]
    train_mean = np.asarray(train_mean, np.float32)
    num_dims = int(train_mean.shape[0])
    layers, units = hparams.num_latent_layers, hparams.latent_units
    shifted = priors.RELAXATION_OF_BASELINE[hparams.baseline] == "shifted_gaussian"
    likelihood = likelihoods.get(
        getattr(hparams, "likelihood", "bernoulli"), num_classes=num_classes,
        data_mean=None if num_classes else train_mean)
    # Each network's initialisation has its own block of seeds, derived from the run's seed.
    seeds = [10 * (layers + 1) * hparams.seed + 10 * i for i in range(layers + 1)]
    centring = [-float(value) for value in train_mean]
    encoders = [networks.mlp(hparams.num_hidden, units * (2 if shifted else 1),
                             name=f"encoder_{i}", seed=seeds[i],
                             hidden_units=hparams.hidden_units,
                             input_offset=centring + [0.0] * (i * units + condition_dims))
                for i in range(layers)]
    decoder = networks.mlp(hparams.num_hidden, likelihood.num_outputs(num_dims), name="decoder",
                           seed=seeds[-1], hidden_units=hparams.hidden_units)
    num_latents = layers * units
    sampler = samplers.from_hparams(hparams)
    if hparams.prior == "rbm":
      machine = RBM(num_latents // 2, num_latents - num_latents // 2,
                    num_chains=hparams.num_chains, num_sweeps=hparams.num_sweeps,
                    sampler=sampler, name="rbm")
    else:
      # Latent unit k (layers concatenated in order) is node k of the graph in sorted order.
      machine = GraphBoltzmannMachine(
          graphs.latent_graph(hparams.prior, num_latents, hparams.graph_size),
          num_chains=hparams.num_chains, num_sweeps=hparams.num_sweeps, sampler=sampler,
          name="graph_machine")
    return cls(encoders, decoder, machine, num_dims, relaxation=hparams.baseline,
               beta=hparams.beta, likelihood=likelihood, condition_dims=condition_dims,
               k=hparams.k, seed=hparams.seed)

  def get_config(self) -> dict[str, typing.Any]:
    """The constructor's arguments, its parts serialized (Keras's `get_config` of a model built
    from parts, so that `from_config` and `keras.models.load_model` rebuild it).

    Returns:
      A JSON-able dict: the name, the serialized encoders, decoder, prior and likelihood,
      `num_dims`, the relaxation (a baseline's name or a smoothing's config), `beta`,
      `condition_dims`, `k` and `seed`.
    """
    serialize = keras.saving.serialize_keras_object
    return {"name": self.name, "encoders": [serialize(net) for net in self.encoder_nets],
            "decoder": serialize(self.decoder_net), "prior": serialize(self.prior_machine),
            "num_dims": self.num_dims,
            "relaxation": (self.baseline if self.smoothing is None
                           else relaxations.smoothing_config(self.smoothing)),
            "beta": self.beta,
            "likelihood": serialize(self.likelihood), "condition_dims": self.condition_dims,
            "k": self.k, "seed": self.seed}

  @classmethod
  def from_config(cls, config_dict: dict[str, typing.Any]) -> DVAE:
    """The model `get_config` describes (Keras's `from_config`, deserializing the parts first).

    Args:
      config_dict: a dict from `get_config`.

    Returns:
      A new, untrained `DVAE` with freshly initialised parts of the described shapes.
    """
    config_dict = dict(config_dict)
    custom = {"RBM": RBM, "GraphBoltzmannMachine": GraphBoltzmannMachine}
    # Without their build configs the parts are built by the constructor, inside their own
    # name scopes, so their variables get the same paths as the saved model's.
    deserialize = lambda part: keras.saving.deserialize_keras_object(
        _without_build_configs(part), custom_objects=custom)
    config_dict["encoders"] = [deserialize(net) for net in config_dict["encoders"]]
    for part in ("decoder", "prior", "likelihood"):
      config_dict[part] = deserialize(config_dict[part])
    return cls(**config_dict)

  @property
  def encoder_nets(self) -> list[keras.layers.Layer]:
    """The encoder networks g_0, …, g_{L−1}, one per latent layer, in order."""
    return [getattr(self, f"encoder_{i}") for i in range(self.num_latent_layers)]

  @property
  def gi_scales(self) -> list[keras.Variable]:
    """The Gaussian-integral posterior's scale parameters s [u], one per latent layer (σ =
    |0.2 s| + 0.05); empty for every other relaxation."""
    if not self._shifted:
      return []
    return [getattr(self, f"gi_scale_{i}") for i in range(self.num_latent_layers)]

  def _build_networks(self):
    """Builds the networks and checks their widths against the prior and the likelihood."""
    width = self.num_dims + self.condition_dims
    expected = self.latent_units * (2 if self._shifted else 1)
    for i, net in enumerate(self.encoder_nets):
      got = _output_width(net, width)
      if got != expected:
        raise ValueError(f"encoder {i} gives {got} outputs for inputs of width {width}; the "
                         f"{self.relaxation} posterior of {self.latent_units} units needs "
                         f"{expected}")
      width += self.latent_units
    width = self.prior_machine.num_units + self.condition_dims
    got, expected = _output_width(self.decoder_net, width), self.likelihood.num_outputs(
        self.num_dims)
    if got != expected:
      raise ValueError(f"the decoder gives {got} outputs for inputs of width {width}; the "
                       f"likelihood of {self.num_dims} dimensions needs {expected}")
    if not self.likelihood.built:
      self.likelihood.build((None, self.num_dims))
    self.built = True

  def compile(self, optimizer: str | keras.optimizers.Optimizer = "adam",
              kl_coefficient: float | Callable[[tf.Tensor], tf.Tensor] = 1.0,
              eval_iw_samples: int = 100, log_z: dict[str, typing.Any] | None = None,
              jit_compile: bool | str = False, **kwargs: typing.Any) -> None:
    """Keras's `compile`, plus the run's two settings the steps read.

    The model's loss is its bound and its metrics are its own: `loss`, `metrics`,
    `weighted_metrics` and `loss_weights` are refused, and so is a mixed-precision dtype
    policy (the bound, the sampler and log Z need float32).

    Args:
      optimizer: as for `keras.Model.compile` (its learning rate may be a schedule).
      kl_coefficient: c(t), a number or a schedule of the training step such as
        `kl_warm_up(num_train_iter)`.
      eval_iw_samples: k, importance samples per image in `test_step` (`evaluate`).
      log_z: how a stale log Z is re-estimated before evaluation: `update_log_z` keyword
        arguments with a seed, e.g. {"method": "ais", "num_betas": 1000, "num_samples": 1024,
        "seed": [0, 0]} (the default, `DEFAULT_LOG_Z`), or {"method": "exact"}.
      jit_compile: whole-step XLA; off by default (the sampler's loops are compiled on their
        own).
      **kwargs: the rest of `keras.Model.compile`'s arguments.

    Raises:
      ValueError: for a loss, metrics or a mixed-precision policy.
    """
    for name in ("loss", "metrics", "weighted_metrics", "loss_weights"):
      if kwargs.get(name) is not None:
        raise ValueError(f"DVAE.compile takes no {name}: the model trains its bound and "
                         "reports its own metrics (loss, reconstruction, kl; nll, neg_elbo)")
    if self.dtype_policy.compute_dtype != "float32":
      raise ValueError(f"DVAE computes in float32; the dtype policy "
                       f"{self.dtype_policy.name!r} (mixed precision) is not supported")
    super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
    self._kl_schedule = kl_coefficient
    self.kl_coefficient = (kl_coefficient if callable(kl_coefficient)
                           else lambda step: tf.constant(float(kl_coefficient)))
    self.eval_iw_samples = int(eval_iw_samples)
    self.prior_machine.log_z_refresh = DEFAULT_LOG_Z if log_z is None else log_z

  def get_compile_config(self) -> dict[str, typing.Any] | None:
    """Keras's compile config plus `kl_coefficient` (serialized), `eval_iw_samples` and
    `log_z`, so that a `.keras` file restores them.

    Returns:
      The serialized `compile` arguments, or None if the model was not compiled.
    """
    compile_config = super().get_compile_config()
    if compile_config is not None:
      compile_config.update(
          kl_coefficient=keras.saving.serialize_keras_object(self._kl_schedule),
          eval_iw_samples=self.eval_iw_samples, log_z=self.prior_machine.log_z_refresh)
    return compile_config

  def compile_from_config(self, config: dict[str, typing.Any]) -> None:
    """Compiles with the arguments of `get_compile_config` (this model's own included) and
    builds the optimizer, so that its saved variables can be loaded.

    Args:
      config: a compile config from `get_compile_config`.
    """
    self.compile(**keras.saving.deserialize_keras_object(config))
    self.optimizer.build(self.trainable_variables)

  @property
  def metrics(self) -> list[keras.metrics.Metric]:
    """The model's own trackers (Keras resets them at each epoch and evaluation): `loss`,
    `reconstruction`, `kl`, `weight_decay`, `neg_elbo`, `log_z`, `log_z_stderr`,
    `negative_phase_lag`."""
    return list(self._trackers.values())

  # --- The paper's pieces: encode, relax, decode. -------------------------------------------

  def inputs_of(self, data: tf.Tensor | np.ndarray | Mapping[str, typing.Any]
                ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(x [B, D] float32, c [B, C] float32 or None) from the model's input.

    The input is x (rows [B, D], or [B, ...] with D values per example, flattened; any real or
    integer dtype), or for a conditional model a dict {"x": x, "condition": c}.

    Args:
      data: x, or {"x": x, "condition": c}.

    Returns:
      (x, c): x float32 [B, D]; c float32 [B, C] for a conditional model, else None.

    Raises:
      ValueError: a dict with other keys, a condition given to an unconditional model or
        missing for a conditional one, or rows of a known width other than D.
    """
    if isinstance(data, dict):
      if set(data) != {"x", "condition"}:
        raise ValueError(f"a dict input has the keys 'x' and 'condition', got {sorted(data)}")
      x, condition = data["x"], data["condition"]
    else:
      x, condition = data, None
    if (condition is None) != (self.condition_dims == 0):
      raise ValueError(
          f"this model takes a condition of width {self.condition_dims}: pass "
          "{'x': x, 'condition': c}" if self.condition_dims else
          "this model has no condition (condition_dims=0); pass x alone")
    x = tf.convert_to_tensor(x)
    known = x.shape.rank is not None and None not in x.shape[1:]
    if known and (x.shape.rank < 2 or int(np.prod(x.shape[1:])) != self.num_dims):
      raise ValueError(f"the model takes rows of D = {self.num_dims} values, [batch, "
                       f"{self.num_dims}] (or [batch, ...] of {self.num_dims} values), got "
                       f"shape {list(x.shape)}")
    x = tf.reshape(tf.cast(x, tf.float32), [-1, self.num_dims])
    if condition is not None:
      condition = tf.reshape(tf.cast(condition, tf.float32), [-1, self.condition_dims])
    return x, condition

  def posterior(self, layer: int, params: tf.Tensor) -> tfp.distributions.Distribution:
    """q(ζ_i | x, ζ_<i) from the raw output of encoder network `layer`.

    Args:
      layer: i, the latent layer.
      params: [B, u] logits l_i (the Gaussian integral's [B, 2u]: logits, then shift logits).

    Returns:
      The relaxed posterior of batch shape [B, u]; its `discrete()` is Bern(σ(l_i)).
    """
    if self._shifted:
      logits, shift_logits = tf.split(params, 2, axis=-1)
      return relaxations.posterior(
          "shifted_gaussian", logits,
          delta_mu=0.5 * (tf.sigmoid(shift_logits) - 0.5),
          scale=tf.abs(0.2 * self.gi_scales[layer]) + 0.05)
    if self.smoothing is not None:
      return relaxations.OverlappingMixture(params, self.smoothing)
    return relaxations.posterior(self.relaxation, params, beta=self.beta)

  def encode(self, x: tf.Tensor | np.ndarray, seed: int | Sequence[int] | tf.Tensor,
             training: bool = False, discrete: bool = False,
             condition: tf.Tensor | np.ndarray | None = None
             ) -> tuple[list[tfp.distributions.Distribution], list[tf.Tensor]]:
    """Ancestral sampling through the hierarchical posterior.

    Args:
      x: [batch, D] data rows.
      seed: stateless seed, an int or int32 [2].
      training: batch-norm mode.
      discrete: sample binary z ~ q(z|x) (evaluation) instead of relaxed ζ ~ q(ζ|x).
      condition: [batch, C] for a conditional model.

    Returns:
      (posteriors, samples): one posterior distribution and one [batch, units] sample per
      latent layer.
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(
        _stateless_seed(seed), self.num_latent_layers))
    x = tf.cast(x, tf.float32)
    extra = [] if condition is None else [tf.cast(condition, tf.float32)]
    posteriors, samples = [], []
    for layer, (net, layer_seed) in enumerate(zip(self.encoder_nets, seeds)):
      q = self.posterior(layer, net(tf.concat([x] + samples + extra, axis=-1),
                                    training=training))
      sample = q.discrete().sample(seed=layer_seed) if discrete else q.sample(seed=layer_seed)
      posteriors.append(q)
      samples.append(tf.cast(sample, tf.float32))
    return posteriors, samples

  def decode(self, latents: tf.Tensor | np.ndarray, training: bool = False,
             condition: tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    """The decoder's outputs, the likelihood's parameters h of p(x|ζ, c), for latents [B, n]
    (`self.likelihood.mean(h)` is E[x|ζ, c]).

    Args:
      latents: [B, n] binary z or relaxed ζ, the latent layers concatenated.
      training: batch-norm mode.
      condition: [B, C] for a conditional model.

    Returns:
      h, float32 [B, likelihood.num_outputs(D)].
    """
    latents = tf.cast(latents, tf.float32)
    if condition is not None:
      latents = tf.concat([latents, tf.cast(condition, tf.float32)], axis=-1)
    return self.decoder_net(latents, training=training)

  def log_likelihood(self, x: tf.Tensor | np.ndarray, latents: tf.Tensor | np.ndarray,
                     training: bool = False,
                     condition: tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    """log p(x|ζ, c) per example.

    Args:
      x: [B, D] data rows.
      latents: [B, n] binary z or relaxed ζ.
      training: batch-norm mode.
      condition: [B, C] for a conditional model.

    Returns:
      [B] log-likelihoods.
    """
    return self.likelihood.log_prob(tf.cast(x, tf.float32),
                                    self.decode(latents, training=training, condition=condition))

  def call(self, inputs: tf.Tensor | np.ndarray | Mapping[str, typing.Any],
           training: bool = False) -> tf.Tensor:
    """Reconstructions E[x|z] for z ~ q(z|x) at a fixed seed (the model's forward pass).

    Args:
      inputs: x, or {"x": x, "condition": c} for a conditional model (`inputs_of`).
      training: batch-norm mode.

    Returns:
      [B, D] E[x|z, c], z drawn from the discrete posterior at seed [0, 0].

    Raises:
      ValueError: inputs that `inputs_of` refuses.
    """
    x, condition = self.inputs_of(inputs)
    _, z = self.encode(x, tf.constant([0, 0]), training=training, discrete=True,
                       condition=condition)
    return self.likelihood.mean(
        self.decode(tf.concat(z, axis=-1), training=training, condition=condition))

  def export(self, filepath: str | os.PathLike, format: str = "tf_saved_model",
             verbose: bool | None = None, input_signature: Sequence[typing.Any] | None = None,
             **kwargs: typing.Any) -> None:
    """`keras.Model.export` with the input signature [None, D] float32: `serve(x)` gives the
    reconstructions of `call`. `dvae.export.export_model` writes the SavedModel with the
    encode, decode, sample and log-likelihood endpoints.

    A conditional model (`condition_dims` C > 0) serves `serve(x, condition)`, x [None, D]
    and condition [None, C] float32, one condition row per row of x; the SavedModel's
    `serve` passes {"x": x, "condition": condition} to `call`.

    Args:
      filepath: where to write the artifact.
      format: as for `keras.Model.export`; a conditional model without an `input_signature`
        of the user's exports only "tf_saved_model".
      verbose: whether to print a message (None: Keras's default).
      input_signature: Keras's, replacing the signatures above; None for them.
      **kwargs: the rest of `keras.Model.export`'s arguments.

    Raises:
      ValueError: a conditional model exported to another format than "tf_saved_model" without
        an `input_signature` (`dvae.export.export_model` writes a SavedModel whose endpoints
        take the condition), or what `keras.Model.export` raises.
    """
    x_spec = tf.TensorSpec([None, self.num_dims], tf.float32, name="x")
    if input_signature is not None or not self.condition_dims:
      return super().export(
          filepath, format=format, verbose=verbose,
          input_signature=[x_spec] if input_signature is None else input_signature, **kwargs)
    if format != "tf_saved_model":
      raise ValueError(
          f"DVAE.export of a conditional model (condition_dims={self.condition_dims}) writes "
          f"only format='tf_saved_model', got {format!r}; pass an input_signature of your own, "
          "or use dvae.export.export_model, whose SavedModel endpoints take the condition")
    condition_spec = tf.TensorSpec([None, self.condition_dims], tf.float32, name="condition")
    archive = keras.export.ExportArchive()
    archive.track(self)
    archive.add_endpoint("serve", lambda x, condition: self({"x": x, "condition": condition}),
                         input_signature=[x_spec, condition_spec], **kwargs)
    archive.write_out(filepath, verbose=True if verbose is None else verbose)

  def generate(self, num_images: int,
               condition: tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    """E[x|z, c] for the first `num_images` states of the prior's persistent chains (the
    latest negative phase; `sample` draws any number afresh).

    Args:
      num_images: how many, at most the prior's `num_chains`.
      condition: [num_images, C] for a conditional model (one row per image).

    Returns:
      [num_images, D] E[x|z, c].

    Raises:
      ValueError: more images than the prior has chains.
    """
    num_chains = self.prior_machine.num_chains
    if num_images > num_chains:
      raise ValueError(f"generate shows the prior's {num_chains} chains; ask for at most "
                       f"{num_chains} or draw more with sample({num_images})")
    if self.clamped_labels:
      # Row i from label y_i's chains.
      z = self.prior_machine.chain_states(condition[:num_images])
    else:
      z = self.prior_machine.chains[:num_images]
    return self.likelihood.mean(self.decode(z, condition=condition))

  def sample(self, num_images: int, condition: tf.Tensor | np.ndarray | None = None,
             num_sweeps: int = 100, seed: int | Sequence[int] | tf.Tensor | None = None
             ) -> tf.Tensor:
    """E[x|z, c] for `num_images` fresh states z of the prior (`num_sweeps` Gibbs sweeps from
    random states, `BoltzmannMachine.sample`); `condition` [num_images, C] for a conditional
    model (one row per image).

    Args:
      num_images: how many states to draw.
      condition: [num_images, C] for a conditional model.
      num_sweeps: Gibbs sweeps from uniformly random states.
      seed: the draw's seed (as for `BoltzmannMachine.sample`); None for a random one.

    Returns:
      [num_images, D] E[x|z, c].
    """
    return self.likelihood.mean(self.decode(
        self.prior_states(num_images, num_sweeps, seed, condition), condition=condition))

  def prior_states(self, num_images: int | tf.Tensor, num_sweeps: int,
                   seed: int | Sequence[int] | tf.Tensor | None = None,
                   condition: tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    """States z [num_images, n] of the prior: `num_sweeps` Gibbs sweeps from random states
    (`BoltzmannMachine.sample`); under a label-conditional prior row i of p(z | y_i), the label
    of condition row i (`ClampedLabelMachine.sample`).

    Args:
      num_images: how many states.
      num_sweeps: Gibbs sweeps from uniformly random states.
      seed: the draw's seed; None for a random one.
      condition: [num_images, C] for a conditional model.

    Returns:
      [num_images, n] binary states.
    """
    if self.clamped_labels:
      return self.prior_machine.sample(tf.convert_to_tensor(condition), num_sweeps, seed=seed)
    return self.prior_machine.sample(num_images, num_sweeps, seed=seed)

  # --- log Z. --------------------------------------------------------------------------------

  def evaluate(self, *args: typing.Any, **kwargs: typing.Any) -> float | list[float] | dict:
    """`keras.Model.evaluate` with a log Z of the current parameters (`ensure_current_log_z` of
    the prior first: its compiled steps cannot estimate one).

    Args:
      *args: `keras.Model.evaluate`'s positional arguments.
      **kwargs: its keyword arguments; `sample_weight` weighs the examples of data without
        targets too (see the class docstring).

    Returns:
      Keras's: [nll, neg_elbo], or {"loss": nll, "neg_elbo": ...} with `return_dict=True`.
    """
    self.prior_machine.ensure_current_log_z()
    return super().evaluate(*args, **_weights_kept(args, kwargs))

  def fit(self, *args: typing.Any, **kwargs: typing.Any) -> keras.callbacks.History:
    """`keras.Model.fit`; `sample_weight` weighs the examples (see the class docstring).

    Args:
      *args: `keras.Model.fit`'s positional arguments.
      **kwargs: its keyword arguments; `sample_weight` is handed to the training steps even
        for data without targets.

    Returns:
      Keras's `History` of the epoch logs (see the class docstring's metrics).
    """
    return super().fit(*args, **_weights_kept(args, kwargs))

  def test_on_batch(self, *args: typing.Any, **kwargs: typing.Any
                    ) -> float | list[float] | dict:
    """`keras.Model.test_on_batch` with a log Z of the current parameters (as `evaluate`).

    Args:
      *args: `keras.Model.test_on_batch`'s positional arguments.
      **kwargs: its keyword arguments.

    Returns:
      Keras's: [nll, neg_elbo] of the batch, or a dict with `return_dict=True`.
    """
    self.prior_machine.ensure_current_log_z()
    return super().test_on_batch(*args, **kwargs)

  # --- Objectives. ---------------------------------------------------------------------------

  def step_seed(self, step: int | tf.Tensor) -> tf.Tensor:
    """A stateless seed for training step `step`: the same step always draws the same noise.

    Args:
      step: the training step t (`train_steps` before it is taken).

    Returns:
      int32 [2], (`seed`, t mod (2³¹ − 1)).
    """
    return tf.stack([tf.constant(self.seed, tf.int32), tf.cast(step % (2**31 - 1), tf.int32)])

  def objective_terms(self, x: tf.Tensor, seed: int | Sequence[int] | tf.Tensor,
                      kl_coeff: float | tf.Tensor, training: bool = True,
                      log_z: tf.Tensor | None = None, condition: tf.Tensor | None = None
                      ) -> dict[str, tf.Tensor]:
    """The bound's parts on one batch, per example.

    Args:
      x: [B, D] data rows.
      seed: stateless seed of the posterior samples.
      kl_coeff: c(t).
      training: batch-norm mode.
      log_z: log Z as it enters the bound (value and gradient); by default the prior's running
        estimate `running_log_z`, without gradient. Nothing is changed: `train_step` runs the
        sampler's negative phase and advances the running estimate
        (`dvae.boltzmann.BoltzmannMachine.train_log_z`), then passes its log Z, whose
        gradient is the sampler's.
      condition: [B, C] for a conditional model.

    Returns:
      A dict of [B] tensors: `bound` (the bound to maximise, KL warm-up applied),
      `reconstruction` (−E log p(x|ζ)) and `kl` (E[log q(ζ|x) − log p(ζ)] or the analytic KL).
    """
    if log_z is None:
      log_z = tf.stop_gradient(tf.convert_to_tensor(self.prior_machine.running_log_z))
    k = self.k
    x = tf.repeat(x, k, axis=0)  # Each row repeated K times consecutively.
    if condition is not None:
      condition = tf.repeat(condition, k, axis=0)
    log_z, offsets = self.prior_condition(log_z, condition)
    posteriors, zetas = self.encode(x, seed, training=training, condition=condition)
    log_px = self.log_likelihood(x, tf.concat(zetas, axis=-1), training=training,
                                 condition=condition)
    if self.trains_iw:
      log_q = tf.add_n([tf.reduce_sum(q.log_prob(zeta), axis=-1)
                        for q, zeta in zip(posteriors, zetas)])
      kl = log_q - self.prior.log_prob(tf.concat(zetas, axis=-1), log_z, offsets)
      log_w = tf.reshape(log_px - kl_coeff * kl, [-1, k])
      weights = tf.stop_gradient(tf.nn.softmax(log_w, axis=-1))
      bound = tf.reduce_sum(weights * log_w, axis=-1)
    else:
      kl = self.prior.kl(posteriors, zetas, log_z, offsets)
      bound = tf.reduce_mean(tf.reshape(log_px - kl_coeff * kl, [-1, k]), axis=-1)
    per_example = lambda value: tf.reduce_mean(tf.reshape(value, [-1, k]), axis=-1)
    return {"bound": bound, "reconstruction": -per_example(log_px), "kl": per_example(kl)}

  def prior_condition(self, log_z: tf.Tensor, condition: tf.Tensor | None
                      ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """log Z and the bias fields as the prior terms of examples with `condition` take them.

    Args:
      log_z: the prior's log Z: a scalar, or under a `ClampedLabelMachine` one per label [K].
      condition: [B, C] rows, or None.

    Returns:
      (log_z, offsets): unchanged and None, or under a label-conditional prior each example's
      label's log Z [B] and field a_i = b_{y_i} − b_0 [B, n] (`dvae.clamped`).
    """
    if not self.clamped_labels:
      return log_z, None
    machine = self.prior_machine
    return machine.per_example(log_z, condition), machine.offsets(condition)

  def weight_decay(self) -> tf.Tensor:
    """The networks' regularization losses (`model.losses`; the paper's MLPs: 1e-4 · ½‖θ‖²
    over kernels and batch-norm scales) plus the prior's weight decay on its couplings.

    Returns:
      A float32 scalar, added to the training loss.
    """
    decay = self.prior_machine.weight_decay_loss()
    return tf.add_n(self.losses) + decay if self.losses else decay

  def train_step(self, data: typing.Any) -> dict[str, tf.Tensor]:
    """One step on a batch (Keras's `train_step`): the sampler's negative phase and the running
    log Z (`train_log_z`), the gradient of −bound + weight decay (sample weights weighing the
    examples), the optimizer's update and `train_steps` + 1.

    Args:
      data: a batch as Keras gives it: x or {"x": x, "condition": c}, with placeholder targets
        and sample weights if any.

    Returns:
      The epoch means so far of `loss`, `reconstruction`, `kl`, `weight_decay`, `log_z`,
      `log_z_stderr` and `negative_phase_lag` (`step_logs`).
    """
    data, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, condition = self.inputs_of(data)
    step = self.train_steps.value
    kl_coeff = tf.cast(self.kl_coefficient(step), tf.float32)
    # Under a distribution strategy every replica draws its own noise, and the optimizer sums
    # the replicas' gradients, so each replica contributes 1/num_replicas of the loss.
    replica = tf.distribute.get_replica_context()
    seed = tf.random.experimental.stateless_fold_in(
        self.step_seed(step), replica.replica_id_in_sync_group)
    encode_seed, prior_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    # Examples weigh 1, or their sample weights w_i: the bound is Σ_i w_i L_i / Σ_i w_i.
    weights = (tf.ones_like(x[:, 0]) if sample_weight is None
               else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
    with tf.GradientTape() as tape:
      log_z = self.prior_machine.train_log_z(prior_seed)
      terms = self.objective_terms(x, encode_seed, kl_coeff, log_z=log_z, condition=condition)
      decay = self.weight_decay()
      if sample_weight is None:
        objective = tf.reduce_mean(terms["bound"])
      else:
        objective = tf.reduce_sum(weights * terms["bound"]) / tf.reduce_sum(weights)
      loss = decay - objective
      replica_loss = loss / replica.num_replicas_in_sync
    variables = self.trainable_variables
    grads = tape.gradient(replica_loss, variables)
    self.optimizer.apply(grads, variables)
    self.train_steps.assign_add(1)
    # Epoch means per example (a short last batch weighs its examples, not a whole batch).
    for name, value in (("loss", decay - terms["bound"]),
                        ("reconstruction", terms["reconstruction"]), ("kl", terms["kl"]),
                        ("weight_decay", decay * tf.ones_like(weights))):
      self._trackers[name].update_state(value, sample_weight=weights)
    machine = self.prior_machine
    if self.clamped_labels:
      log_z = machine.per_example(log_z, condition)
    for name, value in (("log_z", log_z), ("log_z_stderr", machine.running_log_z_stderr),
                        ("negative_phase_lag", machine.negative_phase_lag)):
      self._trackers[name].update_state(value)
    return step_logs({name: self._trackers[name] for name in (
        "loss", "reconstruction", "kl", "weight_decay", "log_z", "log_z_stderr",
        "negative_phase_lag")})

  # --- Evaluation of the discrete model. -----------------------------------------------------

  def discrete_log_weights(self, x: tf.Tensor | np.ndarray, num_samples: int | tf.Tensor,
                           seed: int | Sequence[int] | tf.Tensor,
                           condition: tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    """log w = log p(x|z) − E(z) − log Z − log q(z|x) for `num_samples` z ~ q(z|x) per image.

    log Z is the prior's `current_log_z()`: eagerly re-estimated if stale; inside a
    `tf.function`, checked (call `prior_machine.ensure_current_log_z()` first).

    Args:
      x: [batch, D] data rows.
      num_samples: k, the samples z per image.
      seed: stateless seed, an int or int32 [2].
      condition: [batch, C] for a conditional model.

    Returns:
      [batch, num_samples] float32.
    """
    x = tf.repeat(tf.cast(x, tf.float32), num_samples, axis=0)
    if condition is not None:
      condition = tf.repeat(condition, num_samples, axis=0)
    posteriors, z = self.encode(x, seed, discrete=True, condition=condition)
    log_q = tf.add_n([tf.reduce_sum(q.discrete().log_prob(sample), axis=-1)
                      for q, sample in zip(posteriors, z)])
    z = tf.concat(z, axis=-1)
    log_z, offsets = self.prior_condition(self.prior_machine.current_log_z(), condition)
    log_w = (self.log_likelihood(x, z, condition=condition)
             + self.prior.discrete_log_prob(z, log_z, offsets) - log_q)
    return tf.reshape(log_w, [-1, num_samples])

  def test_step(self, data: typing.Any) -> dict[str, tf.Tensor]:
    """One evaluation batch (Keras's `test_step`): the discrete model's IW estimate of the NLL
    with k = `eval_iw_samples` at a fixed seed, and its negative ELBO.

    Args:
      data: a batch as Keras gives it: x or {"x": x, "condition": c}, with placeholder targets
        and sample weights if any.

    Returns:
      The means so far of `loss` (the NLL) and `neg_elbo` (`step_logs`).
    """
    data, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, condition = self.inputs_of(data)
    log_w = self.discrete_log_weights(x, self.eval_iw_samples, tf.constant([1, 0]),
                                      condition=condition)
    self._trackers["loss"].update_state(-iw_log_mean_exp(log_w), sample_weight=sample_weight)
    self._trackers["neg_elbo"].update_state(-tf.reduce_mean(log_w, axis=-1),
                                            sample_weight=sample_weight)
    return step_logs({name: self._trackers[name] for name in ("loss", "neg_elbo")})
