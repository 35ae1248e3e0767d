"""Single source of the package version (read by pyproject.toml and ``msat_lava.__version__``)."""

__version__ = "0.1.0"
