"""Resources/ is installed as the package NormativeADLib._shipped (pyproject.toml: package-dir).

This file makes that a regular package rather than a namespace package, so that
importlib.resources.files("NormativeADLib._shipped") is one real folder (a namespace package gives a
MultiplexedPath, whose str() is not a path) and an installed wheel finds its shipped models and sample
case. Testing/library/test_release.py checks it on the built wheel. Nothing here is imported otherwise.
"""
