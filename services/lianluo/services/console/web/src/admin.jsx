import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { t } from "./i18n.js";
import { Flows } from "./flows.jsx";
import { Hours } from "./hours.jsx";
import { Settings } from "./settings.jsx";

// The tenant's set-up: queues, agents and people. Each form sends the resource as the API's
// JSON names it; a refusal comes back field by field (for example "queue.name") and is shown
// beside its input, and nothing is created half-way.
function Field({ name, label, errors, type = "text", value, options, required = false }) {
  const id = `admin-${name.replace(/\W/g, "-")}`;
  const error = errors[name];
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {options ? (
        <select id={id} name={name} aria-invalid={error ? "true" : undefined}>
          {options.map(([v, l]) => (
            <option value={v}>{l}</option>
          ))}
        </select>
      ) : (
        <input
          id={id}
          name={name}
          type={type}
          value={value}
          required={required}
          aria-invalid={error ? "true" : undefined}
          aria-describedby={error ? `${id}-error` : undefined}
        />
      )}
      {error && (
        <span class="error" id={`${id}-error`}>
          {error}
        </span>
      )}
    </div>
  );
}

function Section({ kind, title, columns, toBody, children }) {
  const [items, setItems] = useState([]);
  const [errors, setErrors] = useState({});
  const [done, setDone] = useState("");
  const load = () => api("GET", `/api/admin/${kind}`).then((r) => setItems(r[kind] || []));
  useEffect(() => {
    load();
  }, []);
  async function submit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const values = Object.fromEntries(new FormData(form).entries());
    try {
      const made = await api("POST", `/api/admin/${kind}`, toBody(values));
      setErrors({});
      setDone(made.name || "");
      form.reset();
      load();
    } catch (refused) {
      setDone("");
      setErrors(Object.keys(refused.fields).length ? refused.fields : { _: refused.message });
    }
  }
  const unplaced = Object.entries(errors).filter(([k]) => !document.querySelector(`[name="${k}"]`));
  return (
    <section class="admin-section" aria-labelledby={`${kind}-title`}>
      <h2 id={`${kind}-title`}>{title}</h2>
      <table>
        <thead>
          <tr>
            {columns.map(([, label]) => (
              <th scope="col">{label}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {items.map((item) => (
            <tr data-name={item.name}>
              {columns.map(([get]) => (
                <td>{get(item)}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
      <form onSubmit={submit} data-kind={kind}>
        {unplaced.map(([k, v]) => (
          <p class="error" role="alert">
            {k === "_" ? v : `${k}: ${v}`}
          </p>
        ))}
        {children(errors)}
        <button type="submit">{t("create")}</button>
        {done && <p role="status">{t("created", { name: done })}</p>}
      </form>
    </section>
  );
}

const skills = (x) => (x.required_skills || x.skills || []).map((s) => `${s.skill}:${s.level}`).join(", ");

export function Admin() {
  return (
    <div class="admin">
      <Section
        kind="queues"
        title={t("queues")}
        columns={[[(q) => q.name, t("resourceName")], [(q) => q.display_name, t("displayName")], [skills, t("skills")]]}
        toBody={(v) => ({
          queue: {
            name: v["queue.name"],
            display_name: v["queue.display_name"],
            required_skills: v.skill ? [{ skill: v.skill, level: Number(v.level || 1) }] : [],
            priority: 5,
            service_level: { threshold_seconds: 20, target_percent: 80 },
            max_wait_seconds: 120,
            overflow: { kind: "OVERFLOW_KIND_MESSAGE" },
            media: "MEDIA_TYPE_CHAT",
          },
        })}
      >
        {(errors) => [
          <Field name="queue.name" label={t("resourceName")} errors={errors} required />,
          <Field name="queue.display_name" label={t("displayName")} errors={errors} />,
          <Field name="skill" label={t("skill")} errors={errors} />,
          <Field name="level" label={t("level")} type="number" value="3" errors={errors} />,
        ]}
      </Section>
      <Section
        kind="agents"
        title={t("agents")}
        columns={[[(a) => a.name, t("resourceName")], [(a) => a.display_name, t("displayName")], [skills, t("skills")]]}
        toBody={(v) => ({
          agent: {
            name: v["agent.name"],
            display_name: v["agent.display_name"],
            kind: "AGENT_KIND_STAFF",
            skills: v.skill ? [{ skill: v.skill, level: Number(v.level || 1) }] : [],
            languages: ["en", "zh-CN"],
            capacity: [{ media: "MEDIA_TYPE_CHAT", max_concurrent: 3 }],
          },
        })}
      >
        {(errors) => [
          <Field name="agent.name" label={t("resourceName")} errors={errors} required />,
          <Field name="agent.display_name" label={t("displayName")} errors={errors} />,
          <Field name="skill" label={t("skill")} errors={errors} />,
          <Field name="level" label={t("level")} type="number" value="5" errors={errors} />,
        ]}
      </Section>
      <Section
        kind="users"
        title={t("people")}
        columns={[[(u) => u.name, t("resourceName")], [(u) => (u.role || "").replace("ROLE_", "").toLowerCase(), t("role")], [(u) => u.agent || (u.queues || []).join(", "), t("agentOrQueues")]]}
        toBody={(v) => ({
          user: {
            name: v["user.name"],
            display_name: v["user.display_name"],
            role: v["user.role"],
            ...(v["user.role"] === "ROLE_AGENT" ? { agent: v["user.agent"] } : {}),
            ...(v["user.role"] === "ROLE_SUPERVISOR" ? { queues: (v["user.queues"] || "").split(",").map((q) => q.trim()).filter(Boolean) } : {}),
          },
          password: v.password,
        })}
      >
        {(errors) => [
          <Field name="user.name" label={t("resourceName")} errors={errors} required />,
          <Field name="user.display_name" label={t("displayName")} errors={errors} />,
          <Field
            name="user.role"
            label={t("role")}
            errors={errors}
            options={[["ROLE_AGENT", t("roleAgent")], ["ROLE_SUPERVISOR", t("roleSupervisor")], ["ROLE_TENANT_ADMIN", t("roleAdmin")]]}
          />,
          <Field name="user.agent" label={t("agentName")} errors={errors} />,
          <Field name="user.queues" label={t("queuesWatched")} errors={errors} />,
          <Field name="password" label={t("password")} type="password" errors={errors} required />,
        ]}
      </Section>
      <Settings />
      <Hours />
      <Flows />
    </div>
  );
}
