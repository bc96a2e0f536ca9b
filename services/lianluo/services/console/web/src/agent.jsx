import { useEffect, useRef, useState } from "preact/hooks";
import { Transcript, WrapUp, applyFrame } from "./talk.jsx";
import { DirectoryPicker, Helper } from "./help.jsx";
import { api, live } from "./api.js";
import { openPhone } from "./phone.js";
import { t } from "./i18n.js";

// What the desk keeps across reloads and a new sign-in: the conversations it follows (with the
// last sequence seen of each) and the text not sent yet.
const KEPT = "lianluo:desk";

function kept() {
  try {
    return JSON.parse(sessionStorage.getItem(KEPT) || "{}");
  } catch {
    return {};
  }
}

function keep(state) {
  sessionStorage.setItem(KEPT, JSON.stringify(state));
}

function Countdown({ until }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  const left = Math.max(0, Math.round((Date.parse(until) - now) / 1000));
  return <span class="countdown">{t("expiresIn", { s: left })}</span>;
}

function Offer({ offer, onAnswer }) {
  const r = offer.requirements || {};
  const c = offer.candidate || {};
  const top = [...(c.features || [])]
    .sort((a, b) => Math.abs(b.contribution || 0) - Math.abs(a.contribution || 0))
    .slice(0, 3);
  return (
    <li class="offer" aria-label={`offer ${offer.id}`}>
      <div>
        <strong>{t("queue")}:</strong> {r.queue} {r.intent && <span>· {t("intent")}: {r.intent}</span>}
      </div>
      <div class="why">
        <strong>{t("why")}:</strong> {t("rank", { rank: c.rank || 1, score: (c.score || 0).toFixed(2) })}
        <ul>
          {top.map((f) => (
            <li>
              {f.name}: {(f.contribution || 0).toFixed(2)} {f.explanation && <span>({f.explanation})</span>}
            </li>
          ))}
        </ul>
      </div>
      {offer.expire_time && <Countdown until={offer.expire_time} />}
      <div class="actions">
        <button type="button" onClick={() => onAnswer(offer, true)}>
          {t("accept")}
        </button>
        <button type="button" class="secondary" onClick={() => onAnswer(offer, false)}>
          {t("decline")}
        </button>
      </div>
    </li>
  );
}

// A form the customer fills on a page of the gateway's (the answers come back as a message):
// a title, and one field per line, "name, label, type" (type: text, number, date, email, phone).
function FormBuilder({ talk, onSend, onCancel }) {
  const [fields, setFields] = useState({});
  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const lines = String(form.get("fields") || "").split("\n").map((l) => l.trim()).filter(Boolean);
    const parsed = lines.map((line) => {
      const [name, label, type] = line.split(",").map((x) => x.trim());
      return { name, label: label || name, type: type || "text", required: true };
    });
    try {
      await onSend({ title: form.get("title"), fields: parsed });
    } catch (refused) {
      setFields(refused.fields || { "form.title": refused.message });
    }
  }
  const errors = Object.entries(fields);
  return (
    <form class="place formbuilder" onSubmit={submit} aria-labelledby={`formb-${talk.id}`}>
      <h3 id={`formb-${talk.id}`}>{t("form")}</h3>
      <div class="field">
        <label for={`ftitle-${talk.id}`}>{t("formTitle")}</label>
        <input id={`ftitle-${talk.id}`} name="title" />
      </div>
      <div class="field">
        <label for={`ffields-${talk.id}`}>{t("formFields")}</label>
        <textarea id={`ffields-${talk.id}`} name="fields" rows="3" />
      </div>
      {errors.length > 0 && (
        <ul class="error">
          {errors.map(([k, v]) => (
            <li>{`${k}: ${v}`}</li>
          ))}
        </ul>
      )}
      <button type="submit">{t("send")}</button>
      <button type="button" class="secondary" onClick={onCancel}>
        {t("cancel")}
      </button>
    </form>
  );
}

// A place to send the customer (a branch, say): each channel shows it as it can.
function PlaceForm({ talk, onSend, onCancel }) {
  const [fields, setFields] = useState({});
  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    try {
      await onSend({
        latitude: Number(form.get("latitude")),
        longitude: Number(form.get("longitude")),
        label: form.get("label"),
      });
    } catch (refused) {
      setFields(refused.fields || { "location.label": refused.message });
    }
  }
  const field = (name, label, type = "text") => (
    <div class="field">
      <label for={`${name}-${talk.id}`}>{label}</label>
      <input id={`${name}-${talk.id}`} name={name} type={type} step="any" aria-invalid={fields[`location.${name}`] ? "true" : undefined} />
      {fields[`location.${name}`] && <span class="error">{fields[`location.${name}`]}</span>}
    </div>
  );
  return (
    <form class="place" onSubmit={submit} aria-labelledby={`place-${talk.id}`}>
      <h3 id={`place-${talk.id}`}>{t("place")}</h3>
      {field("label", t("placeLabel"))}
      {field("latitude", t("latitude"), "number")}
      {field("longitude", t("longitude"), "number")}
      <button type="submit">{t("send")}</button>
      <button type="button" class="secondary" onClick={onCancel}>
        {t("cancel")}
      </button>
    </form>
  );
}

