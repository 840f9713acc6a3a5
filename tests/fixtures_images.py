"""Fixtures that write image folders in real JPEG format with list files (owned by the
large-scale datamodules work). Registered as a pytest plugin by tests/conftest.py."""
