"""Scenario files and running them: loading, the step interpreter, one run, batches of runs and
their results.
"""