// Hand the conversation to a queue, a named agent or an expert in a subject, with a note only
// staff see; "consult" keeps this agent in the conversation.
function TransferForm({ talk, onTransfer, onCancel }) {
  const [fields, setFields] = useState({});
  const [to, setTo] = useState("expertise");
  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    try {
      await onTransfer({
        to,
        target: form.get("target") || "",
        note: form.get("note"),
        stay: form.get("stay") === "on",
      });
    } catch (refused) {
      setFields(Object.keys(refused.fields || {}).length ? refused.fields : { target: refused.message });
    }
  }
  const error = (name) => fields[name] && <span class="error">{fields[name]}</span>;
  return (
    <form class="transfer" onSubmit={submit} aria-labelledby={`transfer-${talk.id}`}>
      <h3 id={`transfer-${talk.id}`}>{t("transfer")}</h3>
      <div class="field">
        <label for={`to-${talk.id}`}>{t("transferTo")}</label>
        <select id={`to-${talk.id}`} name="to" value={to} onChange={(e) => setTo(e.currentTarget.value)}>
          <option value="expertise">{t("toExpert")}</option>
          <option value="queue">{t("toQueue")}</option>
          <option value="agent_id">{t("toAgent")}</option>
        </select>
      </div>
      {to === "agent_id" ? (
        <DirectoryPicker id={`who-${talk.id}`} invalid={Boolean(fields.target)} />
      ) : (
        <div class="field">
          <label for={`target-${talk.id}`}>{t("target")}</label>
          <input id={`target-${talk.id}`} name="target" required aria-invalid={fields.target ? "true" : undefined} />
        </div>
      )}
      {error("target")}
      <div class="field">
        <label for={`tnote-${talk.id}`}>{t("note")}</label>
        <textarea id={`tnote-${talk.id}`} name="note" rows="2" />
        {error("note")}
      </div>
      <div class="check">
        <input id={`stay-${talk.id}`} type="checkbox" name="stay" />
        <label for={`stay-${talk.id}`}>{t("consult")}</label>
      </div>
      <button type="submit">{t("transfer")}</button>
      <button type="button" class="secondary" onClick={onCancel}>
        {t("cancel")}
      </button>
    </form>
  );
}

function CustomerPanel({ talk }) {
  const r = talk.requirements || {};
  const collected = Object.entries(r.collected_data || {});
  const history = r.customer_history || [];
  return (
    <aside class="customer" aria-labelledby={`customer-${talk.id}`}>
      <h3 id={`customer-${talk.id}`}>
        {t("customer")}: {talk.customerName || "—"}
      </h3>
      <h4>{t("collected")}</h4>
      <dl>
        {collected.map(([k, v]) => [<dt>{k}</dt>, <dd>{v}</dd>])}
      </dl>
      <h4>{t("history")}</h4>
      {history.length ? (
        <ul class="history">
          {history.map((h) => (
            <li>
              {String(h.channel || "").replace("CHANNEL_", "").toLowerCase()} · {(h.start_time || "").slice(0, 16).replace("T", " ")}
            </li>
          ))}
        </ul>
      ) : (
        <p>{t("noHistory")}</p>
      )}
    </aside>
  );
}

