"""Engines: Protocols and value types (base), the backend registry (registry), real backends, fakes."""
