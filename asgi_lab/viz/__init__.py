"""Pictures of a trace: what a learner sees of the servers at work.

- `sequence_diagram(trace)`: one request as a sequence diagram, client / server / app;
- `side_by_side({"WSGI": trace_a, "ASGI": trace_b})`: two such diagrams next to each other;
- `timeline(trace, by="thread")`: many connections over time, and which thread or asyncio
  task was busy with which connection when;
- `Stepper(trace)`: step through a trace one event at a time (ipywidgets), with a static
  rendering where no widget front end exists.

Every function takes a `Tracer` or a plain list of `TraceEvent`s, and returns a matplotlib
`Figure` (displayed by Jupyter when it ends a cell; `fig.savefig("x.png")` in a script).
"""

from .sequence import sequence_diagram, side_by_side
from .stepper import Stepper
from .timeline import timeline

__all__ = ["Stepper", "sequence_diagram", "side_by_side", "timeline"]
