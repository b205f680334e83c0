"""Publish and watch Ticketing events by hand; see `nats_test.cli` for the usage."""
