"""Plumbing of the ISTRATI_LUCIAN multi-label image-classification study: data, engine, registry, report, export."""

__version__ = "0.1.0"
