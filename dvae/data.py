"""The data sets of SPEC §7, a user's own `.npz` file, and their tf.data pipelines.

`load_dataset(name, data_dir, binarization=...)` returns a `Dataset` of float32 [N, D] arrays,
one image per row (row-major when it is an H×W image):

* binarized_mnist — the fixed binarization of Murray & Salakhutdinov (50,000 / 10,000 / 10,000
  images in {0, 1}). From `data_dir` it reads `binarized_mnist.npz` if present (keys `train`,
  `valid`, `test` = `np.packbits(x, axis=1)` and `*_shape` = [N, 784]); otherwise the published
  `binarized_mnist_{train,valid,test}.amat`, which it then caches as that npz. With no
  `data_dir` (and no DVAE_DATA_DIR) it loads the copy embedded in the package, so nothing needs
  the network.
* omniglot — Burda et al.'s `chardata.mat`, grey levels; the last 1,345 training images are the
  validation set.
* dynamic_mnist — the grayscale MNIST of LeCun et al. (`train-images-idx3-ubyte.gz`,
  `t10k-images-idx3-ubyte.gz`), grey level = byte / 255: the first 50,000 of the 60,000 training
  images train, the last 10,000 validate, the 10,000 test images test.
* a path ending in `.npz` — the user's file: keys `train`, `test` and optionally `valid`, each
  [N, D] or [N, H, W] of 0/1 (bool, integer or float) or, with a binarization, grey levels in
  [0, 1]. Without `valid`, the last ⌊N/10⌋ training rows (at least 1) are the validation set,
  the same on every run. Other keys are ignored. An [N, H, W] file keeps (H, W) as
  `Dataset.image_shape`; it is read with `allow_pickle=False`, so object arrays are refused.
  Optional conditions c beside the data make the model learn p(x|c): `train_cond`, `test_cond`,
  and `valid_cond` when there is a `valid` (without `valid` the validation conditions are the
  last rows of `train_cond`, carved like the rows), all or none of them. Each is real [N, C]
  (one row per row of its split, finite, bool, integer or float), or integer labels [N] ≥ 0,
  one-hot encoded to [N, K] with K = the largest label over all splits + 1. They load as
  float32 `Dataset.train_cond`, `valid_cond`, `test_cond`.

Binarization ("none", "static", "dynamic"; the default is the data set's protocol, "dynamic" for
omniglot and dynamic_mnist, "none" otherwise). "none" requires 0/1 values. Otherwise validation
and test are binarized once, validation first, then test, each pixel 1 where a uniform draw of
`numpy.random.default_rng(1)` falls below its grey level; "static" then binarizes the training
images from the same generator, while "dynamic" keeps them grey and binarizes them afresh in
every batch (`Dataset.dynamic_binarization`). The fixed seed makes every run see the same
validation and test images.

Where published files are looked for: `data_dir` is the folder of one data set's files. Without
it, `<root>/<name>/` with root `$DVAE_DATA_DIR` when that is set, else `~/.dvae/datasets` (the
Keras convention of a folder under the user's home) — except binarized_mnist, which without
either loads the embedded copy. A missing published file is downloaded into that folder from its
public source (`URLS`), verified, and reused from there by later runs; DVAE_OFFLINE=1 turns
downloading off.

Checksum policy. `CHECKSUMS` records the published hashes: sha256 of each .amat file, the git blob
SHA-1 of chardata.mat (the only hash published for it), the sha256 of each decoded binarized
MNIST split, so that an npz (the cache, the embedded copy, or one placed by hand) is checked too,
and the sha256 of the decompressed MNIST IDX files ("gunzip-sha256"), which do not depend on how
the .gz was compressed (mirrors recompress).
* A download is always verified; one that does not match is discarded and is an error.
* A file found on disk is verified when `verify=True` (the default; hparam `verify_data`). A
  mismatch is a `DataError` naming the file, both digests, and the two ways out: the published
  file, or `verify=False`.
* `verify=False` loads such a file with a logged warning that its results are not comparable
  with the paper's — for deliberately different data such as the OMNIGLOT proxy of
  `chardata.mat`. The content checks (shape, binary values, grey levels in [0, 1]) always apply.
  A user's `.npz` has no published hash; only the content checks apply.
"""

import collections.abc
import contextlib
import dataclasses
import gzip
import hashlib
import io
import logging
import math
import os
import stat
import tempfile
import types
import urllib.request
import warnings
import zipfile
import zlib

import numpy as np
import scipy.io
import tensorflow as tf

from dvae import config, runs

NUM_PIXELS = 784
SPLITS = ("train", "valid", "test")
EMBEDDED_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                              "binarized_mnist.npz")
CACHE_NAME = "binarized_mnist.npz"
AMAT_NAMES = tuple(f"binarized_mnist_{split}.amat" for split in SPLITS)
CHARDATA_NAME = "chardata.mat"
MNIST_TRAIN_NAME, MNIST_TEST_NAME = "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"
IMAGE_SHAPE = (28, 28)
OMNIGLOT_NUM_VALID = 1345
DYNAMIC_MNIST_NUM_VALID = 10_000
# The seed of the one-time binarization of validation and test (and of training, "static").
BINARIZATION_SEED = 1

_AMAT_URL = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
             "binarized_mnist_{}.amat")
