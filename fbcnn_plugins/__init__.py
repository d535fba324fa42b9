"""FBCNN JPEG artifact removal: one core, with CLI, GIMP 3 and VapourSynth front ends."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fbcnn-plugins")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
