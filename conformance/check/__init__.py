"""The conformance check: the harness, honest comparison, and the report."""