export function Desk({ me }) {
  const [presence, setPresence] = useState("offline");
  const [offers, setOffers] = useState({});
  const [talks, setTalks] = useState(() => kept().talks || {});
  const [selected, setSelected] = useState(() => kept().selected || "");
  const [connected, setConnected] = useState(true);
  const [error, setError] = useState("");
  const state = useRef({ talks });
  state.current.talks = talks;
  const link = useRef(null);
  // The phone in the browser: closed, opening, or open (and its connection's state).
  const phone = useRef(null);
  const speaker = useRef(null);
  const [phoneState, setPhoneState] = useState("off");

  async function togglePhone() {
    if (phone.current) {
      const open = phone.current;
      phone.current = null;
      setPhoneState("off");
      await open.close();
      return;
    }
    setPhoneState("connecting");
    try {
      phone.current = await openPhone(speaker.current, (s) => phone.current && setPhoneState(s));
      setError("");
    } catch (refused) {
      setPhoneState("off");
      setError(refused.message);
    }
  }

  useEffect(() => () => phone.current && phone.current.close(), []);

  useEffect(() => {
    keep({ talks, selected });
  }, [talks, selected]);

  function change(iid, fn) {
    setTalks((all) => (all[iid] ? { ...all, [iid]: fn({ ...all[iid] }) } : all));
  }

  function onFrame({ interaction, frame }) {
    const kind = Object.keys(frame).find((k) => !["interaction_id", "sequence", "time"].includes(k));
    if (!interaction) {
      if (kind === "offer") setOffers((all) => ({ ...all, [frame.offer.id]: frame.offer }));
      if (kind === "offer_closed") {
        setOffers((all) => {
          const { [frame.offer_closed.offer_id]: _, ...rest } = all;
          return rest;
        });
      }
      return;
    }
    change(interaction, (talk) => applyFrame(talk, frame, kind));
  }

  useEffect(() => {
    link.current = live(
      () =>
        Object.fromEntries(
          Object.entries(state.current.talks)
            .filter(([, v]) => !["INTERACTION_STATE_CLOSED", "HANDED_OVER"].includes(v.state))
            .map(([k, v]) => [k, v.seen || 0]),
        ),
      (kind, data) => kind === "frame" && onFrame(data),
      setConnected,
    );
    return () => link.current.close();
  }, []);

  async function setTo(value) {
    try {
      await api("POST", "/api/presence", { presence: value });
      setPresence(value);
      setError("");
    } catch (refused) {
      setError(refused.message);
    }
  }

  async function answer(offer, accept) {
    try {
      await api("POST", `/api/offers/${offer.id}`, { accept, reason: accept ? "" : "declined at the desk" });
    } catch (refused) {
      setError(refused.message);
      return;
    }
    setOffers((all) => {
      const { [offer.id]: _, ...rest } = all;
      return rest;
    });
    if (!accept) return;
    const iid = offer.interaction_id;
    const talk = { id: iid, seen: 0, items: [], participant: "", requirements: offer.requirements, draft: "", state: "INTERACTION_STATE_CONNECTED" };
    state.current.talks = { ...state.current.talks, [iid]: talk };
    setTalks(state.current.talks);
    setSelected(iid);
    link.current.reopen();
  }

  async function send(talk, event) {
    event.preventDefault();
    const text = (talk.draft || "").trim();
    if (!text) return;
    const id = "d" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    try {
      await api("POST", `/api/conversations/${talk.id}/messages`, { text, id, participant: talk.participant });
      change(talk.id, (x) => ({ ...x, draft: "" }));
    } catch (refused) {
      setError(refused.message);
    }
  }

  async function sendForm(talk, form) {
    const id = "q" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    await api("POST", `/api/conversations/${talk.id}/messages`, { form, id, participant: talk.participant });
    change(talk.id, (x) => ({ ...x, forming: false }));
  }

  async function sendPlace(talk, location) {
    const id = "p" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    await api("POST", `/api/conversations/${talk.id}/messages`, { location, id, participant: talk.participant });
    change(talk.id, (x) => ({ ...x, placing: false }));
  }

  async function transfer(talk, what) {
    await api("POST", `/api/conversations/${talk.id}/transfer`, { participant: talk.participant, ...what });
    change(talk.id, (x) => ({ ...x, transferring: false }));
  }

  async function attach(talk, chosen) {
    const id = "f" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    const response = await fetch(`/api/conversations/${talk.id}/files`, {
      method: "POST",
      headers: {
        "X-Requested-With": "lianluo",
        "Content-Type": chosen.type || "application/octet-stream",
        "X-Filename": encodeURIComponent(chosen.name),
        "X-Message-Id": id,
        "X-Participant": talk.participant,
      },
      body: chosen,
      credentials: "same-origin",
    });
    if (!response.ok) {
      const found = await response.json().catch(() => ({}));
      const fields = found.fields || {};
      setError(Object.values(fields)[0] || found.message || found.error || String(response.status));
    } else {
      setError("");
    }
  }

  async function end(talk) {
    try {
      await api("POST", `/api/conversations/${talk.id}/end`, { participant: talk.participant });
    } catch (refused) {
      setError(refused.message);
    }
  }

  // The call back the agent promised; it is offered to them when it is due.
  async function callBack(talk, number, due, note) {
    await api("POST", `/api/conversations/${talk.id}/callback`, { participant: talk.participant, number, due, note });
  }

  async function close(talk, disposition, note) {
    await api("POST", `/api/conversations/${talk.id}/end`, { participant: talk.participant, disposition, note });
    change(talk.id, (x) => ({ ...x, state: "INTERACTION_STATE_CLOSED" }));
  }

  const talk = talks[selected];
  const list = Object.values(offers);
  return (
    <div class="desk">
      <section class="side" aria-labelledby="presence-label">
        <div class="field">
          <label id="presence-label" for="presence">
            {t("presence")}
          </label>
          <select id="presence" value={presence} onChange={(e) => setTo(e.currentTarget.value)}>
            {["available", "away", "offline"].map((p) => (
              <option value={p}>{t(p)}</option>
            ))}
          </select>
        </div>
        <div class="field">
          <span id="phone-label">{t("phone")}</span>
          <button id="phone" type="button" aria-labelledby="phone-label phone" aria-pressed={phoneState === "off" ? "false" : "true"} onClick={togglePhone}>
            {phoneState === "off" ? t("phoneOn") : t("phoneOff")}
          </button>
          <p class="status" id="phone-state" role="status">
            {t(`phone_${phoneState}`)}
          </p>
          <audio ref={speaker} autoplay />
        </div>
        {!connected && <p class="status">{t("reconnecting")}</p>}
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <h2>{t("offers")}</h2>
        {list.length ? <ul class="offers">{list.map((o) => <Offer offer={o} onAnswer={answer} />)}</ul> : <p>{t("noOffers")}</p>}
        <h2>{t("conversations")}</h2>
        <ul class="talks">
          {Object.values(talks).map((x) => (
            <li>
              <button type="button" aria-pressed={x.id === selected ? "true" : "false"} onClick={() => setSelected(x.id)}>
                {x.customerName || x.id.slice(0, 8)} {x.state === "INTERACTION_STATE_WRAP_UP" ? `· ${t("wrapUp")}` : ""}
              </button>
            </li>
          ))}
        </ul>
      </section>
      {talk ? (
        <section class="talk" aria-label={t("conversations")}>
          <Transcript talk={talk} />
          {talk.typing && <p class="status">{t("typing")}</p>}
          {talk.state === "INTERACTION_STATE_CONNECTED" && (
            <form class="composer" onSubmit={(e) => send(talk, e)}>
              <label for={`draft-${talk.id}`} class="visually-hidden">
                {t("message")}
              </label>
              <textarea
                id={`draft-${talk.id}`}
                rows="2"
                value={talk.draft || ""}
                onInput={(e) => {
                  const value = e.currentTarget.value;
                  change(talk.id, (x) => ({ ...x, draft: value }));
                }}
              />
              <button type="submit">{t("send")}</button>
              <label class="attach">
                {t("attach")}
                <input
                  type="file"
                  class="visually-hidden"
                  accept="image/*,application/pdf,text/plain"
                  onChange={(e) => {
                    const chosen = e.currentTarget.files && e.currentTarget.files[0];
                    e.currentTarget.value = "";
                    if (chosen) attach(talk, chosen);
                  }}
                />
              </label>
              <button type="button" class="secondary" onClick={() => change(talk.id, (x) => ({ ...x, placing: true }))}>
                {t("place")}
              </button>
              <button type="button" class="secondary" onClick={() => change(talk.id, (x) => ({ ...x, forming: true }))}>
                {t("form")}
              </button>
              <button
                type="button"
                class="secondary"
                onClick={() => change(talk.id, (x) => ({ ...x, transferring: true }))}
              >
                {t("transfer")}
              </button>
              <button type="button" class="secondary" onClick={() => end(talk)}>
                {t("end")}
              </button>
            </form>
          )}
          {talk.state === "INTERACTION_STATE_CONNECTED" && talk.forming && (
            <FormBuilder
              talk={talk}
              onSend={(form) => sendForm(talk, form)}
              onCancel={() => change(talk.id, (x) => ({ ...x, forming: false }))}
            />
          )}
          {talk.state === "INTERACTION_STATE_CONNECTED" && talk.placing && (
            <PlaceForm
              talk={talk}
              onSend={(location) => sendPlace(talk, location)}
              onCancel={() => change(talk.id, (x) => ({ ...x, placing: false }))}
            />
          )}
          {talk.state === "INTERACTION_STATE_CONNECTED" && talk.transferring && (
            <TransferForm
              talk={talk}
              onTransfer={(what) => transfer(talk, what)}
              onCancel={() => change(talk.id, (x) => ({ ...x, transferring: false }))}
            />
          )}
          {talk.state === "INTERACTION_STATE_WRAP_UP" && <WrapUp talk={talk} onClose={(d, n) => close(talk, d, n)} onCallBack={(number, due, note) => callBack(talk, number, due, note)} />}
        </section>
      ) : (
        <p class="talk">{t("noConversation")}</p>
      )}
      {talk && <CustomerPanel talk={talk} />}
      {talk && talk.state === "INTERACTION_STATE_CONNECTED" && (
        <Helper
          talk={talk}
          onInsert={(text) => change(talk.id, (x) => ({ ...x, draft: x.draft ? `${x.draft}\n${text}` : text }))}
        />
      )}
    </div>
  );
}
