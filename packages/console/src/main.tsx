import { render } from "preact";
import { useState } from "preact/hooks";
import { logout } from "./api.js";
import { BoxPage } from "./box-page.js";
import { BoxesPage } from "./boxes-page.js";
import { CreatePage } from "./create-page.js";
import { useRoute } from "./router.js";
import "./style.css";

function App() {
  const route = useRoute();
  const [loggedOut, setLoggedOut] = useState(false);
  const onUnauthenticated = () => !loggedOut && setLoggedOut(true);
  return (
    <>
      <nav class="top">
        <a class="brand" href="#/">
          Sail
        </a>
        <a href="#/">Boxes</a>
        <a href="#/new">New box</a>
        <span class="spacer" />
        <button type="button" class="link" onClick={() => void logout().finally(() => setLoggedOut(true))}>
          Log out
        </button>
      </nav>
      {loggedOut ? (
        <main>
          <h1>Not logged in</h1>
          <p>
            Run <code>sail console</code> on the daemon's machine and open the link it prints (it works once, for 2 minutes).
          </p>
        </main>
      ) : route.page === "box" ? (
        <BoxPage id={route.id} onUnauthenticated={onUnauthenticated} />
      ) : route.page === "new" ? (
        <CreatePage />
      ) : (
        <BoxesPage app={route.app} onUnauthenticated={onUnauthenticated} />
      )}
    </>
  );
}

render(<App />, document.getElementById("app")!);
