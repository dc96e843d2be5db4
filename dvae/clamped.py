"""A label-conditional Boltzmann prior: one-hot label units clamped to the condition.

Mathematical Details

A label y ∈ {0, …, K−1}, given as K one-hot units c = e_y that are clamped (never sampled) and
coupled to every latent unit by U [K, N], turns the machine's energy into

    E(z | y) = E(z) − U_yᵀz,      p(z | y) = e^{−E(z|y)} / Z_y,      Z_y = Σ_z e^{−E(z|y)}:

the machine with biases b_y = b + U_y and the couplings that every label shares. Only b_y enters
p(z|y) (b and U are not identifiable apart), so each label's biases are its own parameters, and
label y's prior is a complete `dvae.boltzmann.BoltzmannMachine` (`machines[y]`) that uses the
couplings of machine 0 (`shared_weights`). Each keeps what a machine keeps: its persistent chains
(the negative phase of ∂log Z_y/∂θ), its normaliser log Z_y with the parameters it belongs to
(re-estimated when stale, `current_log_z`) and its running path estimate for the training loss.

In the bound, example i with label y_i has

    log p(z_i | y_i) = −E_0(z_i) + a_iᵀz_i − log Z_{y_i},      a_i = b_{y_i} − b_0,

so the label enters the priors of `dvae.priors` as a field a_i over machine 0 (`offsets`), the
way the smoothing's field enters the relaxed marginal. The batch mean of log Z_{y_i} is
Σ_y (n_y / B) log Z_y: `train_log_z` runs every label's negative phase and returns the K
estimates, and taking example i's (`per_example`) weighs label y's sampler gradient by its share
n_y / B of the batch, which is the gradient of the batch's mean log Z_{y_i}.

A condition row must be one-hot (a label); the machine checks it where the rows enter.

Example:

```python
prior = dvae.ClampedLabelMachine(dvae.RBM(32, 32, num_chains=200, num_sweeps=10), num_classes=10)
model = dvae.DVAE(encoders, decoder, prior, num_dims=784, relaxation="power", beta=30.0,
                  condition_dims=10)      # the condition: the label, one-hot
model.fit({"x": x, "condition": keras.utils.to_categorical(y, 10)}, ...)
images = model.sample(10, condition=tf.eye(10))     # one image of every label
```
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from dvae.boltzmann import BoltzmannMachine


@keras.saving.register_keras_serializable(package="dvae")
class ClampedLabelMachine(keras.layers.Layer):
  """p(z | y): K machines, one per label, with their own biases and shared couplings.

  Args:
    machine: label 0's machine (an `dvae.rbm.RBM`, a `GraphBoltzmannMachine`, ...); the other
      labels' machines are built from its config (chains, sampler, path settings) and share its
      couplings (`machine.COUPLINGS`).
    num_classes: K ≥ 2, the number of labels.
    **kwargs: `keras.layers.Layer` arguments (name, ...).

  Raises:
    TypeError: `machine` is not a `BoltzmannMachine`.
    ValueError: `num_classes` is not an integer ≥ 2.
  """

  def __init__(self, machine: BoltzmannMachine, num_classes: int, **kwargs):
    if not isinstance(machine, BoltzmannMachine):
      raise TypeError(f"machine must be a dvae.boltzmann.BoltzmannMachine, got "
                      f"{type(machine).__name__}")
    if int(num_classes) != num_classes or num_classes < 2:
      raise ValueError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    kwargs.setdefault("name", f"{machine.name}_labels")
    super().__init__(**{**kwargs, "dtype": machine.dtype})
    self.num_classes = int(num_classes)
    shared = {v.name: v for v in machine.parameters() if v.name in machine.COUPLINGS}
    config = machine.get_config()
    # One attribute per label (not a list): TensorFlow checkpoints see attributes.
    self.label_0 = machine
    for label in range(1, self.num_classes):
      setattr(self, f"label_{label}", type(machine).from_config(
          {**config, "name": f"{machine.name}_label{label}", "shared_weights": shared}))
    self.built = True

  def get_config(self):
    config = super().get_config()
    config.update(machine=keras.saving.serialize_keras_object(self.label_0),
                  num_classes=self.num_classes)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["machine"] = keras.saving.deserialize_keras_object(config["machine"])
    return cls(**config)

  @property
  def machines(self) -> list[BoltzmannMachine]:
    """The K machines, label y's at index y."""
    return [getattr(self, f"label_{label}") for label in range(self.num_classes)]

  @property
  def num_units(self) -> int:
    """N, the latent units."""
    return self.label_0.num_units

  @property
  def num_chains(self) -> int:
    """The persistent chains of each label."""
    return self.label_0.num_chains

  @property
  def sampler(self):
    """Label 0's sampler (every label's is built from the same config)."""
    return self.label_0.sampler

  def labels(self, condition: tf.Tensor | np.ndarray) -> tf.Tensor:
    """The condition rows [B, K], checked to be one-hot (a label each), in the machine's dtype.

    Raises:
      ValueError: (eagerly) rows of another width or not one-hot; inside a `tf.function` the
        function stops with that message.
    """
    condition = tf.cast(condition, self.dtype)
    if condition.shape.rank != 2 or condition.shape[-1] != self.num_classes:
      raise ValueError(f"the condition of a ClampedLabelMachine is the label, one-hot "
                       f"[batch, {self.num_classes}]; got shape {condition.shape}")
    one_hot = tf.reduce_all((condition == 0.0) | (condition == 1.0)) & tf.reduce_all(
        tf.reduce_sum(condition, axis=-1) == 1.0)
    message = (f"the condition of a ClampedLabelMachine is the label, one-hot: each row has "
               f"one 1 and {self.num_classes - 1} zeros")
    if tf.executing_eagerly():
      if not bool(one_hot):
        raise ValueError(message)
      return condition
    with tf.control_dependencies([tf.debugging.Assert(one_hot, [tf.constant(message)])]):
      return tf.identity(condition)

  def offsets(self, condition: tf.Tensor | np.ndarray) -> tf.Tensor:
    """a_i = b_{y_i} − b_0 [B, N], the field that label y_i adds to machine 0's biases."""
    biases = tf.stack([tf.convert_to_tensor(m.biases) for m in self.machines])
    return tf.matmul(self.labels(condition), biases - biases[0])

  def per_example(self, values: tf.Tensor, condition: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Each row's entry of a per-label vector `values` [K] (e.g. log Z_y): [B]."""
    return tf.linalg.matvec(self.labels(condition), tf.cast(values, self.dtype))

  def train_log_z(self, seed: tf.Tensor) -> tf.Tensor:
    """Every label's `BoltzmannMachine.train_log_z` (its negative phase and running estimate),
    each with its own seed: [K]."""
    seed = tfp.random.sanitize_seed(seed)
    return tf.stack([m.train_log_z(tf.random.experimental.stateless_fold_in(seed, label))
                     for label, m in enumerate(self.machines)])

  def _stacked(self, name):
    return tf.stack([tf.convert_to_tensor(getattr(m, name)) for m in self.machines])

  @property
  def log_z(self) -> tf.Tensor:
    """The stored log Z_y [K] (of the parameters each was estimated for)."""
    return self._stacked("log_z")

  @property
  def log_z_stderr(self) -> tf.Tensor:
    """Their standard errors [K]."""
    return self._stacked("log_z_stderr")

  @property
  def running_log_z(self) -> tf.Tensor:
    """The running estimates of log Z_y [K] (`BoltzmannMachine.train_log_z`)."""
    return self._stacked("running_log_z")

  @property
  def running_log_z_stderr(self) -> tf.Tensor:
    """Their standard errors [K]."""
    return self._stacked("running_log_z_stderr")

  @property
  def negative_phase_lag(self) -> tf.Tensor:
    """Each label's negative-phase lag [K] (nats per step, `dvae.boltzmann`)."""
    return self._stacked("negative_phase_lag")

  @property
  def log_z_refresh(self):
    """The settings with which every label's stale log Z is re-estimated (label 0's)."""
    return self.label_0.log_z_refresh

  @log_z_refresh.setter
  def log_z_refresh(self, settings):
    for m in self.machines:
      m.log_z_refresh = settings

  def update_log_z(self, method: str = "ais", **kwargs) -> tuple[tf.Tensor, tf.Tensor]:
    """Estimates and records every label's log Z (`BoltzmannMachine.update_log_z`).

    Returns:
      (log Z_y [K], standard errors [K]).
    """
    estimates = [m.update_log_z(method, **kwargs) for m in self.machines]
    return tuple(tf.stack([tf.convert_to_tensor(e[i]) for e in estimates]) for i in (0, 1))

  def ensure_current_log_z(self) -> None:
    """Every label's `BoltzmannMachine.ensure_current_log_z`."""
    for m in self.machines:
      m.ensure_current_log_z()

  def current_log_z(self) -> tf.Tensor:
    """log Z_y of the current parameters, [K] (`BoltzmannMachine.current_log_z`)."""
    return tf.stack([m.current_log_z() for m in self.machines])

  def weight_decay_loss(self) -> tf.Tensor:
    """The shared couplings' weight decay, counted once."""
    return self.label_0.weight_decay_loss()

  def _by_label(self, condition, states):
    """Row i of label y_i's states: Σ_y c_iy · states_y[i] for states [K] × [B, N]."""
    labels = self.labels(condition)
    return tf.einsum("by,ybn->bn", labels, tf.cast(tf.stack(states), self.dtype))

  def chain_states(self, condition: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Row i of label y_i's persistent chains [B, N] (B at most `num_chains`)."""
    num_rows = tf.shape(condition)[0]
    return self._by_label(condition, [m.chains[:num_rows] for m in self.machines])

  def sample(self, condition: tf.Tensor | np.ndarray, num_sweeps: int,
             seed: int | Sequence[int] | tf.Tensor | None = None) -> tf.Tensor:
    """States [B, N], row i of p(z | y_i): `num_sweeps` sweeps of label y_i's machine from
    uniform random states (`BoltzmannMachine.sample`)."""
    seed = tfp.random.sanitize_seed(seed)
    num_rows = tf.shape(condition)[0] if condition.shape[0] is None else condition.shape[0]
    return self._by_label(condition, [
        m.sample(num_rows, num_sweeps, tf.random.experimental.stateless_fold_in(seed, label))
        for label, m in enumerate(self.machines)])
