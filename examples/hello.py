# The Python SDK's hello: a Sailbox, a file, a background server, and output.
import sail

app = sail.App.find(name="web-demo", mint_if_missing=True)
sb = sail.Sailbox.create(app=app, image=sail.Image.debian, name="hello-py")
sb.exec("mkdir -p /srv/app && echo hello > /srv/app/index.html").wait()
sb.exec("python3 -m http.server 3000", background=True, cwd="/srv/app").wait()
out = sb.exec("cat index.html", cwd="/srv/app").output()
print(out.stdout.strip(), out.exit_code)
sb.terminate()
