// tpu_nb connection widget: an anywidget ES module (no build step). The form edits the model's
// traits; Connect bumps `connect_clicks`, and the kernel answers through `status`, `info`, `error`.

const CSS = `
.tpunb-conn { font: 12px/1.5 system-ui, sans-serif; border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 6px; padding: 8px 10px; max-width: 720px; color: var(--jp-ui-font-color1, #222); }
.tpunb-conn label { margin-right: 10px; white-space: nowrap; }
.tpunb-conn input { width: 9em; margin-left: 3px; }
.tpunb-conn input[type=number] { width: 4.5em; }
.tpunb-conn .row { margin: 4px 0; display: flex; flex-wrap: wrap; gap: 4px; align-items: center; }
.tpunb-conn .err { color: #c62828; white-space: pre-wrap; }
.tpunb-conn .ok { color: #1a7f37; }
.tpunb-conn table td, .tpunb-conn table th { padding: 0 10px 0 0; text-align: left; }
`;

const FIELDS = {
  tpu: [["tpu", "TPU name or 'local'", "text"], ["zone", "zone", "text"], ["project", "project", "text"],
        ["timeout_secs", "timeout (s)", "number"]],
  simulated: [["cores", "cores", "number"], ["hosts", "hosts", "number"]],
  gpu: [["gpus", "GPUs", "number"]],
  auto: [["timeout_secs", "timeout (s)", "number"]],
  cpu: [],
};

function render({ model, el }) {
  const style = document.createElement("style");
  style.textContent = CSS;
  const root = document.createElement("div");
  root.className = "tpunb-conn";
  el.append(style, root);

  const head = document.createElement("div");
  head.className = "row";
  const select = document.createElement("select");
  for (const b of model.get("backends")) select.append(new Option(b === "simulated" ? "simulated TPU shards" : b.toUpperCase() === "AUTO" ? "auto" : b.toUpperCase(), b));
  select.onchange = () => { model.set("backend", select.value); model.save_changes(); };
  const button = document.createElement("button");
  button.textContent = "Connect";
  button.onclick = () => { model.set("connect_clicks", model.get("connect_clicks") + 1); model.save_changes(); };
  head.append("Backend ", select, button);
  const fields = document.createElement("div");
  fields.className = "row";
  const out = document.createElement("div");
  root.append(head, fields, out);

  function drawFields() {
    select.value = model.get("backend");
    fields.replaceChildren();
    for (const [name, text, type] of FIELDS[model.get("backend")] || []) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = type;
      input.value = model.get(name);
      input.onchange = () => {
        model.set(name, type === "number" ? Number(input.value) : input.value);
        model.save_changes();
      };
      label.append(text, input);
      fields.append(label);
    }
  }

  function drawStatus() {
    const status = model.get("status");
    button.disabled = status === "connecting";
    out.replaceChildren();
    if (status === "connecting") out.textContent = "Connecting…";
    else if (status === "error") {
      const e = document.createElement("div");
      e.className = "err";
      e.textContent = model.get("error");
      out.append(e);
    } else if (status === "connected") {
      const i = model.get("info");
      const ok = document.createElement("div");
      ok.className = "ok";
      ok.textContent = "Connected: " + i.description;
      const table = document.createElement("table");
      for (const [k, v] of [["hosts", i.hosts], ["cores", i.cores], ["device kinds", (i.device_kinds || []).join(", ")],
                            ["TensorFlow", i.tf_version], ["use_tpu", String(i.use_tpu)]]) {
        const tr = table.insertRow();
        const th = document.createElement("th");
        th.textContent = k;
        tr.append(th);
        tr.insertCell().textContent = v;
      }
      out.append(ok, table);
    }
  }

  drawFields();
  drawStatus();
  model.on("change:backend", drawFields);
  for (const t of ["status", "info", "error"]) model.on("change:" + t, drawStatus);
}

export default { render };
