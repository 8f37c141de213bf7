"""The version of promptsr, apart from the package so that its modules can name it without importing the package."""

__version__ = "0.1.0"
