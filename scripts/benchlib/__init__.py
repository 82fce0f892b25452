"""The pieces of `scripts/bench` (one module per concern; see docs/performance.md)."""
