"""Helpers for the real-browser tests: a Jupyter server on 127.0.0.1, headless Chromium, a notebook.

The browser is the system's Chromium (``apt-get install chromium``) driven by Playwright
(``pip install playwright``); ``playwright install`` is never needed. The server runs in its
own process group with a random token and fresh settings/workspaces folders, and is stopped
by that group's id.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
REPO = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"


def require_browser():
    """Skips the calling test (with the reason) when Chromium or Playwright is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium; .ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; it is in the test extra)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_server(app: str, root_dir: pathlib.Path, log_path: pathlib.Path):
    """Runs ``jupyter lab`` or ``jupyter notebook`` on 127.0.0.1; yields (base_url, token)."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(root_dir / ".workspaces")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(root_dir / ".settings")
    env["JUPYTER_CONFIG_DIR"] = str(root_dir / ".config")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # window.jupyterapp for the tests (Notebook 7 reads it from page_config, not from its flag).
    (root_dir / ".config" / "labconfig").mkdir(parents=True, exist_ok=True)
    (root_dir / ".config" / "labconfig" / "page_config.json").write_text('{"exposeAppInBrowser": true}')
    notification = root_dir / ".settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)  # no "get news?" toast over the screenshots
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    command = [sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}", "--expose-app-in-browser",
               "--LabApp.news_url=None" if app == "lab" else "--JupyterNotebookApp.news_url=None"]
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited with {process.returncode}: see {log_path}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as response:
                    json.load(response)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter {app} did not answer in 60 s: see {log_path}")
                time.sleep(0.25)
        yield base, token
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        log.close()


@contextlib.contextmanager
def chromium_page(viewport=(1400, 1000)):
    """A fresh headless Chromium page (Playwright driving the system browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> pathlib.Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


# The notebook the browser runs: digits from scikit-learn (bundled, no download), a small MLP,
# and one long training run that the test stops. `%load_ext tpu_nb` opens the extension's comm.
SETUP = '''\
import os, tempfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
import tf_keras
from sklearn.datasets import load_digits
import tpu_nb
from tpu_nb import ModeKeys, RunConfig, TPUConfig, TPUEstimator, TPUEstimatorSpec
%load_ext tpu_nb

digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target.astype(np.int32)

def train_input_fn(params):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds.shuffle(2048, seed=0).repeat().batch(params["batch_size"], drop_remainder=True)

def model_fn(features, labels, mode, params):
    hidden = tf_keras.layers.Dense(64, activation="relu")(features)
    logits = tf_keras.layers.Dense(10)(hidden)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    optimizer = tf.compat.v1.train.AdamOptimizer(1e-3)
    train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    return TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

est = TPUEstimator(model_fn=model_fn, use_tpu=False, train_batch_size=32,
                   config=RunConfig(model_dir=tempfile.mkdtemp(prefix="browser_"), save_checkpoints_steps=100000,
                                    tpu_config=TPUConfig(iterations_per_loop=20)))
'''


def write_notebook(path: pathlib.Path, train_line: str) -> pathlib.Path:
    """A notebook: SETUP, then one ``%tpu_train`` cell (``train_line``)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(train_line)]
    nbformat.write(nb, str(path))
    return path


# JavaScript run in the page --------------------------------------------------------------------

KERNEL_READY = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
    && panel.sessionContext.session.kernel;
  return !!(kernel && kernel.status === 'idle' && panel.content && panel.content.widgets
    && panel.content.widgets.length > 0);
}"""

# Pixels of the first series colour (#1f77b4) on the dashboard's first chart: >0 once it drew points.
CHART_INK = """() => {
  const canvas = document.querySelector('.tpunb-chart canvas');
  if (!canvas || !canvas.width || !canvas.height) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 100 && data[i + 2] - data[i] > 80 && data[i + 2] > 120) n++;
  }
  return n;
}"""


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    """Saves artifacts/<name> (and the page's text) when the block fails, then re-raises."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            screenshot(page, name)
            (ARTIFACTS / (name + ".txt")).write_text(page.inner_text("body"))
        raise
