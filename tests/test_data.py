"""`dvae.data`: published data loads exactly, every bad file is refused in one line, and the
pipelines are reproducible. Nothing here touches the network (DVAE_OFFLINE=1, or file:// URLs)."""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import subprocess
import threading
import urllib.parse
import zipfile
from unittest import mock

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from absl.testing import parameterized

from dvae import data

# A folder holding the published grayscale MNIST files (train-images-idx3-ubyte.gz,
# t10k-images-idx3-ubyte.gz), for the one test that wants the real data; the default suite
# needs nothing outside the repository.
REAL_MNIST_ENV = "DVAE_TEST_MNIST_DIR"
SPLITS = ("train", "valid", "test")
AMAT = {split: f"binarized_mnist_{split}.amat" for split in SPLITS}
# Facts of the published binarized MNIST (the data set's provenance notes), stated independently.
PUBLISHED_ONES = {"train": 5_118_041, "valid": 1_028_036, "test": 1_038_896}
PUBLISHED_SPLIT_SHA256 = {
    "train": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    "valid": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    "test": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
}


def amat_text(x):
  """The published .amat format: 0/1 tokens separated by single spaces, a newline per row."""
  return "".join(" ".join(str(int(v)) for v in row) + "\n" for row in x).encode()


def sha256(content):
  return "sha256:" + hashlib.sha256(content).hexdigest()


