"""The journal: every run, every instance outcome, every verification, in SQLite."""
