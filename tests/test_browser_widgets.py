"""Real-browser tests of what a notebook user sees around a run and in the widgets.

JupyterLab and Notebook 7 (headless Chromium, Playwright): the kernel indicator says Busy
during a foreground ``%tpu_train`` with the dashboard, the dashboard's Stop ends the cell as
an interrupt does (the next queued cell does not run), and JupyterLab's runs panel shows step,
loss, sparkline and Stop at its default width. The batch-size widget checks a size as it is
typed; the Connection widget's Connect updates ``-o conn``. Skipped without Chromium/Playwright.
"""

import ast

import pytest

from browser_support import KERNEL_READY, chromium_page, jupyter_server, require_browser, screenshot, \
    screenshot_on_failure, write_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.kernel, pytest.mark.slow]

LONG_RUN = 200_000  # steps: only Stop ends it within the test

KERNEL = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"

# Runs code in the page's kernel (queued behind whatever runs) and resolves with the repr of an
# expression evaluated after it. The value travels in the execute reply (user_expressions), not as
# printed text: a stream message may reach the page after the reply and be missed.
KERNEL_EVAL = """async ([code, expression]) => {
  const future = %s.requestExecute(
    { code, silent: false, store_history: false, user_expressions: { value: expression } });
  const content = (await future.done).content;
  const result = content.status === 'ok' ? content.user_expressions.value : content;
  return result.status === 'ok' ? result.data['text/plain'] : `${result.ename}: ${result.evalue}`;
}""" % KERNEL


def _kernel_value(page, expression, code=""):
    """The value of ``expression`` in the page's kernel, after running ``code`` (literals only)."""
    text = page.evaluate(KERNEL_EVAL, [code, expression])
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise AssertionError(f"the kernel answered {text!r} for {expression!r}") from None


def _open(page, url):
    page.goto(url)
    page.wait_for_function(KERNEL_READY, timeout=120_000)
    # Not awaited: the command's promise resolves only when every cell has run.
    page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def _append_cell(path, source):
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, str(path))


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_busy_during_a_foreground_run_and_stop_ends_the_cell_as_an_interrupt(tmp_path, app):
    require_browser()
    path = write_notebook(tmp_path / "busy.ipynb", f"%tpu_train est train_input_fn --steps {LONG_RUN} -o run")
    _append_cell(path, "queued_cell_ran = True")  # Run All queues it behind the run
    url = "/lab/tree/busy.ipynb?reset&token={}" if app == "lab" else "/notebooks/busy.ipynb?token={}"
    with jupyter_server(app, tmp_path, tmp_path / f"{app}.log") as (base, token), \
            chromium_page(viewport=(1280, 900)) as page, screenshot_on_failure(page, f"busy_{app}_failure.png"):
        _open(page, base + url.format(token))
        page.wait_for_selector(".tpunb-badge[data-phase='running']", timeout=180_000)
        page.wait_for_function(  # a few loops done: the comm subshells the front end asks for exist by now
            "() => /[0-9] steps\\/s/.test((document.querySelector('.tpunb-nums') || {}).textContent || '')",
            timeout=120_000)
        page.wait_for_timeout(1500)
        samples = []
        for _ in range(5):
            page.wait_for_timeout(200)
            samples.append(page.evaluate(f"() => {KERNEL}.status"))
        assert samples == ["busy"] * 5  # was "idle" once the dashboard's comm appeared

        if app == "lab":  # the runs panel at the sidebar's default width: nothing behind a scroll
            page.evaluate("() => window.jupyterapp.shell.activateById('tpu-nb-runs')")
            card = page.locator("#tpu-nb-runs .tpunb-run[data-phase='running']")
            card.wait_for(timeout=30_000)
            page.wait_for_function("() => !!document.querySelector('#tpu-nb-runs .tpunb-run polyline')")
            panel = page.locator("#tpu-nb-runs").bounding_box()
            assert panel["width"] < 400  # the default width, not widened by the test
            layout = page.evaluate("""() => {
              const panel = document.querySelector('#tpu-nb-runs');
              const box = (sel) => panel.querySelector(sel).getBoundingClientRect();
              const right = panel.getBoundingClientRect().right;
              return { overflow: panel.scrollWidth - panel.clientWidth,
                       inside: ['.tpunb-stop', '.tpunb-run-step', '.tpunb-run-loss', '.tpunb-run-spark svg']
                         .every(sel => box(sel).right <= right + 0.5 && box(sel).width > 0) };
            }""")
            assert layout == {"overflow": 0, "inside": True}
            screenshot(page, "runs_panel_default_width.png")

        page.locator(".tpunb-controls button", has_text="Stop").first.click()
        page.wait_for_selector("text=KeyboardInterrupt: training stopped at step", timeout=60_000)
        state, queued_ran = _kernel_value(page, "(run.state, 'queued_cell_ran' in globals())")
        assert state.startswith("stopped at step ") and queued_ran is False


def test_batch_widget_checks_as_you_type_and_connect_updates_the_variable(tmp_path):
    require_browser()
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "import tpu_nb\n%load_ext tpu_nb\nfrom tpu_nb.notebook import BatchSizeWidget\n"
        "w = BatchSizeWidget(num_shards=8, num_hosts=1, train_batch_size=64)\nw",
        "%tpu_connect --backend cpu -o conn",
    )]
    nbformat.write(nb, str(tmp_path / "widgets.ipynb"))
    with jupyter_server("lab", tmp_path, tmp_path / "lab.log") as (base, token), chromium_page() as page, \
            screenshot_on_failure(page, "widgets_failure.png"):
        _open(page, f"{base}/lab/tree/widgets.ipynb?reset&token={token}")
        train = page.locator(".tpunb-batch input[type=number]").nth(1)  # [predict examples, train, eval, ...]
        train.wait_for(timeout=120_000)
        page.locator(".tpunb-conn .ok").wait_for(timeout=120_000)  # both cells ran
        train.click()
        train.fill("")
        train.type("100")  # no Enter, no blur: checked as typed
        page.wait_for_selector(".tpunb-batch .err", timeout=30_000)
        assert "divisible" in page.locator(".tpunb-batch .err").first.text_content()
        train.fill("")
        train.type("128")
        train.press("Enter")
        # The per-shard cell is drawn from the kernel's table: 128 reached the kernel once it shows 16.
        page.wait_for_function("() => !document.querySelector('.tpunb-batch .err') && "
                               "document.querySelectorAll('.tpunb-batch tr')[1].cells[2].textContent === '16'")
        assert _kernel_value(page, "(w.train_batch_size, w.rows[0]['per_shard'])") == (128, 16)

        page.locator(".tpunb-conn select").select_option("simulated")
        page.locator(".tpunb-conn button", has_text="Connect").click()
        page.wait_for_selector(".tpunb-conn .ok:has-text('simulated')", timeout=60_000)
        assert _kernel_value(page, "(conn.backend, conn.num_cores, current_connection() is conn)",
                             code="from tpu_nb.notebook.magics_extra import current_connection") == \
            ("simulated", 8, True)
        screenshot(page, "widgets_batch_and_connection.png")
