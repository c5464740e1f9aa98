"""The plan: an explicit, reviewable list of per-study actions."""
