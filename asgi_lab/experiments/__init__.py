"""Experiments that put real load on real servers, measure, save JSON and plot (see `viz/charts.py`)."""
