"""Business rules: no HTTP, no Dramatiq."""
