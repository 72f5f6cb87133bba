"""Where the reader's *browser* finds a server that the notebook started: one rule for every
link and IFrame the course shows.

A background server listens on 127.0.0.1:<port> of the machine the **kernel** runs on. When
the browser runs there too (`make lab` on a laptop), `http://127.0.0.1:<port>/` is right. In
a classroom it is wrong: on JupyterHub, Binder or a Codespace the kernel runs in a container
far away, and 127.0.0.1 in the student's browser is the student's own laptop. The one
address that browser can reach is the Jupyter server's, so the links go through it:
jupyter-server-proxy, a Jupyter server extension, forwards `<base_url>proxy/<port>/<path>` to
`127.0.0.1:<port>/<path>`, WebSocket upgrades included, for a logged-in user only. Such a
URL is a path without a host (`/user/ada/proxy/8123/`): the browser resolves it against the
page it is on, JupyterLab's, so it works whatever public name the hub has.

How the kernel learns which case it is in (the first rule that answers wins):

1. an explicit template, the `template` argument or the `ASGI_LAB_PUBLIC_URL` environment
   variable, with `{port}` in it (`https://hub.example.org/user/ada/proxy/{port}/`), or the
   word `local`;
2. `JUPYTERHUB_SERVICE_PREFIX`, which JupyterHub (and so Binder) sets for the user's Jupyter
   server, and every kernel inherits: `/user/ada/` gives `/user/ada/proxy/<port>/`;
3. the Jupyter server that started this kernel (the kernel is its child process: the
   running-server record named after our parent's pid, in the runtime directory that holds
   this kernel's connection file), if the browser cannot be on this machine's
   loopback: the server runs under a base URL other than `/` (something in front routes by
   path), listens on an address other than loopback, or runs in a Codespace
   (`CODESPACES=true`), where the browser comes in through GitHub's port forwarding;
4. otherwise the server's own address: `http://127.0.0.1:<port>/`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

LOCAL = "http://{host}:{port}/"


@dataclass(frozen=True)
class PublicAddress:
    """A URL template with `{port}` (and `{host}`: the server's own), and how it was chosen."""

    template: str
    reason: str

    @property
    def proxied(self) -> bool:
        """True when the browser goes through jupyter-server-proxy (or another front door)."""
        return self.template != LOCAL

    def url(self, server, path: str = "") -> str:
        """The URL of `path` (relative: "?room=lobby", "ws/lobby") on `server`, as the
        browser must write it. `server` has `.host` and `.port` (a `BackgroundServer`)."""
        return self.template.format(host=server.host, port=server.port) + path.lstrip("/")


def public_address(template: str | None = None) -> PublicAddress:
    """How the browser reaches a server of this kernel: the rules of the module docstring."""
    template = template or os.environ.get("ASGI_LAB_PUBLIC_URL")
    if template:
        if template.strip().lower() == "local":
            return PublicAddress(LOCAL, "local: asked for explicitly")
        if "{port}" not in template:
            raise ValueError(f"a public URL template needs '{{port}}' in it, e.g. "
                             f"'https://hub.example.org/user/ada/proxy/{{port}}/'; got {template!r}")
        return PublicAddress(template if template.endswith("/") else template + "/",
                             "given explicitly (argument or ASGI_LAB_PUBLIC_URL)")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        return PublicAddress(proxy_template(prefix), "JupyterHub: JUPYTERHUB_SERVICE_PREFIX")
    server = jupyter_server_of_this_kernel()
    if server is not None:
        base_url = server.get("base_url") or "/"
        if base_url != "/":
            return PublicAddress(proxy_template(base_url), f"Jupyter server under base URL {base_url}")
        if not is_loopback(server.get("hostname", "localhost")):
            return PublicAddress(proxy_template(base_url),
                                 f"Jupyter server listening on {server.get('hostname')}, not loopback")
        if os.environ.get("CODESPACES") == "true":
            return PublicAddress(proxy_template(base_url), "GitHub Codespaces: CODESPACES=true")
    return PublicAddress(LOCAL, "local: the browser runs on this machine")


def public_url(server, path: str = "", template: str | None = None) -> str:
    """`public_address(template).url(server, path)`: the one call a link or IFrame needs."""
    return public_address(template).url(server, path)


def proxy_template(base_url: str) -> str:
    """jupyter-server-proxy's route for a port on this machine, under `base_url`."""
    prefix = "/" + base_url.strip("/")  # "/" or "/user/ada"
    return prefix.rstrip("/") + "/proxy/{port}/"


def is_loopback(host: str) -> bool:
    """Only this machine can connect to `host` (an empty host means every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: reachable from elsewhere, maybe
        return False


def jupyter_server_of_this_kernel() -> dict | None:
    """The running-server record of the Jupyter server that started this kernel, or None (no
    kernel, or a kernel started by something else: nbclient, VS Code, `jupyter console`).

    A Jupyter server writes `jpserver-<its pid>.json` (url, base_url, hostname, port, pid, ...)
    into its runtime directory, the folder that also holds its kernels' connection files;
    `jupyter_server.serverapp.list_running_servers()` reads the same files. The kernel is the
    server's child process, so its record is the one named after our parent's pid."""
    if "ipykernel" not in sys.modules:  # not running in a kernel at all
        return None
    try:
        from ipykernel.connect import get_connection_file

        runtime_dir = Path(get_connection_file()).parent
        with open(runtime_dir / f"jpserver-{os.getppid()}.json", encoding="utf-8") as file:
            info = json.load(file)
    except Exception:  # no kernel application, no such server, an unreadable file
        return None
    return info if info.get("pid") == os.getppid() else None
