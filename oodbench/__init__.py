"""oodbench: reproduce the classic OOD-detection papers' tables from one config-driven harness."""

__version__ = "0.1.0"
