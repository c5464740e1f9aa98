"""The migration spec: what the user declares."""

from pacsmig.spec.load import load_spec, spec_from_mapping
from pacsmig.spec.model import DimseSource, Endpoint, LocalAE, Select, Spec

__all__ = ["DimseSource", "Endpoint", "LocalAE", "Select", "Spec", "load_spec", "spec_from_mapping"]
