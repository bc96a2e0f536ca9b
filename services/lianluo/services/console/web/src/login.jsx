import { useState } from "preact/hooks";
import { api } from "./api.js";
import { t } from "./i18n.js";

// Sign-in: a refusal is shown beside the field it names, or above the form.
export function Login({ onSignedIn, embedded = false }) {
  const [fields, setFields] = useState({});
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setBusy(true);
    try {
      const me = await api("POST", "/api/login", {
        tenant: form.get("tenant"),
        name: form.get("name"),
        password: form.get("password"),
      });
      onSignedIn(me);
    } catch (refused) {
      setFields(refused.fields || {});
      setError(Object.keys(refused.fields || {}).length ? "" : refused.message);
    } finally {
      setBusy(false);
    }
  }

  const field = (name, type = "text", auto = "on") => (
    <div class="field">
      <label for={`login-${name}`}>{t(name)}</label>
      <input
        id={`login-${name}`}
        name={name}
        type={type}
        autocomplete={auto}
        required
        aria-invalid={fields[name] ? "true" : undefined}
        aria-describedby={fields[name] ? `login-${name}-error` : undefined}
      />
      {fields[name] && (
        <span class="error" id={`login-${name}-error`}>
          {fields[name]}
        </span>
      )}
    </div>
  );

  const Wrapper = embedded ? "div" : "main";
  return (
    <Wrapper class="login">
      <form onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">{t("signIn")}</h1>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        {field("tenant", "text", "organization")}
        {field("name", "text", "username")}
        {field("password", "password", "current-password")}
        <button type="submit" disabled={busy}>
          {t("signIn")}
        </button>
      </form>
    </Wrapper>
  );
}
