"""Dramatiq actors (thin: they take ids and call services); importing this module boots the broker."""

from __future__ import annotations

from lexia.worker import broker

__all__ = ["broker"]
