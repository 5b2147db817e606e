"""``gsr repro``: the reproduction study (``docs/RESULTS.md``): each paper's claims tested at a chosen scale."""
