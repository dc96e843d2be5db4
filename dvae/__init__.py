"""DVAE#: discrete variational autoencoders with relaxed Boltzmann priors, in TensorFlow 2."""
