"""Published ports: what to publish (``IngressPort``) and where it is reachable (``Listener``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from .errors import NotFoundError

if TYPE_CHECKING:
    from ._client import SailClient

__all__ = ["IngressPort", "Listener", "HttpEndpoint", "TcpEndpoint"]


class IngressPort:
    """A port to publish when you create a Sailbox.

    A bare number in ``ingress_ports`` is HTTP (a public ``https://`` URL that also carries
    WebSocket). Use this class for raw TCP, optionally restricted to source CIDRs.

    Args:
        port: the guest port, 1-65535 (10000 is reserved; 22 only as TCP).
        protocol: ``"http"`` or ``"tcp"``.
        cidr_allowlist: TCP only: source prefixes allowed to connect (``"203.0.113.0/24"``,
            ``"198.51.100.7/32"``); others are dropped before reaching the guest. Empty or
            omitted: any source.
        allow_public: TCP only: confirm that a well-known unauthenticated port (PostgreSQL,
            MySQL, Redis, ...) may be reached from anywhere.
        h2c: HTTP only: speak cleartext HTTP/2 to the server in the Sailbox (gRPC); clients
            use h2 or HTTP/1.1 either way.
        proxy_protocol: TCP only: send the server a PROXY protocol v2 header first, so it
            sees the client's address.

    Example::

        ingress_ports=[sail.IngressPort(5432, "tcp", cidr_allowlist=["203.0.113.0/24"])]
    """

    def __init__(
        self,
        port: int,
        protocol: str = "http",
        cidr_allowlist: Optional[List[str]] = None,
        allow_public: Optional[bool] = None,
        h2c: Optional[bool] = None,
        proxy_protocol: Optional[bool] = None,
    ) -> None:
        self.port = port
        self.protocol = protocol
        self.cidr_allowlist = list(cidr_allowlist) if cidr_allowlist is not None else None
        self.allow_public = allow_public
        self.h2c = h2c
        self.proxy_protocol = proxy_protocol

    def _wire(self) -> Dict[str, Any]:
        spec: Dict[str, Any] = {"port": self.port, "protocol": self.protocol}
        if self.cidr_allowlist is not None:
            spec["cidrAllowlist"] = self.cidr_allowlist
        if self.allow_public is not None:
            spec["allowPublic"] = self.allow_public
        if self.h2c is not None:
            spec["h2c"] = self.h2c
        if self.proxy_protocol is not None:
            spec["proxyProtocol"] = self.proxy_protocol
        return spec

    def __repr__(self) -> str:
        extra = ""
        if self.cidr_allowlist is not None:
            extra += f", cidr_allowlist={self.cidr_allowlist!r}"
        if self.allow_public is not None:
            extra += f", allow_public={self.allow_public!r}"
        if self.h2c is not None:
            extra += f", h2c={self.h2c!r}"
        if self.proxy_protocol is not None:
            extra += f", proxy_protocol={self.proxy_protocol!r}"
        return f"IngressPort({self.port!r}, {self.protocol!r}{extra})"


class HttpEndpoint:
    """Where an HTTP listener is reachable: ``url`` (``https://...``; the same URL with
    ``wss://`` carries WebSocket)."""

    def __init__(self, url: str, host: str, port: int) -> None:
        self.url = url
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"HttpEndpoint(url={self.url!r})"


class TcpEndpoint:
    """Where a raw-TCP listener is reachable: dial ``host``:``port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.url = f"tcp://{host}:{port}"

    def __repr__(self) -> str:
        return f"TcpEndpoint(host={self.host!r}, port={self.port!r})"


Endpoint = Union[HttpEndpoint, TcpEndpoint]


class Listener:
    """A published port of a Sailbox.

    ``sb.listener(port)`` gives a handle at once; its ``endpoint`` is known from the start
    (the URL and the TCP port are fixed at create). ``wait(timeout=...)`` returns once a
    process in the Sailbox serves the port.

    Example::

        listener = sb.listener(3000)
        listener.wait(timeout=60)
        print(listener.endpoint.url)
    """

    def __init__(self, client: "SailClient", sailbox_id: str, port: int, info: Optional[Dict[str, Any]] = None) -> None:
        self._client = client
        self.sailbox_id = sailbox_id
        self.port = port
        self._info = info

    @property
    def protocol(self) -> str:
        """``"http"`` or ``"tcp"``."""
        return str(self._known()["protocol"])

    @property
    def endpoint(self) -> Endpoint:
        """``HttpEndpoint`` (``url``) for HTTP, ``TcpEndpoint`` (``host``, ``port``) for TCP;
        both have ``url``, ``host`` and ``port``."""
        info = self._known()
        e = info["endpoint"]
        if info["protocol"] == "http":
            return HttpEndpoint(e["url"], e["host"], e["port"])
        return TcpEndpoint(e["host"], e["port"])

    @property
    def cidr_allowlist(self) -> List[str]:
        """TCP: the sources allowed to connect (empty: any)."""
        return list(self._known().get("cidrAllowlist", []))

    @property
    def state(self) -> str:
        """TCP: whether this Sail host holds the public port: ``"bound"``, ``"pending"``, or
        ``"unbound"`` (another program holds it; Sail keeps retrying, see ``unbound``).
        HTTP listeners share the gateway's port: always ``"bound"``."""
        return str(self._known().get("state", "bound"))

    @property
    def unbound(self) -> Optional[Dict[str, str]]:
        """TCP, when ``state`` is ``"unbound"``: the OS's ``code`` (e.g. ``EADDRINUSE``), its ``message`` and ``since``."""
        return self._known().get("unbound")

    def wait(self, timeout: float = 60) -> "Listener":
        """Wait until a process in the Sailbox accepts connections on this port and the public
        endpoint routes to it; returns this listener.

        Args:
            timeout: seconds to wait.

        Raises:
            sail.TimeoutError: nothing served the port in time (the message says so when the
                server listens on 127.0.0.1 only).
            sail.NotFoundError: the Sailbox does not publish this port.
            sail.InternalError: ``SAIL_LISTENER_UNBOUND``, this Sail host could not bind the
                TCP listener's public port (the message names it and the OS's reason).
        """
        wait_ms = max(0, round(timeout * 1000))
        path = f"/v1/sailboxes/{self.sailbox_id}/listeners/{self.port}?waitMs={wait_ms}"
        self._info = self._client.request("GET", path, timeout=timeout + 30)
        return self

    def _known(self) -> Dict[str, Any]:
        if self._info is None:
            listeners = self._client.request("GET", f"/v1/sailboxes/{self.sailbox_id}/listeners")["listeners"]
            found = next((l for l in listeners if l["port"] == self.port), None)
            if found is None:
                published = ", ".join(str(l["port"]) for l in listeners) or "no ports"
                raise NotFoundError(
                    "SAIL_LISTENER_NOT_FOUND",
                    f"Sailbox {self.sailbox_id} does not publish port {self.port} (it publishes {published}): pass it in ingress_ports when you create the sailbox",
                    {"sailboxId": self.sailbox_id, "port": self.port},
                )
            self._info = found
        return self._info

    def __repr__(self) -> str:
        if self._info is None:
            return f"<Listener {self.sailbox_id}:{self.port}>"
        return f"<Listener {self.sailbox_id}:{self.port} {self.protocol} {self.endpoint.url}>"
