"""The deploy decision: which variant, batch size and concurrency to ship under a latency SLO and a
fidelity floor (decision.py), the bundle that serves it (bundle.py), the trade-off chart (chart.py) and
the note that explains it (note.py). It reads benchmark.json and parity.json, never the code that made them."""