class DataTestCase(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    environment = mock.patch.dict(os.environ, {"DVAE_OFFLINE": "1"})
    environment.start()
    self.addCleanup(environment.stop)
    os.environ.pop("DVAE_DATA_DIR", None)
    self.rng = np.random.default_rng(0)

  def folder(self, name):
    path = os.path.join(self.get_temp_dir(), name)
    os.makedirs(path, exist_ok=True)
    return path

  def write(self, path, content):
    with open(path, "wb") as f:
      f.write(content)
    return path

  def synthetic_mnist(self, folder, sizes=(7, 3, 2)):
    """Random binary splits written as .amat files, and a checksum table for exactly them."""
    splits = {split: (self.rng.random([n, 784]) < 0.3).astype(np.uint8)
              for split, n in zip(SPLITS, sizes)}
    checksums = {}
    for split, x in splits.items():
      content = amat_text(x)
      self.write(os.path.join(folder, AMAT[split]), content)
      checksums[AMAT[split]] = sha256(content)
      checksums[f"binarized_mnist/{split}"] = sha256(x.tobytes())
    return splits, checksums

  def assertDataError(self, expected, *args, **kwargs):
    with self.assertRaises(data.DataError) as raised:
      data.load_dataset(*args, **kwargs)
    message = str(raised.exception)
    self.assertLen(message.splitlines(), 1, message)
    for fragment in expected:
      self.assertIn(fragment, message)
    return message


class EmbeddedMnistTest(DataTestCase):

  def test_embedded_mnist_is_the_published_binarization(self):
    dataset = data.load_dataset("binarized_mnist")
    self.assertFalse(dataset.dynamic_binarization)
    for split, n in zip(SPLITS, (50_000, 10_000, 10_000)):
      x = getattr(dataset, split)
      self.assertEqual((x.shape, x.dtype), ((n, 784), np.float32))
      self.assertEqual(int(x.sum(dtype=np.int64)), PUBLISHED_ONES[split])
      self.assertEqual(hashlib.sha256(x.astype(np.uint8).tobytes()).hexdigest(),
                       PUBLISHED_SPLIT_SHA256[split])
    self.assertAllClose(dataset.train_mean, dataset.train.astype(np.float64).mean(axis=0),
                        atol=1e-6)

  def test_data_dir_env_var_is_a_root_with_a_folder_per_dataset(self):
    root = self.get_temp_dir()
    splits, checksums = self.synthetic_mnist(self.folder("binarized_mnist"))
    with mock.patch.dict(os.environ, {"DVAE_DATA_DIR": root}):
      dataset = data.load_dataset("binarized_mnist", checksums=checksums)
    self.assertAllEqual(dataset.valid, splits["valid"])

  def test_omniglot_without_a_folder_is_looked_for_in_the_home_cache(self):
    with mock.patch.dict(os.environ, {"HOME": self.get_temp_dir()}):
      self.assertDataError(
          [os.path.join(self.get_temp_dir(), ".dvae", "datasets", "omniglot"), "chardata.mat",
           "raw.githubusercontent.com/yburda/iwae"], "omniglot")

  def test_unknown_dataset_is_a_value_error_naming_the_allowed(self):
    with self.assertRaisesRegex(ValueError, "binarized_mnist, omniglot, dynamic_mnist"):
      data.load_dataset("cifar")


class AmatAndCacheTest(DataTestCase):

  def test_amat_files_round_trip_through_the_npz_cache(self):
    folder = self.folder("mnist")
    splits, checksums = self.synthetic_mnist(folder)
    first = data.load_dataset("binarized_mnist", folder, checksums=checksums)
    with np.load(os.path.join(folder, "binarized_mnist.npz"), allow_pickle=False) as cache:
      self.assertCountEqual(cache.files, ["train", "valid", "test", "train_shape",
                                          "valid_shape", "test_shape"])
      for split, x in splits.items():
        self.assertEqual(cache[split].dtype, np.uint8)
        self.assertAllEqual(np.unpackbits(cache[split], axis=1), x)
        self.assertAllEqual(cache[f"{split}_shape"], [len(x), 784])
    self.assertEqual(sorted(os.listdir(folder)), sorted([*AMAT.values(), "binarized_mnist.npz"]),
                     "no temporary file is left behind")
    for name in AMAT.values():
      os.remove(os.path.join(folder, name))
    second = data.load_dataset("binarized_mnist", folder, checksums=checksums)
    for split, x in splits.items():
      self.assertAllEqual(getattr(first, split), x)
      self.assertAllEqual(getattr(second, split), x)
      self.assertEqual(getattr(second, split).dtype, np.float32)
    self.assertAllClose(second.train_mean, splits["train"].mean(axis=0))

  def test_missing_files_offline_name_each_file_and_the_folder(self):
    folder = self.folder("empty")
    self.assertDataError([*AMAT.values(), folder, "DVAE_OFFLINE", "binarized_mnist.npz",
                          "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"],
                         "binarized_mnist", folder)
    self.assertDataError(["chardata.mat", folder, "raw.githubusercontent.com/yburda/iwae"],
                         "omniglot", folder)

  def test_only_the_missing_amat_file_is_named(self):
    folder = self.folder("partial")
    _, checksums = self.synthetic_mnist(folder)
    os.remove(os.path.join(folder, AMAT["test"]))
    message = self.assertDataError([AMAT["test"]], "binarized_mnist", folder, checksums=checksums)
    self.assertNotIn(AMAT["train"], message)

  def test_wrong_sha256_is_refused_naming_file_and_both_digests(self):
    folder = self.folder("tampered")
    _, checksums = self.synthetic_mnist(folder)
    expected = checksums[AMAT["valid"]].split(":")[1]
    wrong = dict(checksums, **{AMAT["valid"]: "sha256:" + "0" * 64})
    self.assertDataError([os.path.join(folder, AMAT["valid"]), "sha256", expected, "0" * 64,
                          "--verify_data=false"], "binarized_mnist", folder, checksums=wrong)
    self.assertFalse(os.path.exists(os.path.join(folder, "binarized_mnist.npz")))

  def test_published_hashes_refuse_other_amat_files_unless_verify_is_off(self):
    folder = self.folder("other")
    splits, _ = self.synthetic_mnist(folder)
    published_train = "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"
    self.assertDataError(["sha256", published_train], "binarized_mnist", folder)
    with self.assertLogs("dvae.data", "WARNING") as logs:
      dataset = data.load_dataset("binarized_mnist", folder, verify=False)
    self.assertIn("not comparable", logs.output[0])
    self.assertAllEqual(dataset.test, splits["test"])
    # The cache of unpublished data does not pass as published data later.
    os.remove(os.path.join(folder, AMAT["train"]))
    self.assertDataError(["binarized_mnist.npz", "sha256", PUBLISHED_SPLIT_SHA256["train"]],
                         "binarized_mnist", folder)

  def test_truncated_npz_is_refused_naming_it(self):
    folder = self.folder("truncated")
    with open(data.EMBEDDED_MNIST, "rb") as f:
      head = f.read(100_000)
    path = self.write(os.path.join(folder, "binarized_mnist.npz"), head)
    self.assertDataError([path, "truncated or corrupt"], "binarized_mnist", folder)

  def test_corrupt_npz_member_is_refused(self):
    folder = self.folder("corrupt")
    with open(data.EMBEDDED_MNIST, "rb") as f:
      content = bytearray(f.read())
    content[len(content) // 2: len(content) // 2 + 64] = bytes(64)
    self.write(os.path.join(folder, "binarized_mnist.npz"), bytes(content))
    self.assertDataError(["binarized_mnist.npz", "truncated or corrupt"], "binarized_mnist",
                         folder)

  @parameterized.named_parameters(
      ("wrong_width", dict(train_shape=[10, 400]), ["train_shape is [10, 400]", "784"]),
      ("rows_disagree", dict(valid_shape=[11, 784]), ["valid is uint8 [10, 98]", "[11, 98]"]),
      ("wrong_dtype", dict(test=np.zeros([10, 98], np.int32)), ["test is int32", "uint8"]),
      ("missing_key", dict(test=None), ["lacks test", "np.packbits"]),
  )
  def test_misshaped_npz_is_refused(self, changes, expected):
    folder = self.folder("misshaped")
    arrays = {}
    for split in SPLITS:
      arrays[split] = np.zeros([10, 98], np.uint8)
      arrays[f"{split}_shape"] = np.array([10, 784])
    arrays.update(changes)
    np.savez(os.path.join(folder, "binarized_mnist.npz"),
             **{key: value for key, value in arrays.items() if value is not None})
    self.assertDataError(expected, "binarized_mnist", folder)

  @parameterized.named_parameters(
      ("short_rows", lambda x: amat_text(x[:, :783]), ["[7, 783]", "784"]),
      ("ragged_rows", lambda x: amat_text(x) + b"0 1\n", ["not a text matrix", "784"]),
      ("non_binary", lambda x: amat_text(x).replace(b"1", b"0.5", 1), ["non-binary", "0.5"]),
      ("not_numbers", lambda x: amat_text(x).replace(b"0", b"a", 1), ["not a text matrix"]),
      ("empty", lambda x: b"", ["[0, 1]", "784"]),
  )
  def test_malformed_amat_with_matching_hash_is_refused(self, corrupt, expected):
    folder = self.folder("malformed")
    splits, checksums = self.synthetic_mnist(folder)
    content = self.write(os.path.join(folder, AMAT["train"]), corrupt(splits["train"]))
    with open(content, "rb") as f:
      checksums[AMAT["train"]] = sha256(f.read())
    self.assertDataError([AMAT["train"], *expected], "binarized_mnist", folder,
                         checksums=checksums)


class DownloadTest(DataTestCase):
  """Downloads from file:// URLs: the real code path, without the network."""

  def setUp(self):
    super().setUp()
    os.environ["DVAE_OFFLINE"] = "0"
    self.source = self.folder("published")
    self.splits, self.checksums = self.synthetic_mnist(self.source)
    self.urls = {name: "file://" + urllib.parse.quote(os.path.join(self.source, name))
                 for name in AMAT.values()}

  def test_missing_files_are_downloaded_verified_and_used(self):
    folder = os.path.join(self.get_temp_dir(), "new", "mnist")
    dataset = data.load_dataset("binarized_mnist", folder, checksums=self.checksums,
                                urls=self.urls)
    self.assertAllEqual(dataset.train, self.splits["train"])
    for name in AMAT.values():
      with open(os.path.join(folder, name), "rb") as f, \
           open(os.path.join(self.source, name), "rb") as g:
        self.assertEqual(f.read(), g.read())

  def test_download_with_wrong_hash_is_refused_and_not_kept(self):
    folder = self.folder("download_mismatch")
    wrong = dict(self.checksums, **{AMAT["train"]: "sha256:" + "f" * 64})
    self.assertDataError([AMAT["train"], "not kept", folder], "binarized_mnist", folder,
                         checksums=wrong, urls=self.urls)
    self.assertNotIn(AMAT["train"], os.listdir(folder))

  def test_failed_download_names_the_file_url_and_folder(self):
    folder = self.folder("download_failure")
    urls = dict(self.urls, **{AMAT["valid"]: "file:///nonexistent/binarized_mnist_valid.amat"})
    self.assertDataError(["could not download", AMAT["valid"], "file:///nonexistent", folder],
                         "binarized_mnist", folder, checksums=self.checksums, urls=urls)


  def test_failed_download_leaves_no_empty_data_folder(self):
    folder = os.path.join(self.get_temp_dir(), "never_made", "mnist")
    urls = {name: "file:///nonexistent/" + name for name in AMAT.values()}
    self.assertDataError(["could not download"], "binarized_mnist", folder,
                         checksums=self.checksums, urls=urls)
    self.assertFalse(os.path.exists(folder))

  def test_a_download_larger_than_the_limit_is_refused_before_its_hash(self):
    folder = os.path.join(self.get_temp_dir(), "too_large")
    with mock.patch.object(data, "MAX_DOWNLOAD_BYTES", 1000):
      self.assertDataError(["larger than 1,000 bytes", "not kept"], "binarized_mnist", folder,
                           checksums=self.checksums, urls=self.urls)
    self.assertFalse(os.path.exists(folder))


class OmniglotTest(DataTestCase):
  NUM_TRAIN, NUM_VALID, NUM_TEST = 20, 1345, 30

  def images(self, n, offset):
    """Row-major grey images; image i has a full-width bar in row (i + offset) % 28 (so its
    orientation is unmistakable) on a background of grey level 0.3 in its left half."""
    x = np.zeros([n, 28, 28])
    x[:, :, :14] = 0.3
    x[np.arange(n), (np.arange(n) + offset) % 28, :] = 1.0
    return x.reshape(n, 784)

  def write_chardata(self, folder, **variables):
    """chardata.mat in Burda's layout: [784, N], each column an image flattened column-major."""
    train = self.images(self.NUM_TRAIN + self.NUM_VALID, 0)
    test = self.images(self.NUM_TEST, 5)
    columns = {"data": np.stack([x.reshape(28, 28).flatten(order="F") for x in train], axis=1),
               "testdata": np.stack([x.reshape(28, 28).flatten(order="F") for x in test], axis=1)}
    columns.update(variables)
    path = os.path.join(folder, "chardata.mat")
    scipy.io.savemat(path, {key: value for key, value in columns.items() if value is not None})
    with open(path, "rb") as f:
      content = f.read()
    blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    return train, test, {"chardata.mat": "git-blob-sha1:" + blob}

  def test_chardata_columns_become_upright_images_split_with_last_1345_for_validation(self):
    folder = self.folder("omniglot")
    train, test, checksums = self.write_chardata(folder)
    dataset = data.load_dataset("omniglot", folder, checksums=checksums)
    self.assertTrue(dataset.dynamic_binarization)
    self.assertEqual(dataset.train.dtype, np.float32)
    self.assertAllClose(dataset.train, train[:self.NUM_TRAIN])
    self.assertEqual(dataset.valid.shape, (self.NUM_VALID, 784))
    self.assertEqual(dataset.test.shape, (self.NUM_TEST, 784))
    for i, image in enumerate(dataset.valid.reshape(-1, 28, 28)):
      # Validation image i is training-file image NUM_TRAIN + i: its bar row is all ones.
      self.assertAllEqual(image[(self.NUM_TRAIN + i) % 28], np.ones(28))
    self.assertAllEqual(dataset.test.reshape(-1, 28, 28)[3, 8], np.ones(28))
    self.assertAllClose(dataset.train_mean, train[:self.NUM_TRAIN].mean(axis=0))

  def test_validation_and_test_are_binarized_once_with_seed_one(self):
    folder = self.folder("omniglot_seed")
    train, test, checksums = self.write_chardata(folder)
    first = data.load_dataset("omniglot", folder, checksums=checksums)
    second = data.load_dataset("omniglot", folder, checksums=checksums)
    self.assertAllEqual(first.valid, second.valid)
    self.assertAllEqual(first.test, second.test)
    # The documented recipe: one numpy Generator seeded 1, validation drawn before test.
    rng = np.random.default_rng(1)
    self.assertAllEqual(first.valid, rng.random([self.NUM_VALID, 784]) < train[self.NUM_TRAIN:])
    self.assertAllEqual(first.test, rng.random([self.NUM_TEST, 784]) < test)
    # Grey 0.3 pixels become ones 30% of the time (about 5e5 pixels: binomial sd ≈ 6.4e-4).
    grey = train[self.NUM_TRAIN:] == 0.3
    self.assertNear(first.valid[grey].mean(), 0.3, 0.01)
    self.assertFalse(first.valid[train[self.NUM_TRAIN:] == 0].any())

  def test_published_hash_refuses_other_chardata_unless_verify_is_off(self):
    folder = self.folder("omniglot_proxy")
    train, _, _ = self.write_chardata(folder)
    self.assertDataError(["chardata.mat", "git-blob-sha1",
                          "016a3536ffe5e1d38e42563a18d7a78bfaf643ec", "--verify_data=false"],
                         "omniglot", folder)
    with self.assertLogs("dvae.data", "WARNING") as logs:
      dataset = data.load_dataset("omniglot", folder, verify=False)
    self.assertIn("not comparable", logs.output[0])
    self.assertAllClose(dataset.train, train[:self.NUM_TRAIN])

  def test_chardata_is_verified_by_the_id_git_hash_object_prints(self):
    folder = self.folder("omniglot_git")
    train, _, _ = self.write_chardata(folder)
    try:
      printed = subprocess.run(["git", "hash-object", "--no-filters",
                                os.path.join(folder, "chardata.mat")],
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      self.skipTest("git is not available")
    dataset = data.load_dataset("omniglot", folder,
                                checksums={"chardata.mat": "git-blob-sha1:" + printed})
    self.assertAllClose(dataset.train, train[:self.NUM_TRAIN])

  @parameterized.named_parameters(
      ("grey_above_one", dict(testdata=np.full([784, 3], 1.5)), ["'testdata'", "outside [0, 1]"]),
      ("nan", dict(data=np.full([784, 1400], np.nan)), ["'data'", "outside [0, 1]"]),
      ("wrong_rows", dict(testdata=np.zeros([783, 3])), ["'testdata'", "[783, 3]", "784"]),
      ("missing_variable", dict(testdata=None), ["lacks the variable 'testdata'"]),
      ("too_few_for_validation", dict(data=np.zeros([784, 1345])), ["1345 images", "more than"]),
  )
  def test_malformed_chardata_is_refused(self, variables, expected):
    folder = self.folder("omniglot_bad")
    _, _, checksums = self.write_chardata(folder, **variables)
    self.assertDataError(["chardata.mat", *expected], "omniglot", folder, checksums=checksums)

  def test_truncated_chardata_is_refused(self):
    folder = self.folder("omniglot_truncated")
    self.write_chardata(folder)
    path = os.path.join(folder, "chardata.mat")
    with open(path, "rb") as f:
      head = f.read(5000)
    self.write(path, head)
    blob = hashlib.sha1(b"blob %d\0" % len(head) + head).hexdigest()
    self.assertDataError([path, "truncated or corrupt"], "omniglot", folder,
                         checksums={"chardata.mat": "git-blob-sha1:" + blob})


def idx_gz(images):
  """uint8 [N, 28, 28] images as a gzipped IDX file (big-endian magic 2051, N, 28, 28)."""
  header = np.array([2051, len(images), 28, 28], ">i4").tobytes()
  return gzip.compress(header + np.asarray(images, np.uint8).tobytes())


class LocalServer:
  """An HTTP server on 127.0.0.1 serving one folder, counting requests; it stops itself after
  `lifetime` seconds at the latest."""

  def __init__(self, folder, lifetime=120):
    self.requests = []
    server = self

    class Handler(http.server.SimpleHTTPRequestHandler):
      def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=folder, **kwargs)

      def do_GET(self):
        server.requests.append(self.path)
        super().do_GET()

      def log_message(self, *args):
        del args  # Quiet: the tests check what was served, not the log.

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                   daemon=True)
    self.thread.start()
    self.timer = threading.Timer(lifetime, self.httpd.shutdown)
    self.timer.start()

  def url(self, name):
    return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

  def stop(self):
    self.timer.cancel()
    self.httpd.shutdown()
    self.httpd.server_close()
    self.thread.join(timeout=10)


class DownloadCacheTest(DataTestCase):
  """Downloads over HTTP from a local server into the default cache folder, verified, then
  reused; offline, one line naming the folder and the URL."""

  def setUp(self):
    super().setUp()
    os.environ["DVAE_OFFLINE"] = "0"
    self.home = self.folder("home")
    environment = mock.patch.dict(os.environ, {"HOME": self.home})
    environment.start()
    self.addCleanup(environment.stop)
    self.published = self.folder("published")
    self.server = LocalServer(self.published)
    self.addCleanup(self.server.stop)
    self.names = (data.MNIST_TRAIN_NAME, data.MNIST_TEST_NAME)
    self.urls = {name: self.server.url(name) for name in self.names}

  def publish_synthetic_mnist(self, train, test):
    """Writes the two IDX files and returns a checksum table for exactly them."""
    checksums = {}
    for name, images in zip(self.names, (train, test)):
      content = idx_gz(images)
      self.write(os.path.join(self.published, name), content)
      checksums[name] = "gunzip-sha256:" + hashlib.sha256(gzip.decompress(content)).hexdigest()
    return checksums

  def test_downloads_once_into_the_home_cache_and_is_reused(self):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, [12, 28, 28], dtype=np.uint8)
    test = rng.integers(0, 256, [4, 28, 28], dtype=np.uint8)
    checksums = self.publish_synthetic_mnist(train, test)
    with mock.patch.object(data, "DYNAMIC_MNIST_NUM_VALID", 2):
      first = data.load_dataset("dynamic_mnist", checksums=checksums, urls=self.urls)
      cache = os.path.join(self.home, ".dvae", "datasets", "dynamic_mnist")
      self.assertCountEqual(os.listdir(cache), self.names)
      self.assertLen(self.server.requests, 2)
      self.assertAllClose(first.train, train[:10].reshape(10, 784) / 255)
      self.server.stop()
      second = data.load_dataset("dynamic_mnist", checksums=checksums, urls=self.urls)
    self.assertLen(self.server.requests, 2, "the cache is reused, nothing downloaded again")
    self.assertAllEqual(second.train, first.train)
    self.assertAllEqual(second.valid, first.valid)
    self.assertAllEqual(second.test, first.test)

  @pytest.mark.slow
  def test_real_grayscale_mnist_downloads_once_into_the_home_cache_and_is_reused(self):
    folder = os.environ.get(REAL_MNIST_ENV)
    if not folder:
      self.skipTest(f"set {REAL_MNIST_ENV} to a folder holding the published MNIST IDX files to "
                    "check the real download and its published hashes")
    for name in self.names:
      shutil.copy(os.path.join(folder, name), self.published)
    first = data.load_dataset("dynamic_mnist", urls=self.urls)
    cache = os.path.join(self.home, ".dvae", "datasets", "dynamic_mnist")
    self.assertCountEqual(os.listdir(cache), self.names)
    self.assertLen(self.server.requests, 2)
    self.assertTrue(first.dynamic_binarization)
    self.assertEqual(first.image_shape, (28, 28))
    for split, n in zip(SPLITS, (50_000, 10_000, 10_000)):
      self.assertEqual(getattr(first, split).shape, (n, 784))
    self.assertAllInSet(first.valid, [0.0, 1.0])
    self.assertAllInSet(first.test, [0.0, 1.0])
    # Published facts of MNIST: 60,000 training images of mean 0.1307;
    # test mean 0.1325. Binarizing 7.84e6 pixels moves a mean by about 1e-4.
    self.assertEqual(first.train.max(), 1.0)
    self.assertNear(first.test.mean(), 0.1325, 1e-3)
    self.assertNear((first.train.sum(dtype=np.float64) + first.valid.sum(dtype=np.float64))
                    / (60_000 * 784), 0.1307, 1e-3)
    self.server.stop()
    second = data.load_dataset("dynamic_mnist", urls=self.urls)
    self.assertLen(self.server.requests, 2, "the cache is reused, nothing downloaded again")
    self.assertAllEqual(second.train, first.train)
    self.assertAllEqual(second.test, first.test)

  def test_split_is_first_images_train_last_validate_and_test_file_tests(self):
    levels = np.array([0, 30, 60, 90, 120, 255, 255, 255], np.uint8)
    train = levels[:, None, None] * np.ones([8, 28, 28], np.uint8)
    test = np.full([2, 28, 28], 255, np.uint8)
    test[1] = 0
    checksums = self.publish_synthetic_mnist(train, test)
    with mock.patch.object(data, "DYNAMIC_MNIST_NUM_VALID", 3):
      dataset = data.load_dataset("dynamic_mnist", checksums=checksums, urls=self.urls)
    self.assertAllClose(dataset.train, train[:5].reshape(5, 784) / 255)
    self.assertAllEqual(dataset.valid, np.ones([3, 784]), "images 5..7 are all 255")
    self.assertAllEqual(dataset.test, np.repeat([[1.0], [0.0]], 784, axis=1))

  def test_data_dir_env_var_replaces_the_home_cache(self):
    root = self.folder("root")
    checksums = self.publish_synthetic_mnist(np.zeros([12_000, 28, 28]), np.zeros([3, 28, 28]))
    with mock.patch.dict(os.environ, {"DVAE_DATA_DIR": root}):
      data.load_dataset("dynamic_mnist", checksums=checksums, urls=self.urls)
    self.assertCountEqual(os.listdir(os.path.join(root, "dynamic_mnist")), self.names)
    self.assertFalse(os.path.exists(os.path.join(self.home, ".dvae")))

  def test_download_with_the_wrong_content_is_refused_and_not_kept(self):
    checksums = self.publish_synthetic_mnist(np.zeros([12_000, 28, 28]), np.zeros([3, 28, 28]))
    self.write(os.path.join(self.published, data.MNIST_TEST_NAME), b"not gzip")
    self.assertDataError([data.MNIST_TEST_NAME, "not a readable gzip file", "not kept"],
                         "dynamic_mnist", checksums=checksums, urls=self.urls)
    cache = os.path.join(self.home, ".dvae", "datasets", "dynamic_mnist")
    self.assertNotIn(data.MNIST_TEST_NAME, os.listdir(cache))

  def test_offline_names_the_cache_folder_and_the_public_urls(self):
    os.environ["DVAE_OFFLINE"] = "1"
    self.assertDataError([os.path.join(self.home, ".dvae", "datasets", "dynamic_mnist"),
                          *self.names, "DVAE_OFFLINE", data.URLS[data.MNIST_TRAIN_NAME]],
                         "dynamic_mnist")
    self.assertEmpty(self.server.requests)

  def test_a_misshaped_idx_file_is_refused(self):
    checksums = self.publish_synthetic_mnist(np.zeros([12_000, 28, 28]), np.zeros([3, 28, 28]))
    bad = gzip.compress(np.array([2051, 3, 27, 27], ">i4").tobytes() + bytes(3 * 27 * 27))
    self.write(os.path.join(self.published, data.MNIST_TEST_NAME), bad)
    checksums[data.MNIST_TEST_NAME] = ("gunzip-sha256:"
                                       + hashlib.sha256(gzip.decompress(bad)).hexdigest())
    self.assertDataError([data.MNIST_TEST_NAME, "not an IDX file of 28×28 images"],
                         "dynamic_mnist", checksums=checksums, urls=self.urls)


