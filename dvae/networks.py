"""The deterministic networks of the encoder and decoder (SPEC §4).

Every network is a multi-layer perceptron whose hidden layers are

    h ← tanh(BatchNorm(W h)),      BatchNorm momentum 0.8, ε = 1e-2,

followed by a dense output layer. Kernels use He-style variance scaling and, together with
the batch-norm scales γ, carry the weight decay 1e-4 · ½‖·‖² as Keras regularizers, so that
`model.losses` is the whole network penalty.
"""

import keras

WEIGHT_DECAY = 1e-4
HIDDEN_UNITS = 200


def _decay():
  # keras.regularizers.L2(c) computes c·‖θ‖²; the paper's penalty is 1e-4 · ½‖θ‖².
  return keras.regularizers.L2(0.5 * WEIGHT_DECAY)


def mlp(num_hidden: int, output_units: int, name: str, seed: int,
        hidden_units: int = HIDDEN_UNITS) -> keras.Sequential:
  """An MLP with `num_hidden` dense → batch-norm → tanh blocks and a dense output.

  Args:
    num_hidden: number of hidden layers (0 gives a linear map).
    output_units: width of the output layer.
    name: Keras name of the network.
    seed: integer seed of the kernels' initialisation (layer i uses seed + i).
    hidden_units: width of every hidden layer.

  Returns:
    A `keras.Sequential` mapping [batch, d_in] to [batch, output_units].
  """
  layers = []
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
