"""Sailboxes: isolated Linux machines that run untrusted code."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union, overload

from ._client import SailClient
from ._progress import ProgressCallback, progress_callback
from ._ssh import resolve_ssh_key
from .app import App
from .errors import InvalidArgumentError, NotFoundError
from .image import Image
from .listener import IngressPort, Listener
from .process import BackgroundProcess, ExecProcess
from .pty import PtySession, _check_size

__all__ = ["Sailbox", "SailboxInfo"]


@dataclass(frozen=True)
class SailboxInfo:
    """What the daemon knows of a Sailbox (``sb.info``, refreshed by ``sb.status()``)."""

    id: str
    app_id: str
    name: Optional[str]
    status: str
    image: Dict[str, Any]
    cpu: float
    memory_mib: int
    #: its disk limit in MiB (what ``df /`` in the box shows, less the filesystem's bookkeeping); None: made before disk limits
    disk_mib: Optional[int]
    #: files and directories it may create (``df -i /``); None: made before disk limits
    disk_inodes: Optional[int]
    idle_timeout: Optional[int]
    wakes: int
    created_at: str
    failure_reason: Optional[str] = None
    #: the node that runs it (a box lives on one node for its life); None: made before nodes were recorded
    node: Optional[str] = None
    #: its published ports and their endpoints (wire form), known from create on; none once it ended
    listeners: List[Dict[str, Any]] = field(default_factory=list, repr=False)
    #: where it may open connections: ``{"outbound": "open" | "blocked" | "allowlist" | "denylist", "allowOut": [...], "denyOut": [...]}``
    network: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def _from_wire(cls, info: Dict[str, Any]) -> "SailboxInfo":
        return cls(
            id=info["id"],
            app_id=info["appId"],
            name=info.get("name"),
            status=info["status"],
            image=dict(info.get("image") or {}),
            cpu=info["cpu"],
            memory_mib=info["memoryMiB"],
            disk_mib=info.get("diskMiB"),
            disk_inodes=info.get("diskInodes"),
            idle_timeout=info.get("idleTimeout"),
            wakes=info.get("wakes", 0),
            created_at=info["createdAt"],
            failure_reason=info.get("failureReason"),
            node=info.get("node"),
            listeners=list(info.get("listeners") or []),
            network=dict(info.get("network") or {}),
            raw=dict(info),
        )


class Sailbox:
    """An isolated Linux machine that runs untrusted code.

    Example::

        app = sail.App.find(name="web-demo", mint_if_missing=True)
        sb = sail.Sailbox.create(app=app, image=sail.Image.debian, ingress_ports=[3000])
        print(sb.exec("uname -a").output().stdout)
        sb.terminate()
    """

    def __init__(self, client: SailClient, info: Dict[str, Any]) -> None:
        self._client = client
        self.info = SailboxInfo._from_wire(info)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> Optional[str]:
        return self.info.name

    @property
    def app_id(self) -> str:
        return self.info.app_id

    # --- create and find ---

    @classmethod
    def create(
        cls,
        app: App,
        image: Optional[Image] = None,
        name: Optional[str] = None,
        ingress_ports: Optional[Sequence[Union[int, IngressPort]]] = None,
        ssh: Union[bool, str, None] = None,
        cpu: Optional[float] = None,
        memory: Optional[int] = None,
        disk: Optional[int] = None,
        idle_timeout: Optional[int] = None,
        block_network: Optional[bool] = None,
        allow_out: Optional[Sequence[str]] = None,
        deny_out: Optional[Sequence[str]] = None,
        on_progress: Union[ProgressCallback, bool, None] = None,
        timeout: Optional[float] = None,
    ) -> "Sailbox":
        """Create a Sailbox and return once it runs. A refused create creates nothing, and so
        does one whose ``timeout`` ends it first.

        The first create of an image waits for its build (minutes for another architecture
        under emulation): the daemon streams its progress, printed to stderr by default. The
        create carries an Idempotency-Key: if its answer is lost (a reset connection), the SDK
        asks again with the same key and gets the box the daemon made, never a second one.

        Args:
            app: the app it belongs to (``App.find(name=..., mint_if_missing=True)``).
            image: ``Image.debian`` (default, the host's architecture), ``Image.debian_arm64``,
                ``Image.debian_amd64``, optionally ``.apt_install(...)``.
            name: unique among the app's live Sailboxes.
            ingress_ports: ports to publish: a bare number is HTTP (a public HTTPS URL that
                also carries WebSocket), ``IngressPort(port, "tcp", ...)`` is raw TCP.
            ssh: ``True`` installs and starts sshd with your ``~/.ssh/id_ed25519.pub`` (else
                ``~/.ssh/id_rsa.pub``) for root and publishes port 22 as raw TCP; a string is a
                public key or the path to one.
            cpu: CPU cores, fractions allowed (default 1).
            memory: memory limit in MiB (default 1024).
            disk: disk limit in MiB: what the box may write over its image, enforced by the
                kernel (its own filesystem: a write past it fails with ENOSPC, and ``df /`` in
                the box shows it); its inodes follow from it (default: the daemon's
                ``--box-disk``, 10240).
            idle_timeout: sleep by itself after this many seconds without inbound traffic,
                open connections, execs or API calls (default: never).
            block_network: ``True`` lets nothing out of the box, DNS included.
            allow_out: only these destinations: IPv4 addresses or CIDRs, domain names (that
                name only) and ``"*.domain"`` (any name below it). A name outside the list
                does not resolve.
            deny_out: every destination but these (same forms). Outbound is open by default,
                never to private ranges, the host or other boxes; at most one of the three.
            on_progress: ``None`` prints an image build's steps to stderr; ``False`` keeps
                quiet; a callable gets every event (``{"progress": {...}}``, ``{"heartbeat": {...}}``).
            timeout: seconds the create may take (default: no limit, it streams progress).

        Raises:
            sail.InvalidArgumentError: a port, CIDR, name, image, key, resource (cpu, memory,
                disk) or outbound entry is refused (the message names it and the rule).
            sail.LimitExceededError: the org's raw-TCP endpoint limit (32) would be exceeded.
            sail.ConflictError: the app already has a live Sailbox of that name.
            sail.TimeoutError: ``timeout`` passed first (no box was made).
        """
        if not isinstance(app, App):
            raise InvalidArgumentError(
                "SAIL_INVALID_ARGUMENT", "Sailbox.create needs app=: get one with sail.App.find(name=..., mint_if_missing=True)", {"field": "app"}
            )
        image = image or Image.debian
        if not isinstance(image, Image):
            raise InvalidArgumentError("SAIL_IMAGE_UNKNOWN", f"image must be a sail.Image such as sail.Image.debian, got {image!r}", {"field": "image"})
        body: Dict[str, Any] = {"appId": app.id, "image": image._wire()}
        if name is not None:
            body["name"] = name
        if cpu is not None:
            body["cpu"] = cpu
        if memory is not None:
            body["memoryMiB"] = memory
        if disk is not None:
            body["diskMiB"] = disk
        if idle_timeout is not None:
            body["idleTimeout"] = idle_timeout
        if ingress_ports:
            body["ingressPorts"] = [p._wire() if isinstance(p, IngressPort) else p for p in ingress_ports]
        if ssh:
            body["ssh"] = {"publicKey": resolve_ssh_key(ssh)}
        body.update(_network_body(block_network, allow_out, deny_out))
        info = app.client.long_call("/v1/sailboxes", body, "sailbox", on_event=progress_callback(on_progress), timeout=timeout)
        return cls(app.client, info)

    @classmethod
    def from_id(cls, sailbox_id: str, client: Optional[SailClient] = None, timeout: Optional[float] = None) -> "Sailbox":
        """The Sailbox with this id (``sb-...``)."""
        client = client or SailClient.default()
        return cls(client, client.request("GET", f"/v1/sailboxes/{urllib.parse.quote(sailbox_id, safe='')}", timeout=timeout))

    @classmethod
    def from_name(cls, app: App, name: str, timeout: Optional[float] = None) -> "Sailbox":
        """The live Sailbox called ``name`` in ``app``.

        Raises:
            sail.NotFoundError: there is none.
        """
        query = urllib.parse.urlencode({"appId": app.id, "name": name, "live": "true"})
        found = app.client.request("GET", f"/v1/sailboxes?{query}", timeout=timeout)["sailboxes"]
        if not found:
            raise NotFoundError("SAIL_SAILBOX_NOT_FOUND", f'No live sailbox named "{name}" in app "{app.name}"', {"app": app.name, "name": name})
        return cls(app.client, found[0])

    @classmethod
    def list(cls, app: Optional[App] = None, client: Optional[SailClient] = None, timeout: Optional[float] = None) -> List["Sailbox"]:
        """The app's Sailboxes (terminated ones too, newest first), or all of your org's without ``app``."""
        client = app.client if app is not None else client or SailClient.default()
        query = f"?appId={urllib.parse.quote(app.id)}" if app is not None else ""
        return [cls(client, info) for info in client.request("GET", f"/v1/sailboxes{query}", timeout=timeout)["sailboxes"]]

    # --- state ---

    def status(self, timeout: Optional[float] = None) -> str:
        """The current state, fetched from the daemon: ``"running"``, ``"sleeping"``,
        ``"paused"``, ``"terminated"`` or ``"failed"`` (``"creating"`` while it starts)."""
        self._refresh(self._client.request("GET", f"/v1/sailboxes/{self.id}", timeout=timeout))
        return self.info.status

    def sleep(self, timeout: Optional[float] = None) -> None:
        """Sleep: open connections are dropped and the Sailbox is frozen; the next inbound HTTP,
        WebSocket or TCP connection (or an exec) wakes it."""
        self._refresh(self._client.request("POST", f"/v1/sailboxes/{self.id}/sleep", {}, timeout=timeout))

    def pause(self, timeout: Optional[float] = None) -> None:
        """Pause: frozen with its state kept; traffic does not wake it (HTTP gets 503, TCP is
        closed) until ``resume()``."""
        self._refresh(self._client.request("POST", f"/v1/sailboxes/{self.id}/pause", {}, timeout=timeout))

    def resume(self, timeout: Optional[float] = None) -> None:
        """Bring a paused or sleeping Sailbox back."""
        self._refresh(self._client.request("POST", f"/v1/sailboxes/{self.id}/resume", {}, timeout=timeout))

    def terminate(self, timeout: Optional[float] = None) -> None:
        """Stop the Sailbox and release everything it holds, its listeners included. Idempotent."""
        self._refresh(self._client.request("DELETE", f"/v1/sailboxes/{self.id}", timeout=timeout))

    def start_sshd(self, timeout: Optional[float] = None) -> None:
        """Start the Sailbox's SSH server if it is not running; does nothing if it is (idempotent)."""
        self._client.request("POST", f"/v1/sailboxes/{self.id}/sshd", {}, timeout=timeout)

    # --- commands ---

    @overload
    def exec(self, cmd: str, background: Literal[False] = False, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None) -> ExecProcess: ...

    @overload
    def exec(self, cmd: str, background: Literal[True], cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None) -> BackgroundProcess: ...

    def exec(
        self, cmd: str, background: bool = False, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None
    ) -> Union[ExecProcess, BackgroundProcess]:
        """Run ``cmd`` with ``/bin/sh -c`` inside the Sailbox, as root.

        In the foreground it returns an ``ExecProcess``: ``wait()`` gives the exit code,
        ``stdout`` / ``stderr`` yield text as it is produced, ``output()`` collects it all.
        With ``background=True`` it returns a ``BackgroundProcess`` once the command has
        started; it keeps running and its output goes to ``log()``.

        Args:
            cwd: working directory inside the Sailbox (absolute; default ``/root``).
            env: extra environment variables.
            timeout: seconds the call may take: to start a background command; in the
                foreground, until the command ends (then ``wait()`` raises ``sail.TimeoutError``
                and the command is killed). Default: no limit in the foreground.

        Raises:
            sail.SailboxPausedError: the Sailbox is paused (a sleeping one is woken).
        """
        body: Dict[str, Any] = {"cmd": cmd}
        if cwd is not None:
            body["cwd"] = cwd
        if env is not None:
            body["env"] = env
        path = f"/v1/sailboxes/{self.id}/exec"
        if background:
            body["background"] = True
            return BackgroundProcess(self._client, self._client.request("POST", path, body, timeout=timeout))
        return ExecProcess(self._client.stream(path, body, timeout=timeout))

    def pty(
        self, cmd: Optional[str] = None, cols: int = 80, rows: int = 24, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None
    ) -> PtySession:
        """Run ``cmd`` (default: root's login shell) on a pseudo-terminal in the Sailbox, as
        ``sail box exec -it`` does: see ``PtySession``. Wakes a sleeping Sailbox.

        Args:
            cols, rows: the terminal's size in character cells (1-10000).
            cwd: working directory inside the Sailbox (absolute; default ``/root``).
            env: extra environment variables (``TERM`` is ``xterm-256color`` unless given).
            timeout: seconds to open the terminal (default: the client's ``request_timeout``).

        Raises:
            sail.SailboxPausedError: the Sailbox is paused.
            sail.InvalidArgumentError: a bad size, ``cwd`` or ``env``.
        """
        _check_size(cols, rows)
        query: List[Tuple[str, str]] = [("cols", str(cols)), ("rows", str(rows))]
        if cmd is not None:
            query.append(("cmd", cmd))
        if cwd is not None:
            query.append(("cwd", cwd))
        for key, value in (env or {}).items():
            query.append(("env", f"{key}={value}"))
        path = f"/v1/sailboxes/{urllib.parse.quote(self.id, safe='')}/pty?{urllib.parse.urlencode(query)}"
        return PtySession(self._client.websocket(path, timeout=timeout))

    # --- outbound network ---

    @property
    def network(self) -> Dict[str, Any]:
        """Where the Sailbox may open connections (as of the last fetch; ``status()`` refreshes it)."""
        return self.info.network

    def set_network(
        self, block_network: Optional[bool] = None, allow_out: Optional[Sequence[str]] = None, deny_out: Optional[Sequence[str]] = None, timeout: Optional[float] = None
    ) -> Dict[str, Any]:
        """Replace the outbound policy: new connections follow it at once, open connections it
        no longer allows are cut. No argument opens it again.

        Example::

            sb.set_network(allow_out=["*.debian.org", "198.51.100.0/24"])
            sb.set_network(block_network=True)
        """
        self._refresh(self._client.request("PUT", f"/v1/sailboxes/{self.id}/network", _network_body(block_network, allow_out, deny_out), timeout=timeout))
        return self.info.network

    # --- listeners ---

    def listener(self, port: int) -> Listener:
        """A handle on a published port. Its ``endpoint`` is known at once (fixed at create);
        ``.wait(timeout=...)`` waits until a process serves it."""
        known = next((l for l in self.info.listeners if l.get("port") == port), None)
        return Listener(self._client, self.id, port, known)

    def listeners(self, timeout: Optional[float] = None) -> List[Listener]:
        """Every published port of the Sailbox, with its protocol and endpoint."""
        listeners = self._client.request("GET", f"/v1/sailboxes/{self.id}/listeners", timeout=timeout)["listeners"]
        return [Listener(self._client, self.id, info["port"], info) for info in listeners]

    def _refresh(self, info: Dict[str, Any]) -> None:
        self.info = SailboxInfo._from_wire(info)

    def __repr__(self) -> str:
        name = f" {self.name}" if self.name else ""
        return f"<Sailbox {self.id}{name} {self.info.status}>"


def _network_body(block_network: Optional[bool], allow_out: Optional[Sequence[str]], deny_out: Optional[Sequence[str]]) -> Dict[str, Any]:
    """The wire fields of an outbound policy (the daemon checks them)."""
    body: Dict[str, Any] = {}
    if block_network is not None:
        body["blockNetwork"] = block_network
    if allow_out is not None:
        body["allowOut"] = list(allow_out) if not isinstance(allow_out, str) else allow_out
    if deny_out is not None:
        body["denyOut"] = list(deny_out) if not isinstance(deny_out, str) else deny_out
    return body