class UserFileTest(DataTestCase):
  """A user's .npz: any D or H×W, any 0/1 dtype, binarizations, and one line for bad data."""

  def save(self, name="mine.npz", **arrays):
    path = os.path.join(self.get_temp_dir(), name)
    np.savez(path, **arrays)
    return path

  def binary(self, *shape, dtype=np.uint8):
    return (self.rng.random(shape) < 0.3).astype(dtype)

  @parameterized.parameters(bool, np.uint8, np.int64, np.float16, np.float64)
  def test_flat_binary_rows_of_any_dtype_load_as_float32_without_image_shape(self, dtype):
    train, valid, test = (self.binary(n, 5, dtype=dtype) for n in (20, 4, 6))
    dataset = data.load_dataset(self.save(train=train, valid=valid, test=test))
    for split, x in (("train", train), ("valid", valid), ("test", test)):
      self.assertEqual(getattr(dataset, split).dtype, np.float32)
      self.assertAllEqual(getattr(dataset, split), x.astype(np.float32))
    self.assertIsNone(dataset.image_shape)
    self.assertEqual(dataset.num_dims, 5)
    self.assertFalse(dataset.dynamic_binarization)
    self.assertAllClose(dataset.train_mean, train.astype(np.float64).mean(axis=0))

  def test_images_keep_their_shape_and_flatten_row_major(self):
    train, test = self.binary(9, 12, 20), self.binary(3, 12, 20)
    dataset = data.load_dataset(self.save(train=train, valid=train[:2], test=test))
    self.assertEqual(dataset.image_shape, (12, 20))
    self.assertAllEqual(dataset.test[1, 20:40], test[1, 1])

  def test_without_valid_the_last_tenth_of_train_validates(self):
    train = self.binary(25, 3)
    dataset = data.load_dataset(self.save(train=train, test=train[:2]))
    self.assertAllEqual(dataset.train, train[:23])
    self.assertAllEqual(dataset.valid, train[23:])
    two = data.load_dataset(self.save("two.npz", train=train[:2], test=train[:2]))
    self.assertAllEqual(two.valid, train[1:2])

  def test_static_binarization_draws_once_with_a_fixed_seed(self):
    grey = np.full([4000, 10], 0.25)
    path = self.save(train=grey, valid=grey[:500], test=grey[:800])
    first = data.load_dataset(path, binarization="static")
    again = data.load_dataset(path, binarization="static")
    self.assertFalse(first.dynamic_binarization)
    for split in SPLITS:
      self.assertAllInSet(getattr(first, split), [0.0, 1.0])
      self.assertAllEqual(getattr(first, split), getattr(again, split))
    # The documented recipe: default_rng(1), validation, then test, then training.
    rng = np.random.default_rng(1)
    self.assertAllEqual(first.valid, rng.random([500, 10]) < 0.25)
    self.assertAllEqual(first.test, rng.random([800, 10]) < 0.25)
    self.assertAllEqual(first.train, rng.random([4000, 10]) < 0.25)
    # 40,000 Bernoulli(0.25) pixels: sd of the mean ≈ 2.2e-3.
    self.assertNear(first.train.mean(), 0.25, 0.01)
    self.assertAllClose(first.train_mean, first.train.mean(axis=0))

  def test_dynamic_binarization_keeps_training_grey_and_binarizes_the_rest_once(self):
    grey = np.linspace(0, 1, 30).reshape(3, 10)
    dataset = data.load_dataset(self.save(train=grey, valid=grey, test=grey),
                                binarization="dynamic")
    self.assertTrue(dataset.dynamic_binarization)
    self.assertAllClose(dataset.train, grey)
    self.assertAllInSet(dataset.valid, [0.0, 1.0])
    rng = np.random.default_rng(1)
    self.assertAllEqual(dataset.valid, rng.random(grey.shape) < grey)

  def test_binary_published_data_is_unchanged_by_a_binarization(self):
    folder = self.folder("mnist_binarized_again")
    splits, checksums = self.synthetic_mnist(folder)
    dataset = data.load_dataset("binarized_mnist", folder, checksums=checksums,
                                binarization="static")
    for split, x in splits.items():
      self.assertAllEqual(getattr(dataset, split), x)

  def write_bytes(self, content):
    return self.write(os.path.join(self.get_temp_dir(), "raw.npz"), content)

  @parameterized.named_parameters(
      ("missing_train", dict(test=np.zeros([2, 3])), ["lacks train", "it has test"]),
      ("missing_test", dict(train=np.zeros([2, 3])), ["lacks test"]),
      ("mismatched_d", dict(train=np.zeros([4, 3]), test=np.zeros([2, 4])),
       ["test has rows of shape [4]", "train has [3]"]),
      ("mismatched_image", dict(train=np.zeros([4, 2, 6]), test=np.zeros([2, 3, 4])),
       ["[3, 4]", "[2, 6]"]),
      ("empty_split", dict(train=np.zeros([4, 3]), valid=np.zeros([0, 3]),
                           test=np.zeros([2, 3])), ["valid is empty"]),
      ("zero_width", dict(train=np.zeros([4, 0]), test=np.zeros([2, 0])), ["shape [4, 0]"]),
      ("one_dimensional", dict(train=np.zeros(4), test=np.zeros(2)), ["shape [4]"]),
      ("four_dimensional", dict(train=np.zeros([4, 2, 2, 3]), test=np.zeros([2, 2, 2, 3])),
       ["shape [4, 2, 2, 3]"]),
      ("nan", dict(train=np.array([[0.0, np.nan]]), test=np.zeros([1, 2])),
       ["train", "outside [0, 1] such as nan"]),
      ("infinity", dict(train=np.zeros([3, 2]), test=np.array([[np.inf, 0.0]])),
       ["test", "outside [0, 1] such as inf"]),
      ("above_one", dict(train=np.zeros([3, 2]), test=np.array([[2, 0]])),
       ["outside [0, 1] such as 2"]),
      ("negative", dict(train=np.array([[-1, 0]], np.int8), test=np.zeros([1, 2])),
       ["outside [0, 1] such as -1"]),
      ("grey_without_binarization", dict(train=np.full([3, 2], 0.5), test=np.zeros([1, 2])),
       ["non-binary values such as 0.5", "--binarization=static or dynamic"]),
      ("strings", dict(train=np.array([["0", "1"]]), test=np.zeros([1, 2])), ["dtype <U1"]),
      ("complex", dict(train=np.zeros([3, 2], complex), test=np.zeros([1, 2])),
       ["dtype complex128"]),
      ("single_training_row", dict(train=np.zeros([1, 2]), test=np.zeros([1, 2])),
       ["train has 1 row", "no valid"]),
  )
  def test_bad_arrays_are_refused_in_one_line(self, arrays, expected):
    path = self.save(**arrays)
    self.assertDataError([path, *expected], path)

  def test_ragged_or_object_arrays_are_refused_and_never_unpickled(self):
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.zeros(3), np.zeros(4)]
    path = self.save(train=ragged, test=np.zeros([1, 3]))
    with mock.patch("pickle.loads", side_effect=AssertionError("unpickled")):
      self.assertDataError([path, "pickled Python objects", "never loaded"], path)

  def test_a_pickle_named_npz_is_refused_and_never_unpickled(self):
    path = self.write_bytes(pickle.dumps({"train": [[0, 1]], "test": [[1, 0]]}))
    with mock.patch("pickle.loads", side_effect=AssertionError("unpickled")):
      self.assertDataError([path, "pickled Python objects"], path)

  @parameterized.named_parameters(
      ("garbage", b"this is not a zip file at all"),
      ("empty", b""),
  )
  def test_unreadable_files_are_refused(self, content):
    path = self.write_bytes(content)
    self.assertDataError([path, "not a readable .npz"], path)

  def test_truncated_npz_is_refused(self):
    path = self.save(train=self.binary(500, 50), test=self.binary(50, 50))
    with open(path, "rb") as f:
      head = f.read(3000)
    self.write(path, head)
    self.assertDataError([path, "truncated or corrupt"], path)

  def test_a_single_array_npy_is_refused(self):
    path = os.path.join(self.get_temp_dir(), "single.npz")
    with open(path, "wb") as f:
      np.save(f, np.zeros([2, 3]))
    self.assertDataError([path, "single array (np.save)"], path)

  def test_a_missing_file_is_named(self):
    path = os.path.join(self.get_temp_dir(), "nowhere.npz")
    self.assertDataError([path, "does not exist"], path)


