"""The deterministic networks of the encoder and decoder (SPEC §4).

Every network is a multi-layer perceptron whose hidden layers are

    h ← tanh(BatchNorm(W h)),      BatchNorm momentum 0.8, ε = 1e-2,

followed by a dense output layer. An encoder starts with a fixed `Offset`, the centring
x − x̄, so that it gives the same values alone as inside the model. Kernels use He-style
variance scaling and, together with the batch-norm scales γ, carry the weight decay 1e-4 · ½‖·‖² as Keras regularizers, so that
`model.losses` is the whole network penalty.
"""

import keras
import tensorflow as tf

WEIGHT_DECAY = 1e-4
HIDDEN_UNITS = 200


def _decay():
  # keras.regularizers.L2(c) computes c·‖θ‖²; the paper's penalty is 1e-4 · ½‖θ‖².
  return keras.regularizers.L2(0.5 * WEIGHT_DECAY)


@keras.saving.register_keras_serializable(package="dvae")
class Offset(keras.layers.Layer):
  """x ↦ x + a for a fixed vector a (no trainable weights; a is part of the config).

  Args:
    offset: the vector a [d], matching the input's last axis.
  """

  def __init__(self, offset: list, **kwargs):
    super().__init__(**kwargs)
    self.offset = [float(value) for value in offset]

  def get_config(self):
    return {**super().get_config(), "offset": self.offset}

  def call(self, x):
    return x + tf.constant(self.offset, x.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape


def mlp(num_hidden: int, output_units: int, name: str, seed: int,
        hidden_units: int = HIDDEN_UNITS, input_offset: list | None = None) -> keras.Sequential:
  """An MLP with `num_hidden` dense → batch-norm → tanh blocks and a dense output.

  Args:
    num_hidden: number of hidden layers (0 gives a linear map).
    output_units: width of the output layer.
    name: Keras name of the network.
    seed: integer seed of the kernels' initialisation (layer i uses seed + i).
    hidden_units: width of every hidden layer.
    input_offset: a vector added to the input first (an `Offset`), or None.

  Returns:
    A `keras.Sequential` mapping [batch, d_in] to [batch, output_units].
  """
  layers = [] if input_offset is None else [Offset(input_offset, name="input_offset")]
  for i in range(num_hidden):
    layers += [
        # The bias would be cancelled by the batch norm that follows.
        keras.layers.Dense(hidden_units, use_bias=False,
                           kernel_initializer=keras.initializers.HeNormal(seed + i),
                           kernel_regularizer=_decay(), name=f"dense_{i}"),
        keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-2,
                                        gamma_regularizer=_decay(),
                                        name=f"batch_norm_{i}"),
        keras.layers.Activation("tanh", name=f"tanh_{i}"),
    ]
  layers.append(keras.layers.Dense(output_units,
                                   kernel_initializer=keras.initializers.HeNormal(seed + num_hidden),
                                   kernel_regularizer=_decay(), name="output"))
  return keras.Sequential(layers, name=name)
