import { useEffect, useRef, useState } from "preact/hooks";
import { api, live } from "./api.js";
import { t } from "./i18n.js";
import { Transcript, WrapUp, applyFrame } from "./talk.jsx";

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
// An agent away or busy this long is flagged on the wall.
const LONG_MINUTES = 15;
const since = (a) => (a.change_time ? Math.floor((Date.now() - Date.parse(a.change_time)) / 60000) : 0);
const presenceName = (a) => (a.presence || "PRESENCE_OFFLINE").replace("PRESENCE_", "").toLowerCase();
const stuck = (a) => ["away", "busy", "wrap_up"].includes(presenceName(a)) && since(a) >= LONG_MINUTES;

function Agents({ agents, onPresence }) {
  return (
    <div>
      <h2 id="agents-title">{t("agents")}</h2>
      <table aria-labelledby="agents-title" class="agents">
        <thead>
          <tr>
            <th scope="col">{t("resourceName")}</th>
            <th scope="col">{t("presence")}</th>
            <th scope="col">{t("minutes")}</th>
            <th scope="col">{t("load")}</th>
            <th scope="col">{t("setPresence")}</th>
          </tr>
        </thead>
        <tbody>
          {agents.map((a) => (
            <tr class={stuck(a) ? "alert" : ""} data-agent={a.agent_id}>
              <th scope="row">
                {a.name} {stuck(a) && <span class="badge">{t("alert")}</span>}
              </th>
              <td data-figure="presence">{t(presenceName(a))}</td>
              <td>{since(a)}</td>
              <td>{(a.load || []).map((l) => `${l.in_use || 0}/${l.max_concurrent || 0}`).join(", ")}</td>
              <td>
                <label class="visually-hidden" for={`presence-${a.agent_id}`}>
                  {t("setPresence")} {a.name}
                </label>
                <select id={`presence-${a.agent_id}`} value={presenceName(a)} onChange={(e) => onPresence(a, e.currentTarget.value)}>
                  {["available", "away", "offline", "busy", "wrap_up"].map((p) => (
                    <option value={p} disabled={!["available", "away", "offline"].includes(p)}>
                      {t(p)}
                    </option>
                  ))}
                </select>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

// A supervisor monitors a live conversation unseen (no one else knows), or joins it (media
// adds them as a participant, which every side sees) to whisper to the agent or speak to all:
// barging in. Either way they read it from the start.
function Joined({ talk, onSend, onJoin, onTakeOver, onClose }) {
  const [draft, setDraft] = useState("");
  const [whisper, setWhisper] = useState(true);
  return (
    <section class="talk joined" aria-label={t("joinedConversation")}>
      <h3>
        {t("customer")}: {talk.customerName || talk.id.slice(0, 8)}
        {talk.monitor && <span class="status"> · {t("monitoring")}</span>}
      </h3>
      <Transcript talk={talk} />
      {talk.monitor ? (
        <button type="button" onClick={onJoin}>
          {t("join")}
        </button>
      ) : (
        <form
          class="composer"
          onSubmit={(e) => {
            e.preventDefault();
            if (draft.trim()) onSend(draft.trim(), whisper).then(() => setDraft(""));
          }}
        >
          <label for={`wall-draft-${talk.id}`} class="visually-hidden">
            {t("message")}
          </label>
          <textarea id={`wall-draft-${talk.id}`} rows="2" value={draft} onInput={(e) => setDraft(e.currentTarget.value)} />
          <div class="check">
            <input id={`whisper-${talk.id}`} type="checkbox" name="whisper" checked={whisper} onChange={(e) => setWhisper(e.currentTarget.checked)} />
            <label for={`whisper-${talk.id}`}>{t("whisper")}</label>
          </div>
          <button type="submit">{t("send")}</button>
          {talk.participant && !talk.tookOver && talk.state === "INTERACTION_STATE_CONNECTED" && (
            <button type="button" class="secondary" onClick={onTakeOver}>
              {t("takeOver")}
            </button>
          )}
        </form>
      )}
      {talk.tookOver && !["INTERACTION_STATE_CLOSED", "INTERACTION_STATE_ABANDONED"].includes(talk.state) && (
        <WrapUp talk={talk} onClose={onClose} />
      )}
    </section>
  );
}

export function Wall() {
  const [queues, setQueues] = useState([]);
  const [conversations, setConversations] = useState([]);
  const [agents, setAgents] = useState([]);
  const [joined, setJoined] = useState({});
  const [error, setError] = useState("");
  const [connected, setConnected] = useState(true);
  const state = useRef({ joined });
  state.current.joined = joined;
  const link = useRef(null);
  useEffect(() => {
    link.current = live(
      () =>
        Object.fromEntries(
          // A value with ":m" monitors the conversation.
          Object.values(state.current.joined).map((x) => [x.id, `${x.seen || 0}${x.monitor ? ":m" : ""}`]),
        ),
      (kind, data) => {
        if (kind === "queues") setQueues(data.queues || []);
        if (kind === "conversations") setConversations(data.conversations || []);
        if (kind === "agents") setAgents(data.agents || []);
        if (kind === "frame" && data.interaction) {
          const fk = Object.keys(data.frame).find((k) => !["interaction_id", "sequence", "time"].includes(k));
          setJoined((all) =>
            all[data.interaction] ? { ...all, [data.interaction]: applyFrame({ ...all[data.interaction] }, data.frame, fk) } : all,
          );
        }
      },
      setConnected,
    );
    return () => link.current.close();
  }, []);

  function follow(c, monitor) {
    const talk = { id: c.id, seen: 0, items: [], participant: "", customerName: c.customer || c.customerName, monitor };
    state.current.joined = { ...state.current.joined, [c.id]: talk };
    setJoined(state.current.joined);
    link.current.reopen();
  }

  async function setPresence(agent, presence) {
    try {
      await api("POST", `/api/agents/${agent.agent_id}/presence`, { presence });
      setError("");
    } catch (refused) {
      setError(refused.message);
    }
  }

  // Take the conversation from its agents: they leave, the supervisor answers alone and
  // closes it with the disposition.
  async function takeOver(talk) {
    try {
      await api("POST", `/api/conversations/${talk.id}/take-over`, { participant: talk.participant });
      setJoined((all) => ({ ...all, [talk.id]: { ...all[talk.id], tookOver: true } }));
      setError("");
    } catch (refused) {
      setError(refused.message);
    }
  }

  async function close(talk, disposition, note) {
    await api("POST", `/api/conversations/${talk.id}/end`, { participant: talk.participant, disposition, note });
    setJoined((all) => ({ ...all, [talk.id]: { ...all[talk.id], state: "INTERACTION_STATE_CLOSED" } }));
  }

  async function send(talk, text, whisper) {
    const id = "s" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    try {
      await api("POST", `/api/conversations/${talk.id}/messages`, { text, id, participant: talk.participant, whisper });
      setError("");
    } catch (refused) {
      setError(refused.message);
    }
  }

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
      <Agents agents={agents} onPresence={setPresence} />
      <h2 id="conversations-title">{t("liveConversations")}</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <table aria-labelledby="conversations-title" class="conversations">
        <thead>
          <tr>
            <th scope="col">{t("customer")}</th>
            <th scope="col">{t("queue")}</th>
            <th scope="col">{t("state")}</th>
            <th scope="col">{t("agents")}</th>
            <th scope="col">
              <span class="visually-hidden">{t("join")}</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {conversations.map((c) => (
            <tr data-interaction={c.id}>
              <th scope="row">{c.customer}</th>
              <td>{c.queue}</td>
              <td>{c.state.replace("INTERACTION_STATE_", "").toLowerCase()}</td>
              <td>{c.agents.join(", ")}</td>
              <td>
                {!joined[c.id] && (
                  <span class="actions">
                    <button type="button" class="secondary" onClick={() => follow(c, true)}>
                      {t("monitor")}
                    </button>
                    <button type="button" onClick={() => follow(c, false)}>
                      {t("join")}
                    </button>
                  </span>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {Object.values(joined).map((talk) => (
        <Joined
          talk={talk}
          onSend={(text, whisper) => send(talk, text, whisper)}
          onJoin={() => follow(talk, false)}
          onTakeOver={() => takeOver(talk)}
          onClose={(d, n) => close(talk, d, n)}
        />
      ))}
    </section>
  );
}
