"""pacsmig: declarative plan-and-apply migration between PACS."""

__version__ = "0.1.0"
