"""twin-imaging: the imaging layer of a patient digital twin."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("twin-imaging")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
