"""Exploring sequences nobody wrote: the property state machine, its trace, reproducers and the
soak.
"""
