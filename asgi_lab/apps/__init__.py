"""Small demo apps used by the notebooks, tests and benchmarks."""
