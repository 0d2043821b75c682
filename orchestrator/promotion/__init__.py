"""Promotion: the bundle, its model card and provenance, the Hub, generation with an adapter, and reading adapters others wrote."""
