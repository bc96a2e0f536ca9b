import { api, seq } from "./api.js";
import { t } from "./i18n.js";
import { useEffect, useRef, useState } from "preact/hooks";

// What the desk and the wall share of a conversation: how a frame of media's stream changes
// it, what a message says as text, and its transcript.
export function said(content) {
  if (!content) return "";
  if (content.text) return content.text;
  if (content.image) return `[${content.image.name}]`;
  if (content.file) return `[${content.file.name}]`;
  if (content.location) return `[${content.location.label || ""} ${content.location.latitude},${content.location.longitude}]`;
  if (content.form) return (content.form.fields || []).map((f) => `${f.label || f.name}: ${f.value || ""}`).join("\n");
  return "";
}

// A file of the conversation opens through a link the gateway signs for a few minutes.
export async function openFile(file) {
  const link = await api("GET", `/api/attachments/${file.id}`);
  window.open(link.url, "_blank", "noopener");
}

// The conversation after one frame of its stream (the frame's kind given); a frame seen
// already (by sequence) changes nothing.
export function applyFrame(talk, frame, kind) {
    const n = seq(frame);
    if (n && n <= talk.seen) return talk;
    if (n) talk.seen = n;
    talk.items = [...talk.items];
    if (kind === "joined") {
      talk.participant = frame.joined.participant_id;
      const it = frame.joined.interaction || {};
      talk.customerName = (it.customer && (it.customer.display_name || it.customer.id)) || talk.customerName;
    } else if (kind === "message") {
      const m = frame.message;
      const file = m.content && (m.content.image || m.content.file);
      const stored = file && /^attachment:/.test(file.uri || "") ? file.uri.slice(11) : "";
      talk.items.push({
        kind: "message",
        seq: n,
        text: said(m.content),
        mine: m.sender_participant_id === talk.participant,
        whisper: Boolean(m.whisper),
        file: stored ? { id: stored, name: file.name } : null,
      });
      if (m.sender_participant_id !== talk.participant) talk.typing = false;
    } else if (kind === "typing") {
      if (frame.typing.participant_id !== talk.participant) talk.typing = frame.typing.active;
    } else if (kind === "read") {
      if (frame.read.participant_id !== talk.participant) talk.readUpto = Number(frame.read.sequence);
    } else if (kind === "state_changed") {
      talk.state = frame.state_changed.to_state;
    } else if (kind === "participant_left") {
      const who = frame.participant_left;
      if (who.id === talk.participant) talk.state = "HANDED_OVER";
      talk.items.push({ kind: "note", seq: n, text: `${who.display_name || who.role} left` });
    } else if (kind === "participant_joined") {
      const who = frame.participant_joined;
      if (who.id !== talk.participant && who.role !== "PARTICIPANT_ROLE_CUSTOMER") {
        talk.items.push({ kind: "note", seq: n, text: `${who.display_name || who.role} joined` });
      }
    } else if (kind === "transfer") {
      const x = frame.transfer;
      const to = x.queue || x.agent_id || (x.expert && (x.expert.expertise || x.expert.agent_id)) || "";
      talk.items.push({ kind: "note", seq: n, text: t("transferNote", { to, note: x.note || "" }) });
    } else if (kind === "ended") {
      talk.state = "INTERACTION_STATE_CLOSED";
      talk.items.push({ kind: "note", seq: n, text: t("ended", { code: (frame.ended.resolution || {}).code || "" }) });
    }
  return talk;
}

export function Transcript({ talk }) {
  const list = useRef(null);
  useEffect(() => {
    if (list.current) list.current.scrollTop = list.current.scrollHeight;
  });
  return (
    <ol class="transcript" ref={list} aria-live="polite" aria-label={t("conversations")}>
      {talk.items.map((item) =>
        item.kind === "message" ? (
          <li class={`${item.mine ? "mine" : "theirs"}${item.whisper ? " whisper" : ""}`} data-seq={item.seq}>
            {item.whisper && <span class="whisper-label">{t("whispered")} </span>}
            {item.file ? (
              <button type="button" class="link" onClick={() => openFile(item.file)}>
                {item.file.name}
              </button>
            ) : (
              item.text
            )}
            {item.mine && talk.readUpto >= item.seq && <span class="read"> · {t("read")}</span>}
          </li>
        ) : (
          <li class="note" data-seq={item.seq}>
            {item.text}
          </li>
        ),
      )}
    </ol>
  );
}


const DISPOSITIONS = ["resolved", "follow_up", "not_resolved", "callback", "spam"];

// How the conversation went: the disposition drives the closed-loop notice.
export function WrapUp({ talk, onClose, onCallBack }) {
  const [fields, setFields] = useState({});
  const [disposition, setDisposition] = useState(DISPOSITIONS[0]);
  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const chosen = form.get("disposition");
    try {
      // A promised call back is scheduled first: refused, nothing is closed.
      if (chosen === "callback" && onCallBack) {
        const when = form.get("due") ? new Date(form.get("due")).toISOString() : "";
        await onCallBack(form.get("number"), when, form.get("note"));
      }
      await onClose(chosen, form.get("note"));
    } catch (refused) {
      setFields(Object.keys(refused.fields || {}).length ? refused.fields : { disposition: refused.message });
    }
  }
  const error = (name) =>
    fields[name] && (
      <span class="error" id={`${name}-${talk.id}-error`}>
        {fields[name]}
      </span>
    );
  return (
    <form class="wrapup" onSubmit={submit} aria-labelledby={`wrap-${talk.id}`}>
      <h3 id={`wrap-${talk.id}`}>{t("wrapUp")}</h3>
      <div class="field">
        <label for={`disposition-${talk.id}`}>{t("disposition")}</label>
        <select
          id={`disposition-${talk.id}`}
          name="disposition"
          value={disposition}
          onChange={(e) => setDisposition(e.currentTarget.value)}
          aria-invalid={fields.disposition ? "true" : undefined}
        >
          {DISPOSITIONS.map((d) => (
            <option value={d}>{t(d)}</option>
          ))}
        </select>
        {error("disposition")}
      </div>
      {disposition === "callback" && onCallBack && [
        <div class="field">
          <label for={`number-${talk.id}`}>{t("callbackNumber")}</label>
          <input
            id={`number-${talk.id}`}
            name="number"
            type="tel"
            placeholder="+8613800000000"
            aria-invalid={fields.callback_number ? "true" : undefined}
          />
          {error("callback_number")}
        </div>,
        <div class="field">
          <label for={`due-${talk.id}`}>{t("callbackWhen")}</label>
          <input id={`due-${talk.id}`} name="due" type="datetime-local" aria-invalid={fields.due_time ? "true" : undefined} />
          {error("due_time")}
        </div>,
      ]}
      <div class="field">
        <label for={`note-${talk.id}`}>{t("note")}</label>
        <textarea id={`note-${talk.id}`} name="note" rows="2" aria-invalid={fields.note ? "true" : undefined} />
        {error("note")}
      </div>
      <button type="submit">{t("close")}</button>
    </form>
  );
}

