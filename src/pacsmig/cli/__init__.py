"""Command line: thin typer commands over pacsmig.api."""
