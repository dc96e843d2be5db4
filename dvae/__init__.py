"""DVAE#: discrete variational autoencoders with relaxed Boltzmann priors, in TensorFlow 2."""

__version__ = "0.9.0"
