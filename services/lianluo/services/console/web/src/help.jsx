import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { t } from "./i18n.js";

// Help while answering: the canned responses of the conversation's queue, and the knowledge
// base searched in Chinese or English. "Insert" puts the text in the reply, where the agent
// can still change it before sending.
export function Helper({ talk, onInsert }) {
  const queue = (talk.requirements || {}).queue || "";
  const [canned, setCanned] = useState([]);
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState(null);
  const [error, setError] = useState("");
  useEffect(() => {
    api("GET", `/api/canned?queue=${encodeURIComponent(queue)}`)
      .then((r) => setCanned(r.canned_responses || []))
      .catch((refused) => setError(refused.message));
  }, [queue]);

  async function search(event) {
    event.preventDefault();
    if (!query.trim()) return;
    try {
      const found = await api("GET", `/api/knowledge?q=${encodeURIComponent(query.trim())}`);
      setHits(found.hits || []);
      setError("");
    } catch (refused) {
      setError(refused.message);
    }
  }

  async function insertArticle(hit) {
    try {
      const article = await api("GET", `/api/knowledge/${hit.article.id}`);
      onInsert(article.body || "");
    } catch (refused) {
      setError(refused.message);
    }
  }

  return (
    <aside class="helper" aria-labelledby={`help-${talk.id}`}>
      <h2 id={`help-${talk.id}`}>{t("help")}</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <h3>{t("cannedResponses")}</h3>
      {canned.length ? (
        <ul class="canned">
          {canned.map((c) => (
            <li data-shortcut={c.shortcut}>
              <button type="button" class="secondary" onClick={() => onInsert(c.text)}>
                {c.shortcut}
              </button>{" "}
              {c.title}
            </li>
          ))}
        </ul>
      ) : (
        <p>{t("noCanned")}</p>
      )}
      <form class="knowledge" onSubmit={search} role="search">
        <label for={`kb-${talk.id}`}>{t("knowledgeSearch")}</label>
        <input id={`kb-${talk.id}`} type="search" value={query} onInput={(e) => setQuery(e.currentTarget.value)} />
        <button type="submit">{t("search")}</button>
      </form>
      {hits && (
        <ol class="hits" aria-label={t("knowledgeSearch")}>
          {hits.length === 0 && <li>{t("noHits")}</li>}
          {hits.map((hit) => (
            <li data-article={hit.article.id}>
              <strong>{hit.article.title}</strong>
              <p>{hit.snippet}</p>
              <button type="button" class="secondary" onClick={() => insertArticle(hit)}>
                {t("insert")}
              </button>
            </li>
          ))}
        </ol>
      )}
    </aside>
  );
}

// Colleagues found by name, skill or expertise; choosing one makes them the transfer's target.
export function DirectoryPicker({ id, invalid }) {
  const [query, setQuery] = useState("");
  const [people, setPeople] = useState([]);
  useEffect(() => {
    if (!query.trim()) return setPeople([]);
    const timer = setTimeout(() => {
      api("GET", `/api/directory?q=${encodeURIComponent(query.trim())}`)
        .then((r) => setPeople(r.entries || []))
        .catch(() => setPeople([]));
    }, 200);
    return () => clearTimeout(timer);
  }, [query]);
  return (
    <div class="field directory">
      <label for={id}>{t("findColleague")}</label>
      <input id={id} type="search" value={query} aria-invalid={invalid ? "true" : undefined} onInput={(e) => setQuery(e.currentTarget.value)} />
      <fieldset>
        <legend class="visually-hidden">{t("colleagues")}</legend>
        {people.map((p) => (
          <div class="check" data-agent={p.name}>
            <input type="radio" name="target" id={`${id}-${p.agent_id}`} value={p.agent_id} />
            <label for={`${id}-${p.agent_id}`}>
              {p.display_name || p.name} ({p.name}){(p.expertise || []).length ? ` · ${p.expertise.join(", ")}` : ""}
              {(p.skills || []).length ? ` · ${p.skills.join(", ")}` : ""}
            </label>
          </div>
        ))}
      </fieldset>
    </div>
  );
}
