"""Developer tools that are not services (model builders, generators).

cli         `avatario`, the command-line client of the public API, and its client
devstack    the one-command local stack behind `make run`, and its scripted demo
simulation  simulated children's play and flag rates over simulated populations
safety      the safety classifier's generated corpus and its model build

Tools may import services (their public domain modules and generated stubs);
nothing under services/ imports a tool (tests/unit/test_import_rules.py).
"""
