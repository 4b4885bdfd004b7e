"""Knowledge-tracing models (torch) and the shared numpy encoding.

This file imports no torch: `models.features` and `models.config` must be importable by the service,
which never installs torch. Import `models.registry` for the torch models.
"""
