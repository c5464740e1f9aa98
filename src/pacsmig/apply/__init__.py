"""Apply: execute an approved plan against the source and destination."""
