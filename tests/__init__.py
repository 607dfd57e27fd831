"""The provider's test suite (``tests.support``: what the tests share)."""
