"""pytest plugin (entry point ``pytest11``): lets a backend author run mpcompile's conformance suite."""