class PipelineTest(DataTestCase):

  def grey_dataset(self, n=50, level=0.3):
    train = np.full([n, 784], level, np.float32)
    return data.Dataset(train=train, valid=train[:2], test=train[:2],
                        train_mean=train.mean(axis=0), dynamic_binarization=True)

  def indexed_dataset(self, n):
    """Binary images whose single lit pixel is their index, to count visits."""
    train = np.eye(n, 784, dtype=np.float32)
    return data.Dataset(train=train, valid=train, test=train, train_mean=train.mean(axis=0),
                        dynamic_binarization=False)

  def take(self, dataset, count):
    return np.stack([batch.numpy() for batch in dataset.take(count)])

  def test_train_batches_are_reproducible_for_a_seed_and_independent_of_global_seed(self):
    dataset = self.grey_dataset()
    tf.random.set_seed(1)
    first = self.take(data.train_dataset(dataset, 16, seed=5), 20)
    tf.random.set_seed(2)
    again = self.take(data.train_dataset(dataset, 16, seed=5), 20)
    other = self.take(data.train_dataset(dataset, 16, seed=6), 20)
    self.assertAllEqual(first, again)
    self.assertNotAllEqual(first, other)

  def test_dynamic_binarization_gives_binary_pixels_with_the_grey_mean(self):
    batches = self.take(data.train_dataset(self.grey_dataset(), 32, seed=0), 40)
    self.assertEqual(batches.shape, (40, 32, 784))
    self.assertAllInSet(batches, [0.0, 1.0])
    # 1,003,520 Bernoulli(0.3) pixels: sd of the mean ≈ 4.6e-4.
    self.assertNear(batches.mean(), 0.3, 3e-3)
    self.assertNotAllEqual(batches[0], batches[1])

  def test_every_image_is_visited_once_per_epoch_and_batches_run_across_epochs(self):
    n, batch_size = 30, 7
    pipeline = data.train_dataset(self.indexed_dataset(n), batch_size, seed=3)
    self.assertEqual(pipeline.element_spec.shape, tf.TensorShape([batch_size, 784]))
    batches = self.take(pipeline, n)  # n batches of 7 images: exactly 7 epochs
    visits = batches.reshape(-1, 784).sum(axis=0)
    self.assertAllEqual(visits[:n], np.full(n, 7.0))
    self.assertAllEqual(visits[n:], np.zeros(784 - n))
    order = np.argmax(batches.reshape(-1, 784), axis=1)
    for epoch in range(7):
      self.assertCountEqual(order[epoch * n:(epoch + 1) * n], range(n))
    self.assertNotAllEqual(order[:n], order[n:2 * n], "each epoch has its own order")
    self.assertNotAllEqual(order[:n], np.arange(n), "the order is shuffled")

  def test_static_mnist_batches_are_its_rows_unchanged(self):
    dataset = self.indexed_dataset(20)
    batches = self.take(data.train_dataset(dataset, 5, seed=0), 4)
    for row in batches.reshape(-1, 784):
      self.assertEqual(row.sum(), 1.0)

  def test_eval_dataset_covers_the_split_in_order_with_a_last_short_batch(self):
    x = self.rng.random([10, 784]).astype(np.float32)
    batches = [batch.numpy() for batch in data.eval_dataset(x, 5)]
    self.assertLen(batches, 2)
    self.assertAllEqual(np.concatenate(batches), x)
    batches = [batch.numpy() for batch in data.eval_dataset(x, 4)]
    self.assertEqual([len(batch) for batch in batches], [4, 4, 2])
    self.assertAllEqual(np.concatenate(batches), x)

  def test_bad_pipeline_arguments_name_what_is_allowed(self):
    with self.assertRaisesRegex(ValueError, "batch_size must be ≥ 1"):
      data.train_dataset(self.grey_dataset(), 0, seed=0)
    with self.assertRaisesRegex(ValueError, "seed must be"):
      data.train_dataset(self.grey_dataset(), 2, seed=-1)
    with self.assertRaisesRegex(ValueError, "batch_size must be ≥ 1"):
      data.eval_dataset(np.zeros([2, 784]), 0)


