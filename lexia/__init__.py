"""Lexia: a self-hosted speech and LLM API on one GPU."""
