"""The pytest kit for backend authors: generated conformance cases and the ``mpcompile`` pytest plugin.

Sits above the pipeline (it drives whole compiles); nothing in the core imports it.
"""
