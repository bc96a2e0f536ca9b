import { useEffect, useState } from "preact/hooks";
import { live } from "./api.js";
import { t } from "./i18n.js";

// The wall: every watched queue's figures, live. A queue whose longest wait passes its
// service-level threshold, or whose service level is under target, is flagged.
function alerting(q) {
  const sl = q.service_level || {};
  const threshold = sl.threshold_seconds || 0;
  const target = sl.target_percent || 0;
  const over = threshold && (q.longest_wait_seconds || 0) > threshold;
  const under = target && (q.answered || 0) + (q.abandoned || 0) > 0 && (q.service_level_percent || 0) < target;
  return Boolean(over || under);
}

const fixed = (n) => (n || 0).toFixed(1);

export function Wall() {
  const [queues, setQueues] = useState([]);
  const [connected, setConnected] = useState(true);
  useEffect(() => {
    const link = live(
      () => ({}),
      (kind, data) => kind === "queues" && setQueues(data.queues || []),
      setConnected,
    );
    return () => link.close();
  }, []);
  return (
    <section class="wall" aria-labelledby="queues-title">
      <h2 id="queues-title">{t("queues")}</h2>
      {!connected && <p class="status">{t("reconnecting")}</p>}
      <table>
        <thead>
          <tr>
            <th scope="col">{t("queue")}</th>
            <th scope="col">{t("waiting")}</th>
            <th scope="col">{t("longest")}</th>
            <th scope="col">{t("serviceLevel")}</th>
            <th scope="col">{t("asa")}</th>
            <th scope="col">{t("abandoned")}</th>
            <th scope="col">{t("agentsAvailable")}</th>
            <th scope="col">{t("agentsBusy")}</th>
          </tr>
        </thead>
        <tbody>
          {queues.map((q) => (
            <tr class={alerting(q) ? "alert" : ""} data-queue={q.queue}>
              <th scope="row">
                {q.queue} {alerting(q) && <span class="badge">{t("alert")}</span>}
              </th>
              <td data-figure="waiting">{q.waiting || 0}</td>
              <td>{q.longest_wait_seconds || 0}</td>
              <td>{fixed(q.service_level_percent)}</td>
              <td>{fixed(q.asa_seconds)}</td>
              <td>{fixed(q.abandonment_percent)}</td>
              <td>{q.agents_available || 0}</td>
              <td>{q.agents_busy || 0}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
