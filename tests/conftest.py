"""Test-wide settings: quiet TensorFlow, small thread pools (the CI machine has 2 cores)."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
