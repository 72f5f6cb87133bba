"""Experiments that put real load on real servers, measure, and save JSON to plot later.

- `sse_concurrency`: N concurrent Server-Sent-Events clients, threads against coroutines;
- `long_polling`: N clients holding a request open until a message is published;
- `stall`: gevent's price: one blocking call in C stalls every other client;
- `servers`: the servers compared, each started in a process of its own (`gevent_server`
  starts the monkey-patched one);
- `procstats`: a server process's RSS, VMS, threads and CPU, sampled every 100 ms; where a
  threaded process's address space goes (stacks, malloc arenas);
- `measure`: what both experiments do per server; progress bars; JSON save/load;
- `cli`: `python -m asgi_lab experiment sse|longpoll ...`.

The charts are in `asgi_lab.viz.charts`; the load generators in `asgi_lab.load`.
"""
