"""Benchmarks (run by hand or with `make bench-ingest`; never asserted in tests)."""
