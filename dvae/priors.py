"""The Boltzmann prior terms of the bound, one class per baseline family (SPEC §3.1).

The generative model is p(z, ζ) = p(z) Π_i r(ζ_i|z_i) with an RBM p(z) = e^{−E(z)}/Z over
z = (z1, z2) (`dvae.rbm.RBM`),

    E(z) = −b1ᵀz1 − b2ᵀz2 − z1ᵀWz2.

The latent layers of the hierarchical posterior are concatenated in order and split in half:
z1 is the first `rbm.num_left` units, z2 the rest. Four priors cover the eight baselines:

* `AnalyticKLPrior` (DVAE++, and DVAE with one latent layer): the analytic KL of the ELBO.
* `RolfeKLPrior` (DVAE with several latent layers): a surrogate with Rolfe's KL gradients.
* `MarginalRelaxationPrior` (DVAE# with a smoothing family): the relaxed marginal
  p(ζ) = Σ_z p(z) r(ζ|z) by mean field.
* `GaussianIntegralPrior` (DVAE# GI): the closed-form marginal of shifted Gaussians.

Priors on a hardware graph (`dvae.boltzmann.GraphBoltzmannMachine`, E(z) = −bᵀz −
Σ_{(i,j)∈E} J_ij z_i z_j over the same concatenated units) support the terms that use the
machine only through its energy, its pairwise part and block mean field: the analytic KL
(DVAE++, and DVAE with one latent layer; E is multilinear, so E_q[E(z)] needs only the means of
each unit and of each coupled pair) and the mean-field marginal relaxation (DVAE# exp, power,
Gaussian, uniform+exp; the bound −E(m) + H(m) holds for any factorial m, and the colour classes
of the graph are its update blocks). Rolfe's KL gradients and the Gaussian integral are written
for the bipartite split (W's two sides, W's singular values) and are refused for graphs
(`dvae.config.graph_prior_refusal`).

A label-conditional prior (`dvae.clamped.ClampedLabelMachine`) adds to the biases of each
example's machine a field a [B, N] (`offsets`): −E(z) becomes −E(z) + aᵀz in every term, and log Z
is that example's label's.

log Z is never computed here: the bound's terms take it as a scalar tensor (or one per example)
from the caller, who
gives it the running estimate as value and the sampler's surrogate gradient
(`dvae.boltzmann.BoltzmannMachine.train_log_z`); the discrete log p(z) reads the machine's
`current_log_z()` unless given one.
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

from dvae import config, relaxations
from dvae.config import BASELINES
from dvae.boltzmann import BoltzmannMachine
from dvae.rbm import RBM

tfd = tfp.distributions


# The posterior relaxation q(ζ|x) each baseline trains with (names of `dvae.relaxations`).
RELAXATION_OF_BASELINE = {
    "dvae_spike_exp": "spike_exp",
    "dvaepp_exp": "exponential",
    "dvaepp_power": "power",
    "dvaes_gi": "shifted_gaussian",
    "dvaes_gauss": "gaussian",
    "dvaes_exp": "exponential",
    "dvaes_unexp": "uniform_exponential",
    "dvaes_power": "power",
}

# Rolfe's surrogate clips the posterior logits to ±88, where σ(l) and 1 − σ(l) stay nonzero.
MAX_LOGIT = 88.0
# Mean-field block updates of the DVAE# marginal relaxation.
MEAN_FIELD_ITERATIONS = 5
# The Gaussian-integral overlap λ stays this far above −λ_min(𝒲), so 𝒲 + λI ≻ 0.
GI_EIGENVALUE_MARGIN = 5.0


def _bernoulli_entropy(logits):
  """H(σ(l)) = softplus(l) − σ(l)·l, finite with a finite gradient for any logit."""
  return tf.nn.softplus(logits) - tf.sigmoid(logits) * logits


class BoltzmannPrior:
  """What every prior shares: the RBM, its halves, and the discrete log p(z).

  Args:
    machine: the Boltzmann machine over the concatenated latent layers (a `dvae.rbm.RBM`, or a
      `dvae.boltzmann.GraphBoltzmannMachine` where `make_prior` allows it).
  """

  def __init__(self, machine: BoltzmannMachine):
    self.machine = machine

  @property
  def trains_iw(self) -> bool:
    """Whether the prior has a relaxed log p(ζ) for the importance-weighted bound."""
    return False

  def split(self, per_layer: list[tf.Tensor]) -> list[tf.Tensor]:
    """Concatenates per-layer [B, units] tensors in order and splits them into (z1, z2).

    Args:
      per_layer: one [B, units] tensor per latent layer.

    Returns:
      [z1 [B, n1], z2 [B, n2]], the RBM's two sides.
    """
    joined = tf.concat(per_layer, axis=-1)
    return tf.split(joined, [self.machine.num_left, self.machine.num_right], axis=-1)

  def discrete_log_prob(self, z: tf.Tensor, log_z: tf.Tensor | None = None,
                        offsets: tf.Tensor | None = None) -> tf.Tensor:
    """log p(z) = −E(z) + aᵀz − log Z.

    Args:
      z: [B, n] states (binary, or any real vector).
      log_z: the machine's log Z, a scalar or [B]; by default its `current_log_z()`, never a
        stale value.
      offsets: a [B, n], fields added to the biases (a label's, `dvae.clamped`); None for none.

    Returns:
      [B] log p(z), in the machine's dtype.

    Raises:
      StaleLogZError: (eagerly) the estimate is stale and the machine has no refresh settings.
    """
    if log_z is None:
      log_z = self.machine.current_log_z()
    neg_energy = -self.machine.energy(z)
    if offsets is not None:
      neg_energy += tf.reduce_sum(tf.cast(z, neg_energy.dtype) * offsets, axis=-1)
    return neg_energy - tf.cast(log_z, neg_energy.dtype)

  def log_prob(self, zeta: tf.Tensor, log_z: tf.Tensor,
               offsets: tf.Tensor | None = None) -> tf.Tensor:
    """The discrete log p(z) at z = ζ [B, n] → [B]; these priors have no relaxed density."""
    return self.discrete_log_prob(zeta, log_z, offsets)

  def summaries(self) -> dict[str, tf.Tensor | float]:
    """Scalars worth watching during training, by name: the sampler's (see
    `dvae.samplers.Sampler.summaries`)."""
    return self.machine.sampler.summaries()


class AnalyticKLPrior(BoltzmannPrior):
  """DVAE++'s analytic KL(q(z, ζ|x) ‖ p(z, ζ)) for a Boltzmann prior (also DVAE, one layer).

  #### Mathematical Details

  The smoothing r(ζ|z) is shared by q and p, so only the discrete part remains:

      KL = CE − H,    H = Σ_i H(Bern(q_i)),
      CE = E_q[E(z)] + log Z = −q1ᵀb1 − q2ᵀb2 − Σ_j (σ(l1 + g1)ᵀW)_j q2_j + log Z,

  and on a graph, with units in posterior order, CE = −bᵀq − Σ_{(i,j)∈E, i<j} J_ij σ(l_i + g_i)
  q_j + log Z (`pairwise` of the machine); the argument below holds for every pair whose
  unit i is in the same or an earlier layer than unit j.

  with q = σ(l) the posterior means of every layer, each conditioned on the sampled ζ of the
  layers before it, and g = log r(ζ|1) − log r(ζ|0) at the sampled ζ. E_q[z1ᵀWz2] needs
  E[z1|ζ]: given all of ζ, unit i of the left half is Bern(σ(l_i + g_i)) (the posterior's
  `conditional_probs`), because later layers see z_i only through ζ_i; the right half's
  means q2 already condition on the ζ of every earlier layer. The estimate is therefore
  unbiased for any hierarchy. With one latent layer (one posterior passed) q2 does not
  depend on ζ1, so E[σ(l1 + g1)] = q1 is used instead (g ≡ 0: the exact value, no sampling
  noise).
  """

  def cross_entropy(self, q: tf.Tensor, means: tf.Tensor, log_z: tf.Tensor,
                    offsets: tf.Tensor | None = None) -> tf.Tensor:
    """−E_q[log p(z)] = −(b + a)ᵀq − Σ_{(i,j)∈E, i<j} J_ij m_i q_j + log Z with m = E[z|ζ] → [B]."""
    machine = self.machine
    biases = machine.biases if offsets is None else machine.biases + offsets
    return (-tf.reduce_sum(q * biases, axis=-1) - machine.pairwise(means, q)
            + tf.cast(log_z, q.dtype))

  def kl(self, posteriors: list[tfd.Distribution], zetas: list[tf.Tensor],
         log_z: tf.Tensor, offsets: tf.Tensor | None = None) -> tf.Tensor:
    """Per-example KL(q ‖ p).

    Args:
      posteriors: one relaxed posterior (`dvae.relaxations.posterior`) per latent layer.
      zetas: one ζ sample [B, units] per latent layer.
      log_z: the machine's log Z, a scalar or [B].
      offsets: a [B, n], fields added to the biases (`discrete_log_prob`); None for none.

    Returns:
      [B] KL estimates.
    """
    logits = [posterior.logits for posterior in posteriors]
    q = tf.sigmoid(tf.concat(logits, axis=-1))
    if len(posteriors) == 1:
      means = q
    else:
      means = tf.concat([posterior.conditional_probs(zeta)
                         for posterior, zeta in zip(posteriors, zetas)], axis=-1)
    entropy = tf.add_n([tf.reduce_sum(_bernoulli_entropy(layer_logits), axis=-1)
                        for layer_logits in logits])
    return self.cross_entropy(q, means, log_z, offsets) - entropy


class RolfeKLPrior(AnalyticKLPrior):
  """DVAE's KL for a hierarchical spike-and-exponential posterior (Rolfe 2016, eqs. 11–12).

  #### Mathematical Details

  With the spike-and-exponential relaxation z_i = 1[ζ_i > 0] is a step function of the
  reparameterisation noise, so the analytic KL of `AnalyticKLPrior` has a biased gradient
  with respect to the left half's q1 when later layers depend on ζ1. Rolfe differentiates
  the expectation instead. For the encoder parameters φ

      ∂KL/∂φ = E[Σ_i (l_i − h_i − (J̃z)_i) ∂q_i/∂φ],
      (J̃z)_i = (1 − z_i)/(1 − q_i) · (W q2)_i   (i in the left half),
      (J̃z)_j = (Wᵀz1)_j                          (j in the right half),

  with h = (b1, b2), q = σ(clip(l, ±88)) conditioned on the sampled ζ of earlier layers (so
  ∂q/∂φ includes the reparameterised path through ζ), and the right half Rao-Blackwellised
  (its means q2 in place of samples; Rolfe does this for the last layer, and every right
  unit is later than every left unit, so it is unbiased for the whole half). The weight
  (1 − z_i)/(1 − q_i) turns the samples in the spike into the jump that z_i makes when q_i
  moves the spike's edge; its denominator is bounded by 1 − min(q_i, 0.999). (The reference
  multiplies the coefficients by min(q, 0.999) itself, which zeroes the gradient of units with
  q > 0.999; here the clip only bounds the weight.) For the prior parameters θ the gradient is
  the positive phase −∂/∂θ (z1ᵀWq2 + hᵀq) at the (fixed) posterior samples plus that of the
  caller's log Z (the negative phase).

  The returned value is the single-sample KL estimate −H + E[E(z)|ζ] + log Z of
  `AnalyticKLPrior` with z1 = 1[ζ1 > 0] (unbiased for the KL); only its gradient is
  replaced, by Rolfe's.
  """

  def kl(self, posteriors: list[tfd.Distribution], zetas: list[tf.Tensor],
         log_z: tf.Tensor, offsets: tf.Tensor | None = None) -> tf.Tensor:
    """Per-example KL estimate [B] whose gradient is Rolfe's (arguments as for
    `AnalyticKLPrior.kl`; the offsets a join h)."""
    logits = tf.clip_by_value(tf.concat([posterior.logits for posterior in posteriors], -1),
                              -MAX_LOGIT, MAX_LOGIT)
    l1, l2 = self.split([logits])
    q1, q2 = tf.sigmoid(l1), tf.sigmoid(l2)
    z1, _ = self.split([tf.stop_gradient(posterior.conditional_probs(zeta))
                        for posterior, zeta in zip(posteriors, zetas)])
    rbm = self.machine
    b1, b2 = rbm.b1, rbm.b2
    if offsets is not None:
      offsets1, offsets2 = self.split([offsets])
      b1, b2 = b1 + offsets1, b2 + offsets2
    jump = (1.0 - z1) / (1.0 - tf.minimum(q1, 0.999))
    coefficients1 = l1 - b1 - jump * tf.matmul(q2, rbm.w, transpose_b=True)
    coefficients2 = l2 - b2 - tf.matmul(z1, rbm.w)
    encoder_surrogate = (
        tf.reduce_sum(tf.stop_gradient(coefficients1) * q1, axis=-1)
        + tf.reduce_sum(tf.stop_gradient(coefficients2) * q2, axis=-1))
    entropy = tf.reduce_sum(_bernoulli_entropy(logits), axis=-1)
    q = tf.stop_gradient(tf.concat([q1, q2], axis=-1))
    value = (self.cross_entropy(q, tf.concat([z1, q[:, rbm.num_left:]], axis=-1), log_z,
                                offsets) - tf.stop_gradient(entropy))
    return value + encoder_surrogate - tf.stop_gradient(encoder_surrogate)


class RelaxedPrior(BoltzmannPrior):
  """A DVAE# prior: a relaxed density log p(ζ) that the IW bound can use directly.

  Subclasses define `log_prob(zeta, log_z)`; the KL of the ELBO is then its single-sample
  estimate KL = Σ log q(ζ|x) − log p(ζ) at the sampled ζ.
  """

  @property
  def trains_iw(self):
    return True

  def kl(self, posteriors: list[tfd.Distribution], zetas: list[tf.Tensor],
         log_z: tf.Tensor, offsets: tf.Tensor | None = None) -> tf.Tensor:
    """log q(ζ|x) − log p(ζ) per example [B], ζ the concatenated per-layer samples (arguments
    as for `AnalyticKLPrior.kl`)."""
    log_q = tf.add_n([tf.reduce_sum(posterior.log_prob(zeta), axis=-1)
                      for posterior, zeta in zip(posteriors, zetas)])
    return log_q - self.log_prob(tf.concat(zetas, axis=-1), log_z, offsets)


class MarginalRelaxationPrior(RelaxedPrior):
  """DVAE#'s relaxed Boltzmann prior p(ζ) = Σ_z p(z) Π_i r(ζ_i|z_i), by mean field.

  #### Mathematical Details

  With b(ζ) = log r(ζ|1) − log r(ζ|0) and c(ζ) = Σ_i log r(ζ_i|0) (mirrored families:
  r(ζ|1) = r(1 − ζ|0)),

      log p(ζ) = log Σ_z exp(−E(z) + b(ζ)ᵀz + c(ζ)) − log Z.

  The sum is the partition function of an RBM with fields a(ζ) = (b1, b2) + b(ζ). Mean field
  approximates it from below (Gibbs' variational principle): for any factorial m,

      log Σ_z e^{−E_ζ(z)} ≥ −E_ζ(m) + H(m),   −E_ζ(m) = a1ᵀm1 + a2ᵀm2 + m1ᵀWm2 + c(ζ),

  and m comes from 5 block updates m2 ← σ(Wᵀm1 + a2), m1 ← σ(W m2 + a1) from m = ½, with no
  gradient through them (on a graph: the colour classes in turn, `mean_field_logits` of the
  machine). The returned value is the bound; its gradient is that of −E_ζ(m) with m held
  fixed, which at the mean-field fixed point is the gradient of the bound itself.

  Args:
    machine: the Boltzmann machine (`dvae.rbm.RBM` or a machine on a graph).
    smoothing: r(ζ|z=0), a distribution with `log_prob` (`dvae.relaxations.smoothing`).
  """

  def __init__(self, machine: BoltzmannMachine, smoothing: tfd.Distribution):
    super().__init__(machine)
    self.smoothing = smoothing

  def log_prob(self, zeta: tf.Tensor, log_z: tf.Tensor,
               offsets: tf.Tensor | None = None) -> tf.Tensor:
    """Mean-field log p(ζ) for ζ [B, n] → [B]; `offsets` a [B, n] join the field b(ζ)."""
    log_r0 = self.smoothing.log_prob(zeta)
    field = self.smoothing.log_prob(1.0 - zeta) - log_r0
    if offsets is not None:
      field += tf.cast(offsets, field.dtype)
    logits = self.machine.mean_field_logits(field, MEAN_FIELD_ITERATIONS)
    means = tf.sigmoid(logits)
    neg_energy = (-self.machine.energy(means) + tf.reduce_sum(field * means, axis=-1)
                  + tf.reduce_sum(log_r0, axis=-1))
    entropy = tf.reduce_sum(_bernoulli_entropy(logits), axis=-1)
    return neg_energy + entropy - tf.cast(log_z, neg_energy.dtype)


class GaussianIntegralPrior(RelaxedPrior):
  """DVAE#'s Gaussian-integral relaxation p(ζ) = Σ_z p(z) N(ζ; z, (𝒲 + λI)⁻¹).

  #### Mathematical Details

  With 𝒲 = [[0, W], [Wᵀ, 0]] (so −E(z) = aᵀz + ½zᵀ𝒲z, a = (b1, b2)) the sum over z
  factorises once the Gaussian is expanded, using zᵀz = Σ_i z_i for binary z:

      log p(ζ) = −½ζᵀ(𝒲 + λI)ζ + Σ_i softplus(((𝒲 + λI)ζ)_i + a_i − λ/2)
                 − (n/2) log(2π/λ) + ½ log det(I − WᵀW/λ²) − log Z,

  where det(𝒲 + λI) = λⁿ det(I − WᵀW/λ²) by the Schur complement. The overlap

      λ = max(β, 5 + max(0, −λ_min(𝒲))),   λ_min(𝒲) = −σ_max(W),

  keeps 𝒲 + λI ≻ 0. It is recomputed from the current W at every call and carries no
  gradient.

  Args:
    rbm: the `dvae.rbm.RBM`.
    beta: the lower bound β on λ.
  """

  def __init__(self, rbm: RBM, beta: float):
    super().__init__(rbm)
    self.beta = beta

  def min_eigenvalue(self) -> tf.Tensor:
    """λ_min(𝒲) = −σ_max(W) (the eigenvalues of 𝒲 are ±σ(W) and zeros), without gradient."""
    singular_values = tf.linalg.svd(tf.stop_gradient(tf.convert_to_tensor(self.machine.w)),
                                    compute_uv=False)
    return -tf.reduce_max(singular_values)

  def summaries(self) -> dict[str, tf.Tensor | float]:
    return {**super().summaries(), "lambda": self.lam(),
            "min_eigenvalue": self.min_eigenvalue()}

  def lam(self) -> tf.Tensor:
    """The overlap λ = max(β, 5 + max(0, −λ_min(𝒲))), a scalar without gradient."""
    min_eigenvalue = self.min_eigenvalue()
    return tf.maximum(tf.cast(self.beta, min_eigenvalue.dtype),
                      GI_EIGENVALUE_MARGIN + tf.maximum(0.0, -min_eigenvalue))

  def log_prob(self, zeta: tf.Tensor, log_z: tf.Tensor,
               offsets: tf.Tensor | None = None) -> tf.Tensor:
    """log p(ζ) for ζ [B, n] → [B]; `offsets` a [B, n] join the biases."""
    rbm = self.machine
    lam = self.lam()
    zeta1, zeta2 = self.split([zeta])
    precision_zeta = tf.concat([lam * zeta1 + tf.matmul(zeta2, rbm.w, transpose_b=True),
                                lam * zeta2 + tf.matmul(zeta1, rbm.w)], axis=-1)
    bias = tf.concat([rbm.b1, rbm.b2], axis=0)
    if offsets is not None:
      bias += offsets
    # Summing −½ζ_i u_i + softplus(u_i + a_i − λ/2) unit by unit keeps the two O(λ) parts of
    # each unit together, so their cancellation happens before the sum over units.
    per_unit = -0.5 * zeta * precision_zeta + tf.nn.softplus(precision_zeta + bias - 0.5 * lam)
    num_units = rbm.num_left + rbm.num_right
    # The determinant on the smaller side: det(I − WᵀW/λ²) = det(I − WWᵀ/λ²).
    w = tf.convert_to_tensor(rbm.w) / lam
    gram = (tf.matmul(w, w, transpose_a=True) if rbm.num_right <= rbm.num_left
            else tf.matmul(w, w, transpose_b=True))
    log_det = tf.linalg.logdet(tf.eye(tf.shape(gram)[0], dtype=gram.dtype) - gram)
    return (tf.reduce_sum(per_unit, axis=-1) - 0.5 * num_units * tf.math.log(2 * math.pi / lam)
            + 0.5 * log_det - tf.cast(log_z, per_unit.dtype))


def make_prior(baseline: str, machine: BoltzmannMachine, beta: float,
               num_latent_layers: int = 1) -> BoltzmannPrior:
  """The prior term of `baseline` (one of `BASELINES`) for an RBM prior.

  Args:
    baseline: the baseline name of SPEC §6.
    machine: the Boltzmann machine over the concatenated latent layers: a `dvae.rbm.RBM`, or a
      `dvae.boltzmann.GraphBoltzmannMachine` for the baselines `config.graph_prior_refusal`
      allows.
    beta: the smoothing sharpness β (for dvaes_gi: the lower bound on λ).
    num_latent_layers: number of latent layers; DVAE (dvae_spike_exp) with more than one
      trains with Rolfe's KL gradients, with one with the analytic (mean-field) KL.

  Returns:
    An `AnalyticKLPrior`, `RolfeKLPrior`, `MarginalRelaxationPrior` or `GaussianIntegralPrior`.

  Raises:
    ValueError: for an unknown baseline, fewer than one latent layer, or a baseline that a
      machine on a graph does not support.
  """
  if baseline not in RELAXATION_OF_BASELINE:
    raise ValueError(f"Unknown baseline {baseline!r}; allowed values: {', '.join(BASELINES)}.")
  if int(num_latent_layers) != num_latent_layers or num_latent_layers < 1:
    raise ValueError(f"num_latent_layers must be a positive integer (1, 2, 4, ...), "
                     f"got {num_latent_layers!r}.")
  refusal = config.graph_prior_refusal(baseline, num_latent_layers)
  if refusal and not isinstance(machine, RBM):
    raise ValueError(f"{refusal}.")
  if baseline == "dvaes_gi":
    return GaussianIntegralPrior(machine, beta)
  if baseline in ("dvaes_gauss", "dvaes_exp", "dvaes_unexp", "dvaes_power"):
    return MarginalRelaxationPrior(
        machine, relaxations.smoothing(RELAXATION_OF_BASELINE[baseline], beta))
  if baseline == "dvae_spike_exp" and num_latent_layers > 1:
    return RolfeKLPrior(machine)
  return AnalyticKLPrior(machine)
