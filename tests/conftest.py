"""Shared pytest set-up: quiet TensorFlow logging before TensorFlow is imported."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
