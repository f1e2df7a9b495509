"""labgrid drivers for an apu2 behind an RTE running rte-agent.

Import it from a labgrid environment (``imports: [path/to/rte_labgrid/__init__.py]``) and bind:

- ``RTEAgentDriver``: holds the agent's lease while it is active (reserved with the engine's
  identity, bound to this machine's address so its console connection may type, renewed in the
  background, released on deactivate), and starts boot runs on the board. It takes the agent's
  URL and the engine's credentials from the exported ``NetworkPowerPort`` (``model: rest``,
  ``host: http://USER:TOKEN@RTE:8000/api/v1/power/value``): the exporter is the one place an RTE
  is described.
- ``RTEStrategy``: ``off`` and ``shell``. ``shell`` has the agent do what labgrid cannot express
  well — power-cycle, catch the firmware, Ctrl-B into iPXE, type the commands, pick the iPXE menu
  entry by its label — on the board, from a run spec, then labgrid's ``ShellDriver`` logs in.
"""

import threading
import time
from urllib.parse import urlparse, urlunparse

import attr
import requests

from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.resource import NetworkPowerPort
from labgrid.step import step
from labgrid.strategy.common import Strategy, StrategyError, never_retry

__all__ = ["RTEAgentDriver", "RTEStrategy", "RTEAgentError"]


class RTEAgentError(Exception):
    """The agent refused or failed: the message carries its problem document's detail."""


def _holder(r):
    try:
        return r.json().get("holder")
    except ValueError:
        return None


def _problem(r):
    try:
        doc = r.json()
        return f"{r.status_code} {doc.get('title', '')}: {doc.get('detail', '')}"
    except ValueError:
        return f"{r.status_code} {r.text[:200]}"


