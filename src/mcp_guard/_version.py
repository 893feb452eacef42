"""The package version, in a module of its own so that any module can read it without importing the package.

The one place it is written: pyproject.toml reads it from here (``[tool.setuptools.dynamic]``).
"""

__version__ = "0.3.0.dev0"
