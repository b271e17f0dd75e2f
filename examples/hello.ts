// The foundation's acceptance script: a Sailbox, a file, a background server, and output.
import { App, Sailbox, Image } from "@sail/sdk";

const app = await App.find({ name: "web-demo", mintIfMissing: true });
const sb = await Sailbox.create({ app, image: Image.debian, name: "web-demo" });
await sb.exec("mkdir -p /srv/app && echo hello > /srv/app/index.html").wait();
await sb.exec("python3 -m http.server 3000", { background: true, cwd: "/srv/app" }).wait();
const out = await sb.exec("cat index.html", { cwd: "/srv/app" }).output();
console.log(out.stdout.trim(), out.exitCode);
await sb.terminate();
