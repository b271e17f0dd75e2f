# The product page's first snippet, as printed (docs/product/sailbox-networking.txt), then
# the check a reader makes: the URL answers "hello". Terminates the box at the end.
import subprocess
import tempfile

import sail

app = sail.App.find(name="web-demo", mint_if_missing=True)
sb = sail.Sailbox.create(
    app=app,
    image=sail.Image.debian_arm64,
    name="web-demo",
    ingress_ports=[3000],
)
try:
    sb.exec("mkdir -p /srv/app && echo hello > /srv/app/index.html").wait()
    sb.exec("python3 -m http.server 3000", background=True, cwd="/srv/app").wait()
    listener = sb.listener(3000)
    listener.wait(timeout=60)
    print(listener.endpoint.url)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
        ca.write(sail.SailClient.default().ca_certificate())
        ca.flush()
        print(subprocess.run(["curl", "-sS", "--cacert", ca.name, listener.endpoint.url], capture_output=True, text=True).stdout, end="")
finally:
    sb.terminate()
