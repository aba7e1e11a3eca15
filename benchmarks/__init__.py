"""mpcompile's benchmark suite against its peer tools: run ``python benchmarks/run.py`` (see README.md)."""
