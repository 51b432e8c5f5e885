"""Unit tests of the domain rules: the rules run against `fake_crm.InMemoryCrm` (no sandbox, no HTTP) on SQLite
and the test Redis, so each rule can be checked in milliseconds; the end-to-end behaviour on both real CRMs is
covered by tests/scenarios."""
