"""The version, in one place: ``pyproject.toml`` reads it from here (``dynamic = ["version"]``),
``gg.__version__`` and ``graphgrad --version`` import it, and the installed metadata
(``importlib.metadata.version("graphgrad")``) is built from it."""

__version__ = "0.1.0"
