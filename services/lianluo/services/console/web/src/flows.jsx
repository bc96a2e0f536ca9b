import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { t } from "./i18n.js";
import { FlowDrawing } from "./flowdraw.jsx";

// The IVR flow editor: the flow as JSON, checked by the IVR (ValidateFlow) and played against
// scripted answers (SimulateFlow) before it is published as a new version.
const EXAMPLE = {
  name: "main",
  entry_node: "welcome",
  nodes: [
    { id: "welcome", prompt: { text: "Welcome.", next: "menu" } },
    {
      id: "menu",
      menu: {
        prompt: "A lost card, or a payment question?",
        choices: [
          { digit: "1", label: "Lost card", keywords: ["card", "lost"], next: "route" },
          { digit: "2", label: "Payments", keywords: ["payment"], next: "route" },
        ],
        no_match_next: "bye",
      },
    },
    { id: "route", route_to_queue: { queue: "cards" } },
    { id: "bye", end: { text: "Goodbye." } },
  ],
};

function outcome(run) {
  if (run.routed) return t("routedTo", { queue: (run.routed.requirements || {}).queue || run.routed.queue || "" });
  if (run.ended) return t("endedWith", { text: run.ended.text || "" });
  if (run.stopped) return t("stoppedAt", { reason: run.stopped.detail || run.stopped.reason || "" });
  return "";
}

export function Flows() {
  const [flows, setFlows] = useState([]);
  const [source, setSource] = useState(JSON.stringify(EXAMPLE, null, 2));
  const [answers, setAnswers] = useState("1");
  const [result, setResult] = useState(null);
  const [error, setError] = useState("");
  const [published, setPublished] = useState("");
  const load = () => api("GET", "/api/admin/flows").then((r) => setFlows(r.flows || []));
  useEffect(() => {
    load();
  }, []);

  function parsed() {
    try {
      return JSON.parse(source);
    } catch (bad) {
      setError(t("notJson", { reason: bad.message }));
      return null;
    }
  }

  async function check() {
    const flow = parsed();
    if (!flow) return;
    setPublished("");
    try {
      const inputs = answers.split(",").map((a) => a.trim()).filter(Boolean);
      setResult(await api("POST", "/api/admin/flows/check", { flow, inputs }));
      setError("");
    } catch (refused) {
      setError(Object.values(refused.fields || {})[0] || refused.message);
    }
  }

  async function publish() {
    const flow = parsed();
    if (!flow) return;
    try {
      const stored = await api("POST", "/api/admin/flows/publish", { flow });
      setPublished(t("publishedVersion", { name: stored.name, version: stored.version }));
      setError("");
      load();
    } catch (refused) {
      setPublished("");
      setError(t("notPublished"));
      const body = refused.validation ? { validation: refused.validation, simulation: null } : null;
      if (body) setResult(body);
    }
  }

  const problems = (result && result.validation && result.validation.problems) || [];
  // The drawing follows the JSON while it parses; a typing slip leaves the last good one.
  let drawn = null;
  try {
    const found = JSON.parse(source);
    if (found && Array.isArray(found.nodes)) drawn = found;
  } catch {
    drawn = null;
  }
  const run = result && result.simulation;
  return (
    <section class="admin-section flows" aria-labelledby="flows-title">
      <h2 id="flows-title">{t("flows")}</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">{t("resourceName")}</th>
            <th scope="col">{t("version")}</th>
          </tr>
        </thead>
        <tbody>
          {flows.map((f) => (
            <tr data-name={f.name}>
              <td>{f.name}</td>
              <td>{f.version}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {drawn && (
        <FlowDrawing
          flow={drawn}
          problems={problems}
          onChange={(changed) => setSource(JSON.stringify(changed, null, 2))}
        />
      )}
      <div class="field">
        <label for="flow-source">{t("flowJson")}</label>
        <textarea id="flow-source" rows="14" spellcheck={false} value={source} onInput={(e) => setSource(e.currentTarget.value)} />
      </div>
      <div class="field">
        <label for="flow-answers">{t("answers")}</label>
        <input id="flow-answers" value={answers} onInput={(e) => setAnswers(e.currentTarget.value)} />
      </div>
      <div class="actions">
        <button type="button" onClick={check}>
          {t("check")}
        </button>
        <button type="button" onClick={publish}>
          {t("publish")}
        </button>
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {published && <p role="status">{published}</p>}
      {result && (
        <div class="flow-result">
          <h3>{t("problems")}</h3>
          {problems.length ? (
            <ul class="problems">
              {problems.map((p) => (
                <li class={p.severity === "SEVERITY_ERROR" ? "error" : ""}>
                  {p.node_id && <code>{p.node_id}</code>} {p.field && <code>{p.field}</code>} {p.reason}
                </li>
              ))}
            </ul>
          ) : (
            <p class="valid">{t("noProblems")}</p>
          )}
          {run && (
            <div class="simulation">
              <h3>{t("simulation")}</h3>
              <ol>
                {(run.steps || []).map((s) => (
                  <li>
                    <code>{s.node_id}</code> {s.prompt ? s.prompt.text : s.input ? `> ${s.input.text || ""}` : Object.keys(s).find((k) => !["index", "node_id"].includes(k))}
                  </li>
                ))}
              </ol>
              <p class="outcome">{outcome(run)}</p>
            </div>
          )}
        </div>
      )}
    </section>
  );
}
