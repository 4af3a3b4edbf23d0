"""SurgeWatch: warns a company before its website is flooded."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("surgewatch")
except PackageNotFoundError:  # run from a checkout that is not installed
    __version__ = "0+unknown"
