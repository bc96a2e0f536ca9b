import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { t } from "./i18n.js";

// Channels, notification templates and notification rules, written as the tenants API's JSON:
// the service checks each and names, field by field, what it refuses.
const EXAMPLES = {
  channels: {
    name: "website",
    queue: "cards",
    web: { allowed_origins: ["https://www.example.com"], title: "Chat with us" },
  },
  templates: {
    name: "case-closed",
    channel: "DELIVERY_CHANNEL_WEBHOOK",
    body: "Your case {{case_id}} is resolved.",
    locale: "en",
  },
  rules: {
    name: "closed-loop",
    template: "case-closed",
    enabled: true,
    interaction_closed: { resolutions: ["resolved"] },
    webhook: { url: "https://hooks.example.com/lianluo", signing_secret: "a secret of at least 32 characters!!" },
  },
  articles: {
    title: "Card expiry",
    body: "A card expires at the end of the month printed on it. A new card is sent 30 days before.",
    tags: ["cards"],
  },
  canned_responses: {
    shortcut: "/thanks",
    title: "Thanks",
    text: "Thank you for contacting us. Is there anything else I can help with?",
  },
};
const FIELD = {
  channels: "channel",
  templates: "template",
  rules: "rule",
  articles: "article",
  canned_responses: "canned_response",
};

export function Settings() {
  const [kind, setKind] = useState("channels");
  const [items, setItems] = useState([]);
  const [source, setSource] = useState(JSON.stringify(EXAMPLES.channels, null, 2));
  const [fields, setFields] = useState({});
  const [done, setDone] = useState("");
  const load = (k) => api("GET", `/api/admin/${k}`).then((r) => setItems(r[k] || []));
  useEffect(() => {
    load(kind);
  }, [kind]);

  async function create(event) {
    event.preventDefault();
    let resource;
    try {
      resource = JSON.parse(source);
    } catch (bad) {
      setFields({ _: t("notJson", { reason: bad.message }) });
      return;
    }
    try {
      const made = await api("POST", `/api/admin/${kind}`, { [FIELD[kind]]: resource });
      setFields({});
      setDone(t("created", { name: made.name || made.title || made.shortcut }));
      load(kind);
    } catch (refused) {
      setDone("");
      setFields(Object.keys(refused.fields || {}).length ? refused.fields : { _: refused.message });
    }
  }

  return (
    <section class="admin-section settings" aria-labelledby="settings-title">
      <h2 id="settings-title">{t("settings")}</h2>
      <div class="field">
        <label for="settings-kind">{t("settingsKind")}</label>
        <select
          id="settings-kind"
          value={kind}
          onChange={(e) => {
            const next = e.currentTarget.value;
            setKind(next);
            setSource(JSON.stringify(EXAMPLES[next], null, 2));
            setFields({});
            setDone("");
          }}
        >
          <option value="channels">{t("channels")}</option>
          <option value="templates">{t("templates")}</option>
          <option value="rules">{t("rules")}</option>
          <option value="articles">{t("articles")}</option>
          <option value="canned_responses">{t("cannedResponses")}</option>
        </select>
      </div>
      <ul class="settings-list">
        {items.map((item) => {
          const name = item.name || item.shortcut || item.title;
          return <li data-name={name}>{name}</li>;
        })}
      </ul>
      <form onSubmit={create} data-kind={kind}>
        <div class="field">
          <label for="settings-source">{t("asJson")}</label>
          <textarea
            id="settings-source"
            rows="10"
            spellcheck={false}
            value={source}
            aria-invalid={Object.keys(fields).length ? "true" : undefined}
            aria-describedby="settings-errors"
            onInput={(e) => setSource(e.currentTarget.value)}
          />
        </div>
        <ul id="settings-errors" class="error">
          {Object.entries(fields).map(([k, v]) => (
            <li>{k === "_" ? v : `${k}: ${v}`}</li>
          ))}
        </ul>
        <button type="submit">{t("create")}</button>
        {done && <p role="status">{done}</p>}
      </form>
    </section>
  );
}
