// tpu_nb batch-size widget: an anywidget ES module (no build step). Inputs set the model's
// traits; the kernel recomputes `rows`, `errors`, `warnings` and `padding`, which this view draws.

const CSS = `
.tpunb-batch { font: 12px/1.5 system-ui, sans-serif; border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 6px; padding: 8px 10px; max-width: 760px; color: var(--jp-ui-font-color1, #222); }
.tpunb-batch input { width: 6em; }
.tpunb-batch table { border-collapse: collapse; margin: 4px 0; font-variant-numeric: tabular-nums; }
.tpunb-batch td, .tpunb-batch th { padding: 1px 10px 1px 0; text-align: left; }
.tpunb-batch .err { color: #c62828; } .tpunb-batch .warn { color: #b35900; }
.tpunb-batch input.bad { outline: 2px solid #c62828; }
`;

const PHASES = ["train", "eval", "predict"];

function render({ model, el }) {
  const style = document.createElement("style");
  style.textContent = CSS;
  const root = document.createElement("div");
  root.className = "tpunb-batch";
  el.append(style, root);

  const head = document.createElement("div");
  const mode = document.createElement("select");
  for (const m of model.get("input_modes")) mode.append(new Option(m, m));
  mode.onchange = () => { model.set("input_mode", mode.value); model.save_changes(); };
  const size = document.createElement("input");
  size.type = "number";
  size.min = 0;
  size.title = "predict dataset size (for the padding of the last batch)";
  size.oninput = size.onchange = () => {
    const value = Number(size.value) || 0;
    if (value !== model.get("dataset_size")) { model.set("dataset_size", value); model.save_changes(); }
  };
  const apply = document.createElement("button");
  apply.textContent = "Apply to estimator";
  apply.onclick = () => { model.set("apply_clicks", model.get("apply_clicks") + 1); model.save_changes(); };
  const where = document.createElement("span");
  head.append(where, " input mode ", mode, "  predict examples ", size, " ", apply);

  const rebind = document.createElement("button");
  rebind.className = "rebind";
  rebind.onclick = () => { model.set("rebind_clicks", model.get("rebind_clicks") + 1); model.save_changes(); };

  const table = document.createElement("table");
  const notes = document.createElement("div");
  root.append(head, table, notes);
  const inputs = {};

  table.innerHTML = "<tr><th>phase</th><th>global batch</th><th>per shard</th><th>per host</th><th>input_fn calls</th></tr>";
  for (const phase of PHASES) {
    const tr = table.insertRow();
    tr.insertCell().textContent = phase;
    const input = document.createElement("input");
    input.type = "number";
    input.min = 0;
    // Checked as you type and on Enter, not only when the field loses focus.
    const send = () => {
      const value = Number(input.value) || 0;
      if (value !== model.get(`${phase}_batch_size`)) { model.set(`${phase}_batch_size`, value); model.save_changes(); }
    };
    input.oninput = send;
    input.onchange = send;
    input.onkeydown = (event) => { if (event.key === "Enter") send(); };
    inputs[phase] = input;
    tr.insertCell().append(input);
    for (let i = 0; i < 3; i++) tr.insertCell();
  }

  function draw() {
    const sharded = model.get("sharded");
    where.textContent = sharded ? `${model.get("num_shards")} shard(s) on ${model.get("num_hosts")} host(s),` : "one device,";
    mode.value = model.get("input_mode");
    mode.disabled = !sharded;
    if (document.activeElement !== size) size.value = model.get("dataset_size") || "";
    apply.disabled = !model.get("valid");
    const errors = model.get("errors");
    model.get("rows").forEach((row, i) => {
      const phase = PHASES[i];
      const input = inputs[phase];
      const value = model.get(`${phase}_batch_size`);
      // Never rewrite the field being typed in (the caret would jump), unless it disagrees.
      if (document.activeElement !== input || (Number(input.value) || 0) !== value) input.value = value || "";
      input.classList.toggle("bad", phase in errors);
      const cells = table.rows[i + 1].cells;
      cells[2].textContent = row.per_shard ?? "—";
      cells[3].textContent = row.per_host ?? "—";
      cells[4].textContent = row.input_fn_calls ?? "—";
    });
    notes.replaceChildren();
    // The kernel's messages quote names as `est` (markdown style, as its text/plain fallback shows them):
    // drawn as code, never as literal backticks.
    const line = (cls, text) => {
      const d = document.createElement("div"); d.className = cls;
      String(text).split("`").forEach((part, i) => {
        if (i % 2 === 0) { d.append(part); return; }
        const code = document.createElement("code"); code.textContent = part; d.append(code);
      });
      notes.append(d);
    };
    for (const [phase, message] of Object.entries(errors)) line("err", `${phase}: ${message}`);
    for (const w of model.get("warnings")) line("warn", w);
    const padding = model.get("padding");
    if (padding && padding.text) line("", padding.text);
    if (model.get("applied")) line("applied", model.get("applied"));
    const names = model.get("rebind_names") || [];
    if (names.length) {
      rebind.textContent = `Rebind ${names.join(", ")} to the new estimator`;
      notes.append(rebind);
    }
  }

  draw();
  for (const t of ["rows", "errors", "warnings", "padding", "valid", "applied", "rebind_names", "input_mode", "sharded"]) model.on("change:" + t, draw);
}

export default { render };
