import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "./api.js";
import { t, switchLanguage } from "./i18n.js";
import { Login } from "./login.jsx";
import { Desk } from "./agent.jsx";
import { Wall } from "./supervisor.jsx";
import { Admin } from "./admin.jsx";
import { Reports } from "./reports.jsx";

const PAGES = { agent: "desk", supervisor: "wall", reports: "reports", admin: "admin" };

function page(me) {
  const wanted = location.hash.replace(/^#\/?/, "");
  return me.pages.includes(wanted) ? wanted : me.pages[0];
}

function App() {
  const [me, setMe] = useState(undefined);
  const [expired, setExpired] = useState(false);
  const [, redraw] = useState(0);
  // Whether someone is signed in: a refusal then means their session ended.
  const signedIn = useRef(false);
  signedIn.current = Boolean(me);

  useEffect(() => {
    api("GET", "/api/me").then(setMe, () => setMe(null));
    const out = () => signedIn.current && setExpired(true);
    const moved = () => redraw((n) => n + 1);
    window.addEventListener("lianluo:signed-out", out);
    window.addEventListener("hashchange", moved);
    return () => {
      window.removeEventListener("lianluo:signed-out", out);
      window.removeEventListener("hashchange", moved);
    };
  }, []);

  if (me === undefined) return null;
  if (me === null) return <Login onSignedIn={setMe} />;
  const current = page(me);
  const wanted = location.hash.replace(/^#\/?/, "");
  return (
    <div class="shell">
      <header class="top">
        <h1>{t("title")}</h1>
        <nav aria-label="pages">
          {me.pages.map((p) => (
            <a href={`#${p}`} aria-current={p === current ? "page" : undefined}>
              {t(PAGES[p])}
            </a>
          ))}
        </nav>
        <span class="who">{me.display_name}</span>
        <button
          type="button"
          onClick={() => {
            switchLanguage();
            redraw((n) => n + 1);
          }}
        >
          {t("language")}
        </button>
        <button
          type="button"
          onClick={() => api("POST", "/api/logout", {}).finally(() => setMe(null))}
        >
          {t("signOut")}
        </button>
      </header>
      <main>
        {wanted && wanted !== current && <p role="alert">{t("notAllowed")}</p>}
        {current === "agent" && <Desk me={me} />}
        {current === "supervisor" && <Wall me={me} />}
        {current === "reports" && <Reports />}
        {current === "admin" && <Admin />}
      </main>
      {expired && (
        <div class="overlay" role="dialog" aria-modal="true" aria-labelledby="expired-title">
          <div class="card">
            <p id="expired-title">{t("signedOut")}</p>
            <Login
              embedded
              onSignedIn={(again) => {
                setExpired(false);
                setMe(again);
                window.dispatchEvent(new CustomEvent("lianluo:signed-in"));
              }}
            />
          </div>
        </div>
      )}
    </div>
  );
}

render(<App />, document.getElementById("app"));
