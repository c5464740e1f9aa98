"""Inventory of a source or destination: what studies, series and instances it holds."""
