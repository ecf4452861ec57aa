"""Reusable test suites: store and codec contracts that each implementation subclasses."""
