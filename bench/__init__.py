"""Benchmarks of the event pipeline, each figure against a baseline measured in the same run.

Run them with ``.venv/bin/python -m bench.run`` (``--quick`` for a smoke run);
``docs/benchmarks.md`` says what each figure measures and shows the last full run.
Not part of the test suite: nothing here asserts a time.
"""