URLS = types.MappingProxyType({
    **{name: _AMAT_URL.format(split) for name, split in zip(AMAT_NAMES, SPLITS)},
    CHARDATA_NAME: "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/"
                   "chardata.mat",
    # The Google Cloud mirror of yann.lecun.com/exdb/mnist that TensorFlow's tutorials use.
    **{name: f"https://storage.googleapis.com/cvdf-datasets/mnist/{name}"
       for name in (MNIST_TRAIN_NAME, MNIST_TEST_NAME)},
})

# "<algorithm>:<hex digest>". Keys are published file names, and "binarized_mnist/<split>" for
# the decoded split as uint8 [N, 784] in C order (its bytes are independent of the file format).
CHECKSUMS = types.MappingProxyType({
    "binarized_mnist_train.amat":
        "sha256:ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "binarized_mnist_valid.amat":
        "sha256:1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "binarized_mnist_test.amat":
        "sha256:e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
    "binarized_mnist/train":
        "sha256:43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    "binarized_mnist/valid":
        "sha256:069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    "binarized_mnist/test":
        "sha256:ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
    CHARDATA_NAME: "git-blob-sha1:016a3536ffe5e1d38e42563a18d7a78bfaf643ec",
    MNIST_TRAIN_NAME:
        "gunzip-sha256:ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    MNIST_TEST_NAME:
        "gunzip-sha256:0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
})

DOWNLOAD_TIMEOUT_SECS = 60
# The most bytes a download may have (the largest published file, chardata.mat, has 38 MB):
# more is refused before its hash is computed.
MAX_DOWNLOAD_BYTES = 256 * 2**20

_LOG = logging.getLogger(__name__)


