"""The library's version, in a module of its own so that ``checkpoint`` can record it
without importing the package (which imports ``train``, which imports ``checkpoint``)."""

__version__ = "0.1.0"
