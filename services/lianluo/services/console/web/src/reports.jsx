import { useState } from "preact/hooks";
import { api } from "./api.js";
import { t } from "./i18n.js";

// Historical reports: any range of days (UTC), by queue, agent or channel; a table, a chart of
// answered and abandoned contacts, and the same figures as CSV.
const today = () => new Date().toISOString().slice(0, 10);
const fixed = (n) => (n || 0).toFixed(1);

function Chart({ rows }) {
  const most = Math.max(1, ...rows.map((r) => (r.answered || 0) + (r.abandoned || 0)));
  const height = 22;
  const label = rows.map((r) => `${r.key}: ${r.answered || 0} ${t("answered")}, ${r.abandoned || 0} ${t("abandonedCount")}`).join("; ");
  return (
    <svg class="chart" role="img" aria-label={label} viewBox={`0 0 400 ${rows.length * height + 4}`} width="100%">
      {rows.map((r, i) => {
        const answered = ((r.answered || 0) / most) * 260;
        const abandoned = ((r.abandoned || 0) / most) * 260;
        const y = i * height + 2;
        return (
          <g>
            <text x="0" y={y + 15} font-size="12">
              {r.key.replace("CHANNEL_", "").toLowerCase().slice(0, 18)}
            </text>
            <rect x="130" y={y + 3} width={answered} height="14" fill="#0b5cad" />
            <rect x={130 + answered} y={y + 3} width={abandoned} height="14" fill="#b00020" />
          </g>
        );
      })}
    </svg>
  );
}

export function Reports() {
  const [query, setQuery] = useState({ from: today(), to: today(), group_by: "queue" });
  const [found, setFound] = useState(null);
  const [fields, setFields] = useState({});
  const params = () => new URLSearchParams(query).toString();

  async function run(event) {
    event.preventDefault();
    try {
      setFound(await api("GET", `/api/reports?${params()}`));
      setFields({});
    } catch (refused) {
      setFound(null);
      setFields(Object.keys(refused.fields || {}).length ? refused.fields : { from: refused.message });
    }
  }

  const input = (name, type) => (
    <div class="field">
      <label for={`report-${name}`}>{t(`report_${name}`)}</label>
      <input
        id={`report-${name}`}
        type={type}
        value={query[name]}
        aria-invalid={fields[name] ? "true" : undefined}
        onInput={(e) => setQuery({ ...query, [name]: e.currentTarget.value })}
      />
      {fields[name] && <span class="error">{fields[name]}</span>}
    </div>
  );
  const rows = (found && found.rows) || [];
  return (
    <section class="reports" aria-labelledby="reports-title">
      <h2 id="reports-title">{t("reports")}</h2>
      <form class="report-query" onSubmit={run}>
        {input("from", "date")}
        {input("to", "date")}
        <div class="field">
          <label for="report-group">{t("groupBy")}</label>
          <select id="report-group" value={query.group_by} onChange={(e) => setQuery({ ...query, group_by: e.currentTarget.value })}>
            <option value="queue">{t("queue")}</option>
            <option value="agent">{t("roleAgent")}</option>
            <option value="channel">{t("channel")}</option>
          </select>
          {fields.group_by && <span class="error">{fields.group_by}</span>}
        </div>
        <button type="submit">{t("show")}</button>
      </form>
      {found && (
        <div>
          <table>
            <thead>
              <tr>
                <th scope="col">{t(query.group_by === "agent" ? "roleAgent" : query.group_by)}</th>
                <th scope="col">{t("entered")}</th>
                <th scope="col">{t("answeredCol")}</th>
                <th scope="col">{t("abandonedCol")}</th>
                <th scope="col">{t("serviceLevel")}</th>
                <th scope="col">{t("asa")}</th>
                <th scope="col">{t("aht")}</th>
                <th scope="col">{t("abandoned")}</th>
                <th scope="col">{t("rated")}</th>
                <th scope="col">{t("csat")}</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr data-key={r.key}>
                  <th scope="row">{r.key}</th>
                  <td data-figure="entered">{r.entered || 0}</td>
                  <td data-figure="answered">{r.answered || 0}</td>
                  <td>{r.abandoned || 0}</td>
                  <td>{fixed(r.service_level_percent)}</td>
                  <td>{fixed(r.asa_seconds)}</td>
                  <td>{fixed(r.aht_seconds)}</td>
                  <td>{fixed(r.abandonment_percent)}</td>
                  <td>{r.rated || 0}</td>
                  <td data-figure="csat">{fixed(r.csat_average)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {rows.length > 0 && <Chart rows={rows} />}
          <p>
            <a href={`/api/reports.csv?${params()}`} download>
              {t("downloadCsv")}
            </a>
          </p>
        </div>
      )}
    </section>
  );
}
