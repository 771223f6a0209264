"""The one error class for bad arguments where upstream audiocraft 1.3.0 uses an `assert`.

We raise an error that says what was wrong and how to fix it; upstream raises `AssertionError`
(and strips it under `python -O`). `ValueAssertionError` is both a `ValueError` and an
`AssertionError`, so code written against upstream that catches `AssertionError` (upstream's own
tests do) keeps working, and code written against us can catch `ValueError`.

It lives at the bottom layer that raises it (modules); models import it from here.
"""
from __future__ import annotations


class ValueAssertionError(ValueError, AssertionError):
    """A bad argument that upstream reports with a bare `assert`; catch it as either class."""
