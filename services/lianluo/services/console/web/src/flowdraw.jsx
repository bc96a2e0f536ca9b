import { useState } from "preact/hooks";
import { t } from "./i18n.js";

// The flow drawn: one box per node, in columns by distance from the entry, and an arrow for
// every way on. Choosing a box opens its fields; a change rewrites the flow's JSON, which
// stays what is checked and published. Nodes the IVR finds a problem in are outlined.
const KINDS = ["prompt", "menu", "collect", "condition", "set_variable", "route_to_queue", "end"];
const TEMPLATES = {
  prompt: { text: "", audio: "", next: "" },
  menu: { prompt: "", audio: "", choices: [{ digit: "1", label: "", keywords: [], next: "" }], no_match_next: "" },
  collect: { prompt: "", audio: "", variable: "", pattern: "", next: "", failure_next: "", sensitive: false },
  condition: { branches: [{ variable: "", operator: "CONDITION_OPERATOR_EQUALS", value: "", next: "" }], default_next: "" },
  set_variable: { variable: "", value: "", next: "" },
  route_to_queue: { queue: "" },
  end: { text: "" },
};
// Fields edited as text; lists (choices, branches) are edited as JSON beside them.
// `audio` names a tenant's recording a phone call plays instead of saying the text.
const TEXT_FIELDS = ["text", "prompt", "audio", "variable", "pattern", "value", "queue", "next", "no_match_next", "failure_next", "default_next"];
const NUMBER_FIELDS = ["priority", "timeout_seconds", "max_retries"];
// Switches: a collect's `sensitive` (its answer is a secret, and calls are not recorded while
// it is keyed in).
const FLAG_FIELDS = ["sensitive"];
const W = 150;
const H = 46;

export const kindOf = (node) => KINDS.find((k) => node[k]) || "";

export function targets(node) {
  const body = node[kindOf(node)] || {};
  const found = [body.next, body.no_match_next, body.failure_next, body.default_next];
  for (const c of body.choices || []) found.push(c.next);
  for (const b of body.branches || []) found.push(b.next);
  return [...new Set(found.filter(Boolean))];
}

// Columns by breadth-first distance from the entry; nodes never reached come last.
export function layout(flow) {
  const nodes = flow.nodes || [];
  const byId = Object.fromEntries(nodes.map((n) => [n.id, n]));
  const column = {};
  const queue = flow.entry_node && byId[flow.entry_node] ? [flow.entry_node] : [];
  if (queue.length) column[flow.entry_node] = 0;
  while (queue.length) {
    const id = queue.shift();
    for (const next of targets(byId[id])) {
      if (byId[next] && column[next] === undefined) {
        column[next] = column[id] + 1;
        queue.push(next);
      }
    }
  }
  const last = Math.max(-1, ...Object.values(column)) + 1;
  const rows = {};
  const place = {};
  for (const n of nodes) {
    const c = column[n.id] ?? last;
    rows[c] = (rows[c] || 0) + 1;
    place[n.id] = { x: 10 + c * (W + 40), y: 10 + (rows[c] - 1) * (H + 24) };
  }
  return place;
}

function NodeFields({ node, onChange, onRemove }) {
  const kind = kindOf(node);
  const body = node[kind] || {};
  const [lists, setLists] = useState({});
  const set = (key, value) => onChange({ ...node, [kind]: { ...body, [key]: value } });
  const lists_ = ["choices", "branches"].filter((k) => k in TEMPLATES[kind]);
  return (
    <fieldset class="node-fields" data-node={node.id}>
      <legend>
        {t("node")} <code>{node.id}</code> · {kind}
      </legend>
      {TEXT_FIELDS.filter((k) => k in TEMPLATES[kind] || k in body).map((k) => (
        <div class="field">
          <label for={`node-${node.id}-${k}`}>{k}</label>
          <input id={`node-${node.id}-${k}`} name={k} value={body[k] || ""} onInput={(e) => set(k, e.currentTarget.value)} />
        </div>
      ))}
      {NUMBER_FIELDS.filter((k) => k in body || (kind === "route_to_queue" && k === "priority")).map((k) => (
        <div class="field">
          <label for={`node-${node.id}-${k}`}>{k}</label>
          <input id={`node-${node.id}-${k}`} name={k} type="number" value={body[k] || 0} onInput={(e) => set(k, Number(e.currentTarget.value))} />
        </div>
      ))}
      {FLAG_FIELDS.filter((k) => k in TEMPLATES[kind]).map((k) => (
        <div class="field">
          <label>
            <input id={`node-${node.id}-${k}`} name={k} type="checkbox" checked={!!body[k]} onChange={(e) => set(k, e.currentTarget.checked)} /> {k}
          </label>
        </div>
      ))}
      {lists_.map((k) => (
        <div class="field">
          <label for={`node-${node.id}-${k}`}>{k} (JSON)</label>
          <textarea
            id={`node-${node.id}-${k}`}
            rows="4"
            spellcheck={false}
            value={lists[k] ?? JSON.stringify(body[k] || [], null, 1)}
            onInput={(e) => {
              const text = e.currentTarget.value;
              setLists({ ...lists, [k]: text });
              try {
                set(k, JSON.parse(text));
              } catch {
                // Kept as typed until it is JSON again.
              }
            }}
          />
        </div>
      ))}
      <button type="button" class="secondary" onClick={onRemove}>
        {t("removeNode")}
      </button>
    </fieldset>
  );
}

