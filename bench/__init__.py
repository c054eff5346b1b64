"""Benchmarks: each module measures one part, writes bench/results/<name>.json, prints a table."""
