"""`make bench`: measured sections written to benchmarks/bench.json and BENCHMARKS.md.

Each section is a function registered with ``@section(name, cap_s)``; it returns a dict
with ``tables`` (markdown-ready rows) and raw ``results``. Sections merge into the
existing JSON, so running one section keeps the others' last results.
"""
