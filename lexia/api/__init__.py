"""HTTP layer: thin Litestar handlers."""
