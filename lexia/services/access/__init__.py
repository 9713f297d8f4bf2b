"""Access: API keys, tenants, rate limits, idempotency and the usage ledger."""
