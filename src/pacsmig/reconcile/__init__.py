"""Reconcile source studies with their HIS/RIS imaging orders before anything moves.

``orders`` reads the order list (CSV or HL7 v2) and a person's overrides, ``normalize`` holds
the value canonicalisation both sides share, and ``match`` pairs studies with orders and
derives the attribute corrections the plan records.
"""
