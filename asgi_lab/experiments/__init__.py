"""Experiments that put real load on real servers, measure, and save JSON to plot later.

- `sse_concurrency`: N concurrent Server-Sent-Events clients, threads against coroutines;
- `long_polling`: N clients holding a request open until a message is published;
- `ws_concurrency`: N WebSocket clients on the ASGI servers, the round trip and the cost;
- `stall`: gevent's price: one blocking call in C stalls every other client;
- `servers`: the one launcher (experiments, benchmarks and tests): a server from a named
  built-in or a command template, in a process of its own, ready, sampled, stopped
  (`gevent_server` starts the monkey-patched one);
- `results`: the one result-file format (command, machine: commit, date, CPU, cores, ...);
- `procstats`: a server process's RSS, VMS, threads and CPU, sampled every 100 ms; where a
  threaded process's address space goes (stacks, malloc arenas);
- `measure`: what the experiments do per server; progress bars; the caption of a result;
- `cli`: `python -m asgi_lab experiment sse|longpoll|ws ...` (`--server NAME="COMMAND"`).

The charts are in `asgi_lab.viz.charts`; the load generators in `asgi_lab.load`.
"""