if __name__ == "__main__":
  tf.test.main()


class UserFileSafetyTest(DataTestCase):
  """A .npz that is not plain numbers, not a file, or larger than memory: one line, no load."""

  @parameterized.named_parameters(
      ("timedelta", np.array([[1, 0], [0, 1]], "timedelta64[s]")),
      ("datetime", np.array([[1, 0], [0, 1]], "datetime64[s]")),
      ("complex", np.array([[1, 0], [0, 1]], np.complex64)))
  def test_time_and_complex_arrays_are_refused(self, train):
    path = os.path.join(self.get_temp_dir(), "odd.npz")
    np.savez(path, train=train, test=np.ones([2, 2], np.uint8))
    self.assertDataError([path, "dtype", str(train.dtype)], path)

  def test_a_fifo_is_refused_without_blocking(self):
    path = os.path.join(self.get_temp_dir(), "pipe.npz")
    os.mkfifo(path)
    self.assertDataError([path, "not a regular file"], path)

  def test_a_declared_shape_beyond_memory_is_refused_before_decompressing(self):
    # A member whose header declares [10^12, 16] float32 (64 TB) over a few bytes of data.
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        member, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 16)})
    member.write(b"\0" * 64)
    path = os.path.join(self.get_temp_dir(), "bomb.npz")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
      archive.writestr("train.npy", member.getvalue())
      archive.writestr("test.npy", member.getvalue())
    self.assertDataError([path, "GiB once loaded", "available"], path)
