"""Webhooks: signing secrets and signatures, terminal events, delivery attempts and the delivery log."""