class DataError(RuntimeError):
  """Data that cannot be found or used; the message is one line naming the file and the fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """One data set's splits as float32 [N, D] arrays, one image per row.

  `train` holds grey levels in [0, 1] when `dynamic_binarization` is set, else 0/1; `valid` and
  `test` are always 0/1. `train_mean` [D] is the per-pixel mean of `train`, the x̄ of the
  encoder's centring and the decoder's bias (SPEC §4). `image_shape` is (H, W) when each row is
  a row-major H×W image, None for flat data (which then has no image summaries). With a
  Gaussian or categorical likelihood (a user's file, binarization "none") all three splits hold
  the file's values as they are.

  A conditional data set (a user's file with conditions) also holds one condition row per
  image of each split, float32 [N, C]; the model then learns p(x|c). An unconditional one has
  None there.

  Attributes:
    train: float32 [N_train, D] training images.
    valid: float32 [N_valid, D] validation images.
    test: float32 [N_test, D] test images.
    train_mean: float32 [D] per-pixel mean of `train`.
    dynamic_binarization: whether `train` is binarized afresh in every batch.
    image_shape: (H, W) with H·W = D, or None.
    train_cond: float32 [N_train, C] conditions of `train`, or None.
    valid_cond: float32 [N_valid, C] conditions of `valid`, or None.
    test_cond: float32 [N_test, C] conditions of `test`, or None.

  Raises:
    ValueError: conditions for some splits but not all, or not one row per image.
  """
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  train_mean: np.ndarray
  dynamic_binarization: bool
  image_shape: tuple[int, int] | None = None
  train_cond: np.ndarray | None = None
  valid_cond: np.ndarray | None = None
  test_cond: np.ndarray | None = None

  def __post_init__(self):
    conditions = [getattr(self, f"{split}_cond") for split in SPLITS]
    if all(c is None for c in conditions):
      return
    if any(c is None for c in conditions):
      raise ValueError("a Dataset has conditions for all three splits or none")
    for split, c in zip(SPLITS, conditions):
      if np.ndim(c) != 2 or len(c) != len(getattr(self, split)):
        raise ValueError(f"{split}_cond must be [N, C] with one row per row of {split}, got "
                         f"shape {list(np.shape(c))} for {len(getattr(self, split))} rows")
    if len({np.shape(c)[1] for c in conditions}) != 1:
      raise ValueError("train_cond, valid_cond and test_cond must have the same width C")

  @property
  def num_dims(self) -> int:
    """D, the pixels per image."""
    return self.train.shape[1]

  @property
  def condition_dims(self) -> int:
    """C, the width of a condition row; 0 for unconditional data."""
    return 0 if self.train_cond is None else self.train_cond.shape[1]


def fingerprint(dataset: Dataset) -> str:
  """16 hex digits of the SHA-256 of a `Dataset`'s splits (shape, dtype and bytes of each), its
  binarization and its conditions if it has any: a run's data, as part of its identity
  (`dvae.runs.open_run`). Data without conditions keeps the fingerprint it had before
  conditions existed.

  Args:
    dataset: the loaded data.

  Returns:
    16 lowercase hex digits.
  """
  digest = hashlib.sha256()
  for x in (dataset.train, dataset.valid, dataset.test):
    x = np.ascontiguousarray(x)
    digest.update(f"{x.dtype.str}{x.shape};".encode())
    digest.update(memoryview(x).cast("B"))
  digest.update(f"dynamic={dataset.dynamic_binarization}".encode())
  if dataset.condition_dims:
    digest.update(b"conditions;")
    for c in (dataset.train_cond, dataset.valid_cond, dataset.test_cond):
      c = np.ascontiguousarray(c)
      digest.update(f"{c.dtype.str}{c.shape};".encode())
      digest.update(memoryview(c).cast("B"))
  return digest.hexdigest()[:16]


def default_data_root() -> str:
  """Where published files go without `data_dir`: $DVAE_DATA_DIR, else ~/.dvae/datasets.

  Returns:
    The folder that holds one folder per published data set (not created here).
  """
  return os.environ.get("DVAE_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".dvae",
                                                         "datasets")


def load_dataset(name: str, data_dir: str | None = None, verify: bool = True,
                 binarization: str | None = None,
                 checksums: collections.abc.Mapping[str, str] = CHECKSUMS,
                 urls: collections.abc.Mapping[str, str] = URLS,
                 likelihood: str = "bernoulli") -> Dataset:
  """Loads, checks, splits and binarizes one data set (see the module docstring).

  Args:
    name: one of `config.DATASETS`, or a path to a `.npz` file.
    data_dir: folder holding a published data set's files, or None for the default location.
    verify: whether files on disk must match `checksums` (downloads always must).
    binarization: "none", "static" or "dynamic"; None for the data set's own protocol.
    checksums: the published hashes; tests inject their own.
    urls: where missing files are downloaded from; tests point them at a local server.
    likelihood: "bernoulli" (0/1 data, or grey levels to binarize), or for a `.npz` file
      "gaussian" (any finite real values) or "categorical" (integer levels 0, 1, …), kept as
      they are.

  Returns:
    The `Dataset`, its splits float32 [N, D].

  Raises:
    DataError: files missing (and not downloadable), not matching their hash, or malformed.
    ValueError: an unknown `name` or `binarization`.
  """
  loaders = {"binarized_mnist": _load_binarized_mnist, "omniglot": _load_omniglot,
             "dynamic_mnist": _load_dynamic_mnist}
  if binarization is None:
    binarization = config.DEFAULT_BINARIZATION.get(name, "none")
  if binarization not in config.BINARIZATIONS:
    raise ValueError(f"unknown binarization {binarization!r}; allowed: "
                     f"{', '.join(config.BINARIZATIONS)}")
  if config.is_data_file(name):
    splits = _load_npz(os.path.abspath(name), likelihood)
  elif name in loaders:
    if not data_dir and (name != "binarized_mnist" or os.environ.get("DVAE_DATA_DIR")):
      data_dir = os.path.join(default_data_root(), name)
    # Absolute, so that messages say exactly where the files go.
    folder = os.path.abspath(data_dir) if data_dir else None
    splits = loaders[name](folder, _Files(verify, checksums, urls))
  else:
    raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(config.DATASETS)}, "
                     "or a path to a .npz file")
  return _binarized(splits, binarization, binary=likelihood == "bernoulli")


@dataclasses.dataclass(frozen=True)
class _Splits:
  """A loader's checked [N, D] splits (0/1 or grey levels in [0, 1]) before binarization."""
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  image_shape: tuple | None
  described: str
  # {split: float32 [N, C]} for every split, or None.
  conditions: dict | None = None


def _binarized(splits, binarization, binary=True):
  """The `Dataset` of `splits` under a binarization protocol (module docstring); values that
  are not `binary` (a Gaussian or categorical likelihood) are kept as they are."""
  if binarization == "none":
    for split in SPLITS:
      if binary:
        _check_values(getattr(splits, split), f"the {split} split of {splits.described}",
                      binary=True)
    train, valid, test = (getattr(splits, split).astype(np.float32) for split in SPLITS)
  else:
    rng = np.random.default_rng(BINARIZATION_SEED)
    valid, test = ((rng.random(x.shape) < x).astype(np.float32)
                   for x in (splits.valid, splits.test))
    train = splits.train
    if binarization == "static":
      train = rng.random(train.shape) < train
    train = train.astype(np.float32)
  conditions = splits.conditions or {}
  return Dataset(train=train, valid=valid, test=test, train_mean=train.mean(axis=0),
                 dynamic_binarization=binarization == "dynamic",
                 image_shape=splits.image_shape,
                 **{f"{split}_cond": conditions.get(split) for split in SPLITS})


@dataclasses.dataclass(frozen=True)
class _Files:
  """Reading, downloading and verifying published files under one checksum policy."""
  verify: bool
  checksums: collections.abc.Mapping
  urls: collections.abc.Mapping

  def read(self, folder: str, names: collections.abc.Sequence[str],
           alternative: str | None = None) -> dict[str, bytes]:
    """{name: bytes} of the files in `folder`, downloading the missing ones; each verified.

    `alternative` names a file that would do instead, for the message when they are missing.

    Args:
      folder: the data set's folder.
      names: published file names (keys of `checksums` and `urls`).
      alternative: a file that would do instead of them all, or None.

    Returns:
      Each file's content by name.

    Raises:
      DataError: a file missing and not downloadable, unreadable, or not matching its hash
        (under `verify`; a download must always match).
    """
    missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
    if missing:
      self._download(folder, missing, alternative)
    contents = {}
    for name in names:
      path = os.path.join(folder, name)
      try:
        with open(path, "rb") as f:
          contents[name] = f.read()
      except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
      self.check(name, contents[name], path,
                 remedy=f"replace it with the published file ({self.urls[name]})")
    return contents

  def check(self, key: str, content: bytes, described: str, remedy: str) -> None:
    """Compares `content` with the published digest of `key` under the verify policy.

    Args:
      key: a key of `checksums`.
      content: the bytes to check.
      described: what they are, for the message (e.g. a path).
      remedy: what the user can do about a mismatch, for the message.

    Raises:
      DataError: a mismatch under `verify`; without it a mismatch is a logged warning.
    """
    mismatch = self._mismatch(key, content)
    if mismatch is None:
      return
    mismatch = f"{described} has {mismatch}"
    if self.verify:
      raise DataError(f"{mismatch}; {remedy}, or pass --verify_data=false to use it anyway")
    _LOG.warning("%s; using it anyway because verify_data is off: results on it are not "
                 "comparable with the paper's", mismatch)

  def _mismatch(self, key, content):
    """None when `content` has the published digest of `key`, else how it differs."""
    algorithm, expected = self.checksums[key].split(":")
    actual = _digest(algorithm, content)
    return None if actual == expected else f"{algorithm} {actual}, not the published {expected}"

  def _download(self, folder, names, alternative):
    offline = os.environ.get("DVAE_OFFLINE", "")
    if offline not in ("", "0"):
      sources = ", ".join(self.urls[name] for name in names)
      raise DataError(f"missing {', '.join(names)} in {folder}, and downloading is off "
                      f"(DVAE_OFFLINE={offline}); put {'it' if len(names) == 1 else 'them'} "
                      f"there (from {sources})"
                      + (f" or put {alternative} there" if alternative else ""))
    created = not os.path.isdir(folder)
    try:
      os.makedirs(folder, exist_ok=True)
    except OSError as e:
      raise DataError(f"cannot create {folder} to download {', '.join(names)} into "
                      f"({e.strerror}); put the files there yourself") from None
    try:
      self._download_into(folder, names)
    except BaseException:
      if created:
        # Leaves no empty folder behind (one that got files keeps them).
        with contextlib.suppress(OSError):
          os.rmdir(folder)
      raise

  def _download_into(self, folder, names):
    for name in names:
      url = self.urls[name]
      _LOG.info("downloading %s from %s", name, url)
      try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECS) as response:
          content = response.read(MAX_DOWNLOAD_BYTES + 1)
      except (OSError, ValueError) as e:
        raise DataError(f"could not download {name} from {url} ({_one_line(e)}); "
                        f"download it yourself and put it in {folder}") from None
      if len(content) > MAX_DOWNLOAD_BYTES:
        raise DataError(f"the download of {name} from {url} is larger than "
                        f"{MAX_DOWNLOAD_BYTES:,} bytes, so it was not kept; put a good copy "
                        f"in {folder}")
      mismatch = self._mismatch(name, content)
      if mismatch is not None:
        raise DataError(f"the download of {name} from {url} has {mismatch}, so it was not "
                        f"kept; put a good copy in {folder}")
      try:
        _write_atomically(os.path.join(folder, name), lambda f, c=content: f.write(c))
      except OSError as e:
        raise DataError(f"cannot write {name} into {folder} ({e.strerror}); "
                        "put the file there yourself") from None


def _digest(algorithm, content):
  if algorithm == "sha256":
    return hashlib.sha256(content).hexdigest()
  if algorithm == "git-blob-sha1":
    # What `git hash-object` prints: the SHA-1 of a header naming the size, then the bytes.
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
  if algorithm == "gunzip-sha256":
    try:
      return hashlib.sha256(gzip.decompress(content)).hexdigest()
    except (OSError, EOFError, zlib.error):
      return "(not a readable gzip file)"
  raise ValueError(f"unknown checksum algorithm {algorithm!r}; allowed: sha256, git-blob-sha1, "
                   "gunzip-sha256")


def _write_atomically(path, write):
  """Writes through a temporary file and renames it, so `path` is never half-written."""
  handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                                       prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise


def _one_line(error):
  return " ".join(str(error).split())


# binarized MNIST


def _load_binarized_mnist(folder, files):
  cache = EMBEDDED_MNIST if folder is None else os.path.join(folder, CACHE_NAME)
  if folder is None or os.path.isfile(cache):
    splits = _read_packed(cache)
    remedy = ("restore it from the repository" if folder is None else
              f"delete it to rebuild it from the published {', '.join(AMAT_NAMES)}")
    for split, x in splits.items():
      files.check(f"binarized_mnist/{split}", x.tobytes(), f"the {split} split of {cache}",
                  remedy)
  else:
    contents = files.read(folder, AMAT_NAMES, alternative=CACHE_NAME)
    splits = {split: _parse_amat(contents[name], os.path.join(folder, name))
              for split, name in zip(SPLITS, AMAT_NAMES)}
    _write_cache(cache, splits)
  return _Splits(**splits, image_shape=IMAGE_SHAPE, described=cache)


def _read_packed(path):
  """{split: uint8 [N, 784]} from the bit-packed npz format."""
  described = path
  layout = ("keys train, valid, test = np.packbits of uint8 [N, 784] 0/1 rows along axis 1, "
            "and train_shape, valid_shape, test_shape = [N, 784]")
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise DataError(f"{described} is not a readable .npz, truncated or corrupt "
                    f"({_one_line(e)}); replace or delete it") from None
  splits = {}
  for split in SPLITS:
    missing = [key for key in (split, f"{split}_shape") if key not in arrays]
    if missing:
      raise DataError(f"{described} lacks {', '.join(missing)}; it must hold {layout}")
    packed, shape = arrays[split], arrays[f"{split}_shape"]
    if (shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer)
        or shape[1] != NUM_PIXELS or shape[0] < 1):
      raise DataError(f"{described}: {split}_shape is {shape.tolist()}, not [N, {NUM_PIXELS}]; "
                      f"it must hold {layout}")
    expected = (int(shape[0]), -(-NUM_PIXELS // 8))
    if packed.dtype != np.uint8 or packed.shape != expected:
      raise DataError(f"{described}: {split} is {packed.dtype} {list(packed.shape)}, not uint8 "
                      f"{list(expected)}; it must hold {layout}")
    splits[split] = np.unpackbits(packed, axis=1, count=NUM_PIXELS)
  return splits


def _parse_amat(content, described):
  """uint8 [N, 784] from .amat text: one image per line, 784 space-separated 0/1 values."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # An empty file warns; the shape check reports it.
      x = np.loadtxt(io.BytesIO(content), dtype=np.float32, ndmin=2)
  except ValueError as e:
    raise DataError(f"{described} is not a text matrix of numbers ({_one_line(e)}); expected "
                    f"{NUM_PIXELS} space-separated 0/1 values per line") from None
  _check_images(x, described, binary=True)
  return x.astype(np.uint8)


def _write_cache(path, splits):
  arrays = {}
  for split, x in splits.items():
    arrays[split] = np.packbits(x, axis=1)
    arrays[f"{split}_shape"] = np.array(x.shape, np.int64)
  try:
    _write_atomically(path, lambda f: np.savez_compressed(f, **arrays))
  except OSError as e:
    # The cache only saves parsing time; the data itself is fine.
    _LOG.warning("could not write the cache %s (%s); the .amat files will be parsed again "
                 "next time", path, e.strerror)


# OMNIGLOT


def _load_omniglot(folder, files):
  path = os.path.join(folder, CHARDATA_NAME)
  content = files.read(folder, [CHARDATA_NAME])[CHARDATA_NAME]
  try:
    mat = scipy.io.loadmat(io.BytesIO(content))
  except (OSError, ValueError, TypeError, EOFError, zlib.error,
          scipy.io.matlab.MatReadError) as e:
    raise DataError(f"{path} is not a readable MATLAB file, truncated or corrupt "
                    f"({_one_line(e)}); replace it with the published file") from None
  train_and_valid, test = (_images_from_columns(mat, key, path) for key in ("data", "testdata"))
  num_valid = OMNIGLOT_NUM_VALID
  if len(train_and_valid) <= num_valid:
    raise DataError(f"{path}: 'data' has {len(train_and_valid)} images; it needs more than "
                    f"{num_valid}, the last {num_valid} of which are the validation set")
  return _Splits(train=train_and_valid[:-num_valid], valid=train_and_valid[-num_valid:],
                 test=test, image_shape=IMAGE_SHAPE, described=path)


def _images_from_columns(mat, key, path):
  """Grey [N, 784] row-major images from a [784, N] array of column-major 28×28 images."""
  if key not in mat:
    raise DataError(f"{path} lacks the variable {key!r}; it must hold 'data' and 'testdata', "
                    f"[{NUM_PIXELS}, N] grey levels in [0, 1], one image per column")
  columns = np.asarray(mat[key])
  if columns.ndim != 2 or columns.shape[0] != NUM_PIXELS or not (
      np.issubdtype(columns.dtype, np.number) and not np.iscomplexobj(columns)):
    raise DataError(f"{path}: {key!r} is {columns.dtype} {list(columns.shape)}, not real "
                    f"[{NUM_PIXELS}, N]: one 28×28 image per column")
  images = columns.T.reshape(-1, 28, 28).transpose(0, 2, 1).reshape(-1, NUM_PIXELS)
  _check_images(images, f"{path} ({key!r})", binary=False)
  return images.astype(np.float64, copy=False)


def _check_images(x, described, binary):
  if x.ndim != 2 or x.shape[1] != NUM_PIXELS or x.shape[0] == 0:
    raise DataError(f"{described} holds an array of shape {list(x.shape)}, not [N, {NUM_PIXELS}] "
                    "with N ≥ 1 (one 28×28 image per row)")
  _check_values(x, described, binary)


def _check_values(x, described, binary):
  """Refuses values outside [0, 1] (NaN and ±inf included), and non-binary ones if `binary`."""
  if x.dtype == bool:
    return
  bad = ~((x >= 0) & (x <= 1))
  if bad.any():
    raise DataError(f"{described} has values outside [0, 1] such as {x[bad][0].item()}; "
                    "expected 0/1 pixels, or grey levels in [0, 1] with a binarization")
  if binary:
    bad = (x != 0) & (x != 1)
    if bad.any():
      raise DataError(f"{described} has non-binary values such as {x[bad][0].item()}; "
                      "expected only 0 and 1, or pass --binarization=static or dynamic to "
                      "binarize grey levels")


# Grayscale MNIST


def _load_dynamic_mnist(folder, files):
  contents = files.read(folder, [MNIST_TRAIN_NAME, MNIST_TEST_NAME])
  train_and_valid, test = (
      _parse_idx_images(contents[name], os.path.join(folder, name))
      for name in (MNIST_TRAIN_NAME, MNIST_TEST_NAME))
  num_valid = DYNAMIC_MNIST_NUM_VALID
  if len(train_and_valid) <= num_valid:
    raise DataError(f"{os.path.join(folder, MNIST_TRAIN_NAME)} has {len(train_and_valid)} "
                    f"images; it needs more than {num_valid}, the last {num_valid} of which "
                    "are the validation set")
  return _Splits(train=train_and_valid[:-num_valid], valid=train_and_valid[-num_valid:],
                 test=test, image_shape=IMAGE_SHAPE, described=folder)


def _parse_idx_images(content, path):
  """Grey levels float32 [N, 784] in [0, 1] (byte / 255) from a gzipped IDX file of 28×28 uint8
  images: big-endian int32 magic 2051, N, 28, 28, then the pixels row-major."""
  try:
    raw = gzip.decompress(content)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path} is not a readable gzip file, truncated or corrupt "
                    f"({_one_line(e)}); replace it with the published file") from None
  header = np.frombuffer(raw[:16], ">i4") if len(raw) >= 16 else np.zeros(0)
  if (len(header) != 4 or header[0] != 2051 or tuple(header[2:]) != IMAGE_SHAPE
      or len(raw) != 16 + int(header[1]) * NUM_PIXELS):
    raise DataError(f"{path} is not an IDX file of 28×28 images (magic 2051, then N, 28, 28 and "
                    "N·784 bytes); replace it with the published file")
  return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, NUM_PIXELS) / np.float32(255)


# A user's .npz file


_NPZ_FORMAT = ("a .npz must hold arrays train, test and optionally valid, each [N, D] or "
               "[N, H, W] of 0/1 or grey levels in [0, 1] (np.savez)")


def _check_levels(x, described, likelihood):
  """Refuses NaN/±inf, and for the categorical likelihood values that are not integers ≥ 0."""
  bad = ~np.isfinite(x)
  if likelihood == "categorical":
    bad |= (x < 0) | (x != np.round(x))
  if bad.any():
    expected = ("integer levels 0, 1, …" if likelihood == "categorical"
                else "finite real values")
    raise DataError(f"{described} has values such as {x[bad][0].item()}; the {likelihood} "
                    f"likelihood expects {expected}")


def _load_npz(path, likelihood="bernoulli"):
  try:
    if not stat.S_ISREG(os.stat(path).st_mode):
      raise DataError(f"dataset {path} is not a regular file (a folder, pipe or device); give "
                      f"the path of a .npz file")
    with open(path, "rb") as f:
      magic = f.read(6)
  except FileNotFoundError:
    raise DataError(f"dataset file {path} does not exist; give the path of an existing .npz "
                    "file or one of the published data sets") from None
  except OSError as e:
    raise DataError(f"cannot read {path}: {e.strerror}; {_NPZ_FORMAT}") from None
  # np.load takes whatever is neither a zip archive nor a .npy array for a pickle.
  if magic.startswith(b"\x93NUMPY"):
    raise DataError(f"{path} holds a single array (np.save), not named arrays; {_NPZ_FORMAT}")
  if magic[:1] == b"\x80":
    raise DataError(_unreadable_npz(path, "pickle"))
  if not magic.startswith(b"PK"):
    raise DataError(f"{path} is not a readable .npz (not a zip archive); {_NPZ_FORMAT}")
  try:
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise DataError(f"{path} is not a readable .npz, truncated or corrupt ({_one_line(e)}); "
                    f"{_NPZ_FORMAT}") from None
  with npz:
    missing = [key for key in ("train", "test") if key not in npz.files]
    if missing:
      raise DataError(f"{path} lacks {' and '.join(missing)} (it has "
                      f"{', '.join(npz.files) or 'no arrays'}); {_NPZ_FORMAT}")
    _check_declared_arrays(path, npz)
    arrays = {}
    for key in (*SPLITS, *CONDITION_KEYS):
      if key in npz.files:
        try:
          arrays[key] = npz[key]
        except ValueError as e:
          raise DataError(_unreadable_npz(f"{path} (array {key!r})", e)) from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
          raise DataError(f"{path}: array {key!r} is unreadable, truncated or corrupt "
                          f"({_one_line(e)}); {_NPZ_FORMAT}") from None
  condition_arrays = {key[:-len("_cond")]: arrays.pop(key)
                      for key in CONDITION_KEYS if key in arrays}
  shape = None
  for key, x in arrays.items():
    described = f"{path}: {key}"
    # By kind: numpy counts timedelta64 among the integers.
    if x.dtype.kind not in _NPZ_KINDS:
      raise DataError(f"{described} has dtype {x.dtype}; {_NPZ_FORMAT}")
    if x.ndim not in (2, 3) or 0 in x.shape[1:]:
      raise DataError(f"{described} has shape {list(x.shape)}; {_NPZ_FORMAT}")
    if x.shape[0] == 0:
      raise DataError(f"{described} is empty (shape {list(x.shape)}); every split needs at "
                      "least one row")
    if shape is None:
      shape = x.shape[1:]
    elif x.shape[1:] != shape:
      raise DataError(f"{described} has rows of shape {list(x.shape[1:])}, but train has "
                      f"{list(shape)}; every split must have the same D (or H, W)")
    if likelihood == "bernoulli":
      _check_values(x, described, binary=False)
    else:
      _check_levels(x, described, likelihood)
  conditions = _checked_conditions(path, condition_arrays, arrays)
  flat = {key: x.reshape(len(x), -1) for key, x in arrays.items()}
  if "valid" not in flat:
    train = flat["train"]
    if len(train) < 2:
      raise DataError(f"{path}: train has {len(train)} row and there is no valid; give valid, "
                      "or at least 2 training rows (the last tenth validates)")
    num_valid = max(1, len(train) // 10)
    flat["train"], flat["valid"] = train[:-num_valid], train[-num_valid:]
    if conditions is not None:
      # The validation conditions are carved out of train_cond exactly as the rows.
      train_cond = conditions["train"]
      conditions["train"], conditions["valid"] = train_cond[:-num_valid], train_cond[-num_valid:]
  return _Splits(**flat, image_shape=tuple(shape) if len(shape) == 2 else None,
                 described=path, conditions=conditions)


# The condition arrays of a user's file, in the order of SPLITS.
CONDITION_KEYS = tuple(f"{split}_cond" for split in SPLITS)

_COND_FORMAT = ("conditions are train_cond, test_cond and, with valid, valid_cond, each real "
                "[N, C] or integer labels [N] (one-hot encoded), one row per row of its split")


def _checked_conditions(path, conditions, arrays):
  """{split: float32 [N, C]} from the file's condition arrays (`conditions`, by split) for the
  data `arrays` (by split, as stored), or None for a file without conditions.

  Integer labels [N] become one-hot rows [N, K], K the largest label over all splits + 1.
  """
  if not conditions:
    return None
  if "valid" in conditions and "valid" not in arrays:
    raise DataError(f"{path} has valid_cond but no valid; without valid the last tenth of train "
                    "validates and its conditions are the last rows of train_cond, so drop "
                    "valid_cond or give valid too")
  missing = [f"{split}_cond" for split in SPLITS if split in arrays and split not in conditions]
  if missing:
    given = ", ".join(f"{split}_cond" for split in conditions)
    raise DataError(f"{path} has {given} but lacks {' and '.join(missing)}; conditions are given "
                    f"for every split or none: {_COND_FORMAT}")
  # Booleans as 0/1 (NumPy rounds no booleans).
  conditions = {split: c.astype(np.uint8) if c.dtype == bool else c
                for split, c in conditions.items()}
  for split, c in conditions.items():
    described = f"{path}: {split}_cond"
    if c.dtype.kind not in _NPZ_KINDS:
      raise DataError(f"{described} has dtype {c.dtype}; {_COND_FORMAT}")
    if c.ndim not in (1, 2) or (c.ndim == 2 and c.shape[1] == 0):
      raise DataError(f"{described} has shape {list(c.shape)}; {_COND_FORMAT}")
    if len(c) != len(arrays[split]):
      raise DataError(f"{described} has {len(c)} rows, but {split} has {len(arrays[split])}; "
                      "give one condition row per data row")
    bad = ~np.isfinite(c)
    if c.ndim == 1:
      bad |= (c < 0) | (c != np.round(c))
    if bad.any():
      expected = ("class labels 0, 1, … (a 1-D condition is one label per row; give real "
                  "conditions as [N, C])" if c.ndim == 1 else "finite real values")
      raise DataError(f"{described} has values such as {c[bad][0].item()}; expected {expected}")
  if len({c.ndim for c in conditions.values()}) > 1:
    raise DataError(f"{path}: some conditions are labels [N] and some rows [N, C]; give every "
                    "split's conditions in the same form")
  if next(iter(conditions.values())).ndim == 1:
    num_classes = int(max(c.max() for c in conditions.values())) + 1
    needed = sum(len(c) for c in conditions.values()) * num_classes * 4
    available = runs.available_memory()
    if needed > available:
      raise DataError(f"{path}: labels up to {num_classes - 1} make one-hot conditions of "
                      f"{needed / 2**30:.1f} GiB, but {available / 2**30:.1f} GiB of memory is "
                      "available; number the classes 0 … K−1")
    one_hot = {}
    for split, labels in conditions.items():
      one_hot[split] = np.zeros([len(labels), num_classes], np.float32)
      one_hot[split][np.arange(len(labels)), labels.astype(np.int64)] = 1
    return one_hot
  widths = {split: c.shape[1] for split, c in conditions.items()}
  if len(set(widths.values())) > 1:
    raise DataError(f"{path}: the conditions have different widths C ("
                    f"{', '.join(f'{split}_cond {c}' for split, c in widths.items())}); every "
                    "split's conditions need the same C")
  rows = {split: c.astype(np.float32) for split, c in conditions.items()}
  for split, c in rows.items():
    if not np.isfinite(c).all():
      raise DataError(f"{path}: {split}_cond has values too large for float32 (such as "
                      f"{conditions[split][~np.isfinite(c)][0].item()}); scale the conditions")
  return rows


# Boolean, signed and unsigned integer, floating point.
_NPZ_KINDS = "biuf"


def _check_declared_arrays(path, npz):
  """Refuses, from the headers alone, splits of another dtype or more bytes than memory holds.

  Each member's .npy header declares its dtype and shape; nothing is decompressed before they
  pass (a small compressed file may declare terabytes).
  """
  total = 0
  for key in (*SPLITS, *CONDITION_KEYS):
    if key not in npz.files:
      continue
    try:
      with npz.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(member)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise DataError(f"{path}: array {key!r} has no readable .npy header ({_one_line(e)}); "
                      f"{_NPZ_FORMAT}") from None
    if dtype.hasobject:
      raise DataError(_unreadable_npz(f"{path} (array {key!r})", "pickle"))
    if dtype.kind not in _NPZ_KINDS:
      raise DataError(f"{path}: {key} has dtype {dtype}; "
                      f"{_COND_FORMAT if key in CONDITION_KEYS else _NPZ_FORMAT}")
    # The array as stored and as float32 (every split ends as float32 [N, D]).
    total += math.prod(shape) * (dtype.itemsize + 4)
  available = runs.available_memory()
  if total > available:
    raise DataError(f"{path} declares arrays of {total / 2**30:.1f} GiB once loaded, but "
                    f"{available / 2**30:.1f} GiB of memory is available; give smaller data")


def _unreadable_npz(described, error):
  if "pickle" in str(error):
    return (f"{described} holds pickled Python objects (an object or ragged array), which are "
            f"never loaded; save plain numeric arrays: {_NPZ_FORMAT}")
  return f"{described} is not a readable .npz ({_one_line(error)}); {_NPZ_FORMAT}"


# tf.data


def train_dataset(dataset: Dataset, batch_size: int, seed: int,
                  start_step: int = 0) -> tf.data.Dataset:
  """Endless batches of training images, float32 [batch_size, D] with values in {0, 1} (the
  data's own values with a Gaussian or categorical likelihood); for a conditional `dataset`,
  dicts {"x": images, "condition": their conditions [batch_size, C]}.

  Each epoch visits the training set in a fresh permutation and batches run on across epoch
  boundaries, so every batch is full. Grey training images (`dynamic_binarization`) are
  binarized afresh in every batch, pixel ~ Bernoulli(grey level). Both are stateless functions
  of (`seed`, epoch) and (`seed`, batch number): the same seed gives the same batches whatever
  TensorFlow's global seed, and the stream from `start_step` is the tail of the stream from 0
  (batch t holds the images at positions t·B … (t + 1)·B − 1 of the concatenated
  permutations), so a resumed run sees the batches it would have seen without the interruption.

  Args:
    dataset: a `Dataset`.
    batch_size: images per batch, ≥ 1.
    seed: a non-negative int below 2**63.
    start_step: the number of the first batch, ≥ 0.

  Returns:
    An infinite `tf.data.Dataset` of float32 [batch_size, D] tensors, or of dicts
    {"x": [batch_size, D], "condition": [batch_size, C]} (float32) when `dataset` has
    conditions. The images, their order and their binarization do not depend on the conditions.

  Raises:
    ValueError: `batch_size`, `seed` or `start_step` out of range.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
  if not 0 <= seed < 2**63:
    raise ValueError(f"seed must be an int in [0, 2**63), got {seed}")
  if start_step < 0:
    raise ValueError(f"start_step must be ≥ 0, got {start_step}")
  # Binary images (and levels below 256) travel as uint8, a quarter of the memory of float32
  # (the pipeline holds a copy of the whole training set); real values as they are.
  small_levels = np.array_equal(dataset.train, dataset.train.astype(np.uint8))
  images = tf.constant(dataset.train.astype(np.uint8) if small_levels and not
                       dataset.dynamic_binarization else dataset.train)
  conditions = (None if dataset.train_cond is None
                else tf.constant(np.asarray(dataset.train_cond, np.float32)))
  num_images = dataset.train.shape[0]
  # Separate streams for the order and the binarization, so neither shifts the other.
  order_key, binarize_key = (tf.constant([seed, stream], tf.int64) for stream in (0, 1))

  def epoch_order(epoch):
    permutation = tf.random.experimental.stateless_shuffle(
        tf.range(num_images, dtype=tf.int64),
        seed=tf.random.experimental.stateless_fold_in(order_key, epoch))
    return tf.data.Dataset.from_tensor_slices(permutation)

  def images_of(step, indices):
    x = tf.cast(tf.gather(images, indices), tf.float32)
    if dataset.dynamic_binarization:
      uniform = tf.random.stateless_uniform(
          tf.shape(x), seed=tf.random.experimental.stateless_fold_in(binarize_key, step))
      x = tf.cast(uniform < x, tf.float32)
    if conditions is None:
      return x
    return {"x": x, "condition": tf.gather(conditions, indices)}

  first_epoch, offset = divmod(start_step * batch_size, num_images)
  indices = (tf.data.Dataset.counter(first_epoch).flat_map(epoch_order).skip(offset)
             .batch(batch_size, drop_remainder=True))
  return (tf.data.Dataset.zip(tf.data.Dataset.counter(start_step), indices)
          .map(images_of, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))


def eval_dataset(images: np.ndarray, batch_size: int,
                 conditions: np.ndarray | None = None) -> tf.data.Dataset:
  """The images of one fixed split in order, float32 batches of `batch_size` (the last may be
  smaller unless `batch_size` divides the split, as `config` ensures for the published ones).

  Args:
    images: [N, D] images of one split (e.g. `Dataset.valid`).
    batch_size: images per batch, ≥ 1.
    conditions: [N, C] conditions of the images (e.g. `Dataset.valid_cond`), or None.

  Returns:
    A finite `tf.data.Dataset` of float32 [≤ batch_size, D] tensors, ⌈N / batch_size⌉ of them;
    with `conditions`, of dicts {"x": images, "condition": their conditions}.

  Raises:
    ValueError: `batch_size` < 1, or `conditions` without one row per image.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
  elements = np.asarray(images, np.float32)
  if conditions is not None:
    conditions = np.asarray(conditions, np.float32)
    if conditions.ndim != 2 or len(conditions) != len(elements):
      raise ValueError(f"conditions must be [N, C] with one row per image ({len(elements)}), "
                       f"got shape {list(conditions.shape)}")
    elements = {"x": elements, "condition": conditions}
  return (tf.data.Dataset.from_tensor_slices(elements)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
