"""golf: a staged Parameter Golf pipeline for a Mamba-2 + GQA attention hybrid."""

__version__ = "0.1.0"
