"""Sail: isolated Linux machines (Sailboxes) that run untrusted code, with published ports.

Standard library only. Finds the daemon from ``SAIL_API_URL`` / ``SAIL_TOKEN``, else the
config file ``sail up`` wrote (``$SAIL_CONFIG`` or ``~/.sail/config.json``).

Example::

    import sail
    app = sail.App.find(name="web-demo", mint_if_missing=True)
    sb = sail.Sailbox.create(app=app, image=sail.Image.debian_arm64, name="web-demo", ingress_ports=[3000])
    sb.exec("python3 -m http.server 3000", background=True, cwd="/srv/app").wait()
    print(sb.listener(3000).wait(timeout=60).endpoint.url)
"""

from ._client import SailClient, client_config_path
from .app import App
from .errors import (
    AbortedError,
    AuthError,
    ConflictError,
    InternalError,
    UnavailableError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    SailboxPausedError,
    SailError,
    TimeoutError,
)
from .image import Image
from .listener import HttpEndpoint, IngressPort, Listener, TcpEndpoint
from .process import BackgroundProcess, ExecOutput, ExecProcess
from .pty import PtySession
from .sailbox import Sailbox, SailboxInfo

__version__ = "0.1.0"

__all__ = [
    "App",
    "Sailbox",
    "SailboxInfo",
    "Image",
    "IngressPort",
    "Listener",
    "HttpEndpoint",
    "TcpEndpoint",
    "ExecProcess",
    "BackgroundProcess",
    "ExecOutput",
    "PtySession",
    "SailClient",
    "client_config_path",
    "SailError",
    "InvalidArgumentError",
    "NotFoundError",
    "ConflictError",
    "LimitExceededError",
    "TimeoutError",
    "AbortedError",
    "AuthError",
    "SailboxPausedError",
    "InternalError",
    "UnavailableError",
]
