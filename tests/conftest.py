"""Shared pytest set-up: quiet TensorFlow logging before TensorFlow is imported, and collect only
the project's own tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(items):
  """Leaves out `test_session`, which every `tf.test.TestCase` inherits from TensorFlow: a TF1
  graph-mode context manager that skips itself when run as a test, not a test of ours."""
  items[:] = [item for item in items if not (
      item.name == "test_session" and getattr(getattr(item, "function", None), "__qualname__",
                                              "").endswith("TensorFlowTestCase.test_session"))]
