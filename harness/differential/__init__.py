"""The differential check: fakechv against the real Cloud Hypervisor.

``bdf-harness diff`` sends the same request sequences to a fakechv process and to a
real ``cloud-hypervisor`` of the same release and compares what comes back, exchange by
exchange. Where they disagree, fakechv is wrong, unless the difference comes from the
environment alone (the one table of :mod:`.normalise`).

One job per module:

=====================  ============================================================
``sequence``           what is sent: steps and sequences, as data (JSON)
``environment``        placeholders for files, made per side and mapped back
``wire``               the raw HTTP client of the API socket (exact bytes)
``sides``              the two processes: fakechv and the real binary
``runner``             one sequence on both sides, step by step
``normalise``          the table of what is not a difference, and why
``compare``            exchange by exchange, events, exits
``rules``              sequences from the rule tests (recorded by ``recorder``)
``recorder``           the pytest plugin that records the tests' requests
``scenarios``          sequences from the scenario suite's CHV exchanges
``generate``           sequences drawn by hypothesis
``guest``              the few sequences that wait for a booted guest
``report``             the summary and the JSON report
``command``            the ``bdf-harness diff`` command
=====================  ============================================================
"""
