"""pytest plugin (placeholder until the conformance check lands)."""