export function FlowDrawing({ flow, problems, onChange }) {
  const [chosen, setChosen] = useState("");
  const [kind, setKind] = useState("prompt");
  const [newId, setNewId] = useState("");
  const nodes = flow.nodes || [];
  const place = layout(flow);
  const flagged = new Set(problems.filter((p) => p.severity === "SEVERITY_ERROR").map((p) => p.node_id));
  const width = Math.max(...Object.values(place).map((p) => p.x + W + 10), 200);
  const height = Math.max(...Object.values(place).map((p) => p.y + H + 10), 80);
  const selected = nodes.find((n) => n.id === chosen);

  function add(event) {
    event.preventDefault();
    const id = newId.trim();
    if (!id || nodes.some((n) => n.id === id)) return;
    const node = { id, [kind]: structuredClone(TEMPLATES[kind]) };
    onChange({ ...flow, entry_node: flow.entry_node || id, nodes: [...nodes, node] });
    setChosen(id);
    setNewId("");
  }

  return (
    <div class="flow-drawing">
      <svg role="img" aria-label={t("flowDiagram")} viewBox={`0 0 ${width} ${height}`} width={width} height={height}>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#4b5563" />
          </marker>
        </defs>
        {nodes.flatMap((n) =>
          targets(n)
            .filter((to) => place[to])
            .map((to) => {
              const a = place[n.id];
              const b = place[to];
              return <line x1={a.x + W} y1={a.y + H / 2} x2={b.x} y2={b.y + H / 2} stroke="#4b5563" marker-end="url(#arrow)" />;
            }),
        )}
        {nodes.map((n) => {
          const p = place[n.id];
          return (
            <g class="node" data-node={n.id} onClick={() => setChosen(n.id)} style="cursor: pointer">
              <rect
                x={p.x}
                y={p.y}
                width={W}
                height={H}
                rx="6"
                fill={n.id === chosen ? "#dbeafe" : "#fff"}
                stroke={flagged.has(n.id) ? "#b00020" : n.id === flow.entry_node ? "#0b5cad" : "#9ca3af"}
                stroke-width={flagged.has(n.id) || n.id === flow.entry_node ? 2 : 1}
              />
              <text x={p.x + 8} y={p.y + 18} font-size="12" font-weight="bold" fill="#111827">
                {n.id}
              </text>
              <text x={p.x + 8} y={p.y + 35} font-size="11" fill="#4b5563">
                {kindOf(n)}
              </text>
            </g>
          );
        })}
      </svg>
      <div class="field">
        <label for="flow-node-pick">{t("node")}</label>
        <select id="flow-node-pick" value={chosen} onChange={(e) => setChosen(e.currentTarget.value)}>
          <option value="">—</option>
          {nodes.map((n) => (
            <option value={n.id}>{n.id}</option>
          ))}
        </select>
      </div>
      {selected && (
        <NodeFields
          node={selected}
          onChange={(changed) => onChange({ ...flow, nodes: nodes.map((n) => (n.id === changed.id ? changed : n)) })}
          onRemove={() => {
            onChange({ ...flow, nodes: nodes.filter((n) => n.id !== selected.id) });
            setChosen("");
          }}
        />
      )}
      <form class="add-node" onSubmit={add}>
        <div class="field">
          <label for="flow-new-kind">{t("nodeKind")}</label>
          <select id="flow-new-kind" value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
            {KINDS.map((k) => (
              <option value={k}>{k}</option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="flow-new-id">{t("nodeId")}</label>
          <input id="flow-new-id" value={newId} onInput={(e) => setNewId(e.currentTarget.value)} />
        </div>
        <button type="submit" class="secondary">
          {t("addNode")}
        </button>
      </form>
    </div>
  );
}
