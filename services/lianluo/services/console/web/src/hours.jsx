import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { t } from "./i18n.js";

// The tenant's business hours and routing policy. Hours are a form: a time zone, each day's
// windows as "09:00-12:00, 13:00-18:00" (empty: closed all day), and one holiday per line as
// "2026-10-01 National Day". The routing policy is the API's JSON. The tenants service checks
// both with the rules the IVR and the ACD use, and nothing is saved when it refuses either.
const DAYS = [1, 2, 3, 4, 5, 6, 7];

function windowsOf(hours) {
  const byDay = Object.fromEntries(DAYS.map((d) => [d, []]));
  for (const w of hours.weekly || []) (byDay[w.day] || []).push(`${w.opens}-${w.closes}`);
  return Object.fromEntries(DAYS.map((d) => [d, byDay[d].join(", ")]));
}

function holidaysOf(hours) {
  return (hours.holidays || []).map((h) => `${h.date} ${h.name || ""}`.trim()).join("\n");
}

function hoursFrom(zone, windows, holidays) {
  const weekly = [];
  for (const day of DAYS) {
    for (const part of (windows[day] || "").split(",").map((p) => p.trim()).filter(Boolean)) {
      const [opens, closes] = part.split("-").map((x) => (x || "").trim());
      weekly.push({ day, opens, closes: closes || "" });
    }
  }
  const dates = holidays
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [date, ...name] = line.split(/\s+/);
      return { date, name: name.join(" ") };
    });
  return { time_zone: zone, weekly, holidays: dates };
}

export function Hours() {
  const [zone, setZone] = useState("");
  const [windows, setWindows] = useState(Object.fromEntries(DAYS.map((d) => [d, ""])));
  const [holidays, setHolidays] = useState("");
  const [policy, setPolicy] = useState("{}");
  const [errors, setErrors] = useState({});
  const [saved, setSaved] = useState(false);

  function show(found) {
    const hours = found.business_hours || {};
    setZone(hours.time_zone || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
    setWindows(windowsOf(hours));
    setHolidays(holidaysOf(hours));
    setPolicy(JSON.stringify(found.routing_policy || {}, null, 2));
  }
  useEffect(() => {
    api("GET", "/api/admin/tenant").then(show);
  }, []);

  async function save(event) {
    event.preventDefault();
    setSaved(false);
    let routing;
    try {
      routing = JSON.parse(policy);
    } catch (bad) {
      setErrors({ "tenant.routing_policy": t("notJson", { reason: bad.message }) });
      return;
    }
    try {
      const body = { business_hours: hoursFrom(zone, windows, holidays), routing_policy: routing };
      show(await api("POST", "/api/admin/tenant", body));
      setErrors({});
      setSaved(true);
    } catch (refused) {
      setErrors(Object.keys(refused.fields || {}).length ? refused.fields : { _: refused.message });
    }
  }

  const bad = (prefix) => Object.keys(errors).some((k) => k.startsWith(prefix));
  return (
    <section class="admin-section" aria-labelledby="hours-title">
      <h2 id="hours-title">{t("hoursAndRouting")}</h2>
      <form onSubmit={save} data-kind="tenant">
        <div class="field">
          <label for="hours-zone">{t("timeZone")}</label>
          <input
            id="hours-zone"
            value={zone}
            aria-invalid={bad("tenant.business_hours.time_zone") ? "true" : undefined}
            onInput={(e) => setZone(e.currentTarget.value)}
          />
        </div>
        <fieldset>
          <legend>{t("openingHours")}</legend>
          {DAYS.map((day) => (
            <div class="field">
              <label for={`hours-day-${day}`}>{t(`day${day}`)}</label>
              <input
                id={`hours-day-${day}`}
                placeholder="09:00-18:00"
                value={windows[day]}
                onInput={(e) => setWindows({ ...windows, [day]: e.currentTarget.value })}
              />
            </div>
          ))}
        </fieldset>
        <div class="field">
          <label for="hours-holidays">{t("holidays")}</label>
          <textarea
            id="hours-holidays"
            rows="3"
            placeholder="2026-10-01 National Day"
            value={holidays}
            aria-invalid={bad("tenant.business_hours.holidays") ? "true" : undefined}
            onInput={(e) => setHolidays(e.currentTarget.value)}
          />
        </div>
        <div class="field">
          <label for="hours-policy">{t("routingPolicy")}</label>
          <textarea
            id="hours-policy"
            rows="8"
            spellcheck={false}
            value={policy}
            aria-invalid={bad("tenant.routing_policy") ? "true" : undefined}
            onInput={(e) => setPolicy(e.currentTarget.value)}
          />
        </div>
        <ul class="error" id="hours-errors" role="alert">
          {Object.entries(errors).map(([k, v]) => (
            <li>{k === "_" ? v : `${k}: ${v}`}</li>
          ))}
        </ul>
        <button type="submit">{t("save")}</button>
        {saved && <p role="status">{t("saved")}</p>}
      </form>
    </section>
  );
}
