"""NormativeAD's library: normative generative models for anomaly detection in brain MRI."""

# The one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic]) without
# importing the package, and the changelog's newest release names it.
__version__ = "0.1.0"