@target_factory.reg_driver
@attr.s(eq=False)
class RTEAgentDriver(Driver):
    """The agent's lease and run API for one RTE.

    Args:
        ttl (int): lease time in seconds; renewed every ttl/3 while active. If this process dies,
            nobody renews it and the agent ends the lease at most ttl seconds later.
        purpose (str): shown to people who look at the board (``rtectl status``, the web page).
        wait (int): seconds to wait in the agent's queue when someone else holds the board.
    """

    bindings = {"port": NetworkPowerPort}
    ttl = attr.ib(default=300, validator=attr.validators.instance_of(int))
    purpose = attr.ib(default="labgrid", validator=attr.validators.instance_of(str))
    wait = attr.ib(default=0, validator=attr.validators.instance_of(int))

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self._lease = None
        self._stop = threading.Event()
        self._renewer = None

    # The agent's base URL and the engine's credentials, from the power port's URL.
    def _endpoint(self):
        url = urlparse(self.port.host)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise RTEAgentError(f"NetworkPowerPort host {url.scheme}://{url.hostname} is not the agent's http URL")
        netloc = url.hostname + (f":{url.port}" if url.port else "")
        auth = (url.username, url.password) if url.username else None
        return urlunparse((url.scheme, netloc, "", "", "", "")), auth

    def _call(self, method, path, lease=True, **kw):
        base, auth = self._endpoint()
        headers = kw.pop("headers", {})
        if lease and self._lease:
            headers["X-Lease-Token"] = self._lease["token"]
        return requests.request(method, base + path, auth=auth, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def on_activate(self):
        body = {"ttl_s": self.ttl, "purpose": self.purpose, "bind_address": True}
        if self.wait:
            body["wait_s"] = self.wait
        r = self._call("POST", "/api/v1/leases", lease=False, json=body, timeout=self.wait + 30)
        auth = self._endpoint()[1]
        if r.status_code == 409 and auth and _holder(r) == auth[0]:
            # Held by this engine's own identity: a labgrid client that died without releasing.
            # labgrid's coordinator gave this client the place, so the stale lease is ours to end.
            d = self._call("DELETE", "/api/v1/leases/current", lease=False)
            if d.status_code not in (204, 409):
                raise RTEAgentError(f"could not end this engine's stale lease: {_problem(d)}")
            r = self._call("POST", "/api/v1/leases", lease=False, json=body, timeout=self.wait + 30)
        if r.status_code != 201:
            raise RTEAgentError(f"the agent did not grant the board: {_problem(r)}")
        self._lease = r.json()
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="rte-lease", daemon=True)
        self._renewer.start()

    def _renew(self):
        while not self._stop.wait(max(1, self.ttl // 3)):
            try:
                self._call("POST", "/api/v1/leases/current/renew", json={"ttl_s": self.ttl})
            except requests.RequestException:
                pass  # the next period tries again; the lease outlives one missed renewal

    def on_deactivate(self):
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        if self._lease:
            self._call("DELETE", "/api/v1/leases/current")
        self._lease = None

    @property
    def lease(self):
        """The agent's lease document (id, holder, expires_at, …) while active."""
        return dict(self._lease) if self._lease else None

    @Driver.check_active
    @step(args=["spec"])
    def run(self, spec, timeout=900):
        """Runs a boot spec (YAML text, or a dict) on the board and waits for it to end.

        Returns the run record; raises RTEAgentError with the failing stage when it did not pass.
        """
        if isinstance(spec, str):
            r = self._call("POST", "/api/v1/runs", data=spec.encode(), headers={"Content-Type": "application/yaml"})
        else:
            r = self._call("POST", "/api/v1/runs", json=spec)
        if r.status_code != 202:
            raise RTEAgentError(f"the agent refused the run: {_problem(r)}")
        run_id = r.json()["id"]
        deadline = time.monotonic() + timeout
        # Follow the run's event stream until it says the run finished (the stream ends then too).
        try:
            with self._call("GET", f"/api/v1/runs/{run_id}/events", stream=True, timeout=(30, timeout)) as events:
                for line in events.iter_lines(decode_unicode=True):
                    if line == "event: run_finished" or time.monotonic() > deadline:
                        break
        except requests.RequestException:
            pass  # the run's record below says how it ended, or that it has not
        rec = self._call("GET", f"/api/v1/runs/{run_id}").json()
        if rec.get("state") in ("queued", "running"):
            self._call("DELETE", f"/api/v1/runs/{run_id}")
            raise RTEAgentError(f"run {run_id} did not end within {timeout} s (cancelled)")
        if rec.get("state") != "passed":
            raise RTEAgentError(f"run {run_id} {rec.get('state')}: {rec.get('message', '')}")
        return rec


@target_factory.reg_driver
@attr.s(eq=False)
class RTEStrategy(Strategy):
    """off / shell for an apu2 behind an RTE.

    Args:
        spec (str): a run spec file (relative paths from the environment file's folder) that powers
            the board and takes it through the firmware and iPXE to the menu entry; it needs no
            ``login`` section: labgrid's ShellDriver logs in.
        run_timeout (int): seconds the boot run may take.
    """

    bindings = {
        "agent": RTEAgentDriver,
        "power": "PowerProtocol",
        "console": "ConsoleProtocol",
        "shell": "ShellDriver",
    }
    spec = attr.ib(validator=attr.validators.instance_of(str))
    run_timeout = attr.ib(default=900, validator=attr.validators.instance_of(int))
    status = attr.ib(default="unknown")

    @never_retry
    @step(args=["status"])
    def transition(self, status, *, step):
        if status not in ("off", "shell"):
            raise StrategyError(f"can not transition to {status} (off or shell)")
        if status == self.status:
            step.skip("nothing to do")
            return
        if status == "off":
            self.target.deactivate(self.shell)
            self.target.deactivate(self.console)
            self.target.activate(self.agent)
            self.target.activate(self.power)
            self.power.off()
        else:
            self.target.deactivate(self.shell)
            self.target.activate(self.agent)
            # The console first: it sees the whole boot, and the login prompt is in its buffer
            # when the ShellDriver starts looking.
            self.target.activate(self.console)
            path = self.target.env.config.resolve_path(self.spec) if self.target.env else self.spec
            with open(path, encoding="utf-8") as f:
                self.agent.run(f.read(), timeout=self.run_timeout)
            self.target.activate(self.shell)
        self.status = status
