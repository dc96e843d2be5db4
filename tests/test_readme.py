"""The README's Library section runs as written: its ```python blocks, in order, in one
namespace, in a temporary directory (they write best.keras, dvae.keras, conv.keras, logs/)."""

import os
import re

import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def library_blocks():
  """The ```python blocks between "## Library" and the next "## " heading."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  section = readme.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", section, flags=re.S)


class ReadmeTest(tf.test.TestCase):

  def test_library_section_shows_composition_likelihoods_condition_and_conv(self):
    text = "\n".join(library_blocks())
    for needle in ("DVAE.from_hparams", "DVAE(encoders=", "likelihoods.Gaussian()",
                   "likelihoods.Categorical(4)", "condition_dims=10", "ClampedLabelMachine(",
                   "Conv2D", ".evaluate(", "load_model"):
      self.assertIn(needle, text)

  @pytest.mark.slow  # about 1 minute alone, 4 on the shared CPUs
  def test_library_code_blocks_run(self):
    blocks = library_blocks()
    self.assertLen(blocks, 6)
    cwd = os.getcwd()
    os.chdir(self.get_temp_dir())
    try:
      namespace = {}
      for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # pylint: disable=exec-used
    finally:
      os.chdir(cwd)
    self.assertTrue(os.path.exists(os.path.join(self.get_temp_dir(), "conv.keras")))
