"""SavedModel export of a trained DVAE with serving endpoints.

Endpoints (all float32 images in [0, 1]^D, flattened row-major; D = 784 for 28×28 MNIST):

    encode(x, seed)          → {"logits_i": [N, units]} the posterior logits of each latent
                               layer, with the layers below i fed binary z ~ q(z|x) drawn at
                               `seed`
    decode(z)                → [N, D] pixel probabilities σ(f(z)) for binary latents z
    sample(num_images, seed) → [num_images, D] pixel probabilities of z ~ p(z) (fresh Gibbs
                               chains)
    log_likelihood(x, k, seed) → [N] the IW estimate of log p(x) with k samples per image, with
                               the log Z of the exported parameters, estimated (or kept, if
                               current) at export with the prior's `log_z_refresh` settings
    image_shape()            → int32 [2], (H, W) of the images; only for image data

A conditional model (`condition_dims` C > 0, p(x|c)) has the same endpoints with one more
argument, last, `condition` float32 [N, C] (one row per image; for `sample` num_images rows):
encode(x, seed, condition), decode(z, condition), sample(num_images, seed, condition),
log_likelihood(x, k, seed, condition) (the IW estimate of log p(x|c)), and a
`condition_dims()` endpoint → int32 C. The export's marker file records `condition_dims` too.

Load with `tf.saved_model.load(path)` and call e.g. `loaded.decode(z)`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import typing
from collections.abc import Sequence

import keras
import tensorflow as tf

from dvae import runs
from dvae.model import iw_log_mean_exp

if typing.TYPE_CHECKING:
  from dvae.model import DVAE

# Gibbs sweeps that take fresh chains from uniform noise to (approximate) prior samples.
SAMPLE_SWEEPS = 1000


class ExportDirExistsError(FileExistsError):
  """The export directory exists and overwriting was not asked for."""


def export_model(model: DVAE, export_dir: str, overwrite: bool = False,
                 image_shape: Sequence[int] | None = None) -> None:
  """Writes `model` as a SavedModel at `export_dir`, atomically (temporary name, then rename).

  `image_shape` (H, W) of the training data (`Dataset.image_shape`), if it has one, is kept as
  the `image_shape` endpoint, so that a user can reshape the [N, D] outputs into images.
  The prior's log Z is made current first (`ensure_current_log_z`): the export carries the
  log Z of the exported parameters. A conditional model's endpoints take the condition
  (module docstring).

  Args:
    model: the `dvae.model.DVAE` to export.
    export_dir: the SavedModel's directory; its parent is created if missing.
    overwrite: whether to replace an earlier export of this program at `export_dir`.
    image_shape: (H, W) of the images, or None for flat data (no `image_shape` endpoint).

  Raises:
    ExportDirExistsError: `export_dir` exists and `overwrite` is False, or it exists and is
      not a model exported by this program (it has no `runs.EXPORT_MARKER`).
    OSError: the directory cannot be written (the temporary one is removed).
  """
  if os.path.lexists(export_dir) and not overwrite:
    raise ExportDirExistsError(
        f"export directory {export_dir} exists; pass --overwrite to replace it")
  if os.path.lexists(export_dir) and not runs.is_export(export_dir):
    raise ExportDirExistsError(
        f"export directory {export_dir} is not a model exported by this program (it has no "
        f"{runs.EXPORT_MARKER}), so it is not replaced; remove it yourself or export elsewhere")
  model.prior_machine.ensure_current_log_z()
  num_latents = model.prior_machine.num_units
  images = tf.TensorSpec([None, model.num_dims], tf.float32, name="x")
  seed = tf.TensorSpec([2], tf.int32, name="seed")
  condition_dims = getattr(model, "condition_dims", 0)
  # The conditional endpoints' last argument; none for an unconditional model.
  conditions = ([tf.TensorSpec([None, condition_dims], tf.float32, name="condition")]
                if condition_dims else [])

  def rows_of(condition, num_rows, what):
    """`condition`, checked to have one row per row of `what` (num_rows)."""
    if condition is None:
      return None
    with tf.control_dependencies([tf.debugging.assert_equal(
        tf.shape(condition)[0], tf.cast(num_rows, tf.int32),
        message=f"condition needs one row per row of {what}")]):
      return tf.identity(condition)

  def encode(x, seed, condition=None):
    condition = rows_of(condition, tf.shape(x)[0], "x")
    posteriors, _ = model.encode(x, seed, discrete=True, condition=condition)
    return {f"logits_{i}": q.logits for i, q in enumerate(posteriors)}

  def decode(z, condition=None):
    condition = rows_of(condition, tf.shape(z)[0], "z")
    return model.likelihood.mean(model.decode(z, condition=condition))

  def sample(num_images, seed, condition=None):
    condition = rows_of(condition, num_images, "the images (num_images)")
    return decode(model.prior_states(num_images, SAMPLE_SWEEPS, seed, condition), condition)

  def log_likelihood(x, k, seed, condition=None):
    condition = rows_of(condition, tf.shape(x)[0], "x")
    return iw_log_mean_exp(model.discrete_log_weights(x, k, seed, condition=condition))

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint("encode", encode, input_signature=[images, seed, *conditions])
  archive.add_endpoint("decode", decode, input_signature=[
      tf.TensorSpec([None, num_latents], tf.float32, name="z"), *conditions])
  archive.add_endpoint("sample", sample, input_signature=[
      tf.TensorSpec([], tf.int32, name="num_images"), seed, *conditions])
  archive.add_endpoint("log_likelihood", log_likelihood, input_signature=[
      images, tf.TensorSpec([], tf.int32, name="k"), seed, *conditions])
  if condition_dims:
    archive.add_endpoint("condition_dims", lambda: tf.constant(condition_dims, tf.int32),
                         input_signature=[])
  if image_shape is not None:
    archive.add_endpoint("image_shape", lambda: tf.constant(image_shape, tf.int32),
                         input_signature=[])
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(export_dir)}.tmp-")
  try:
    archive.write_out(temporary, verbose=False)
    runs.write_json_atomically(os.path.join(temporary, runs.EXPORT_MARKER),
                               {"dvae_export": 1, "num_dims": model.num_dims,
                                "condition_dims": condition_dims})
    if os.path.lexists(export_dir):
      # An earlier export (checked above): renamed aside first, so that export_dir is always
      # a whole model.
      previous = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(export_dir)}.old-")
      os.replace(export_dir, os.path.join(previous, "model"))
      os.replace(temporary, export_dir)
      shutil.rmtree(previous)
    else:
      os.replace(temporary, export_dir)
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise
