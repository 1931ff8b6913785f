// tpu_nb in JupyterLab (and Notebook 7): the kernel's backend and the active run's progress in the
// status bar, a side panel listing the current kernel's runs with a Stop button per run, and
// command-palette entries. All data comes from the kernel over the 'tpu_nb' comm that
// `%load_ext tpu_nb` registers (tpu_nb/notebook/lab_bridge.py); there is no server endpoint.

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import {
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import type { Message } from '@lumino/messaging';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { RunInfo, Status, TARGET } from './protocol';
import { backendLabel, fmt, progressText, sparkline } from './format';

const PLUGIN_ID = 'tpu-nb:plugin';
const CMD_INSERT = 'tpu-nb:insert-train-cell';
const CMD_STOP_ALL = 'tpu-nb:stop-all';

export const TRAIN_TEMPLATE = [
  '%load_ext tpu_nb',
  '%tpu_train est train_input_fn --steps 1000 --background -o run'
].join('\n');

const tpuIcon = new LabIcon({
  name: 'tpu-nb:runs',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<rect x="6" y="6" width="12" height="12" rx="1.5"/><rect x="9" y="1" width="1.6" height="4"/>' +
    '<rect x="13.4" y="1" width="1.6" height="4"/><rect x="9" y="19" width="1.6" height="4"/>' +
    '<rect x="13.4" y="19" width="1.6" height="4"/><rect x="1" y="9" width="4" height="1.6"/>' +
    '<rect x="1" y="13.4" width="4" height="1.6"/><rect x="19" y="9" width="4" height="1.6"/>' +
    '<rect x="19" y="13.4" width="4" height="1.6"/></g></svg>'
});

/** One kernel's tpu_nb comm and the latest status it sent. */
class KernelLink {
  constructor(kernel: Kernel.IKernelConnection, changed: () => void) {
    this.kernel = kernel;
    this._changed = changed;
  }

  readonly kernel: Kernel.IKernelConnection;
  status: Status | null = null;

  attach(comm: Kernel.IComm): void {
    this._comm = comm;
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => this._receive(msg.content.data);
    comm.onClose = () => {
      if (this._comm === comm) {
        this._comm = null;
        this.status = null;
        this._changed();
      }
    };
  }

  /** The kernel restarted or died: its comm and runs are gone. */
  reset(): void {
    this._comm = null;
    this.status = null;
    this._changed();
  }

  get connected(): boolean {
    return this._comm !== null && !this._comm.isDisposed;
  }

  send(data: Record<string, any>): void {
    if (this.connected) {
      this._comm!.send({ ...data, nonce: `${Date.now()}-${Math.random()}` } as any);
    }
  }

  stop(runId: number): void {
    this.send({ type: 'stop', run_id: runId });
  }

  stopAll(): void {
    this.send({ type: 'stop_all' });
  }

  private _receive(data: any): void {
    if (data && data.type === 'status') {
      this.status = data as Status;
      this._changed();
    }
  }

  private _comm: Kernel.IComm | null = null;
  private _changed: () => void;
}

/** Every kernel the front end talks to, and which one belongs to the current notebook. */
class Registry {
  readonly changed = new Signal<this, void>(this);

  link(kernel: Kernel.IKernelConnection): KernelLink {
    let link = this._links.get(kernel.id);
    if (link && link.kernel === kernel) {
      return link;
    }
    link = new KernelLink(kernel, () => this.changed.emit());
    this._links.set(kernel.id, link);
    const created = link;
    // An older tpu_nb kernel announces its comm with comm_open...
    kernel.registerCommTarget(TARGET, (comm: Kernel.IComm) => {
      created.attach(comm);
      created.send({ type: 'hello' });
    });
    // ...a current one only lists it (`%load_ext tpu_nb` registers it without a comm_open, so that
    // headless front ends see nothing): look for it now, at each busy/idle change and every 2 s of a
    // long cell until found. The request goes on the control channel, which a foreground
    // `%tpu_train` does not block (Run All queues the training cell right behind `%load_ext`).
    const look = () => {
      if (!created.connected) {
        void this._adopt(kernel, created);
      }
    };
    look();
    let poller: number | null = null;
    kernel.statusChanged.connect((_, status) => {
      if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
        created.reset();
      }
      if (status === 'busy' || status === 'idle') {
        look();
      }
      if (status === 'busy' && poller === null) {
        poller = window.setInterval(() => {
          if (created.connected || kernel.status !== 'busy') {
            window.clearInterval(poller!);
            poller = null;
          } else {
            look();
          }
        }, 2000);
      }
    });
    kernel.disposed.connect(() => {
      if (this._links.get(kernel.id) === created) {
        this._links.delete(kernel.id);
        this.changed.emit();
      }
    });
    return link;
  }

  private async _adopt(kernel: Kernel.IKernelConnection, link: KernelLink): Promise<void> {
    if (this._adopting.has(link)) {
      return;
    }
    this._adopting.add(link);
    try {
      const request = KernelMessage.createMessage({
        msgType: 'comm_info_request',
        channel: 'control',
        session: kernel.clientId,
        username: kernel.username,
        content: { target_name: TARGET }
      } as any);
      const reply = await kernel.sendControlMessage(request as any, true, true).done;
      const comms = (reply.content as any).comms || {};
      for (const id of Object.keys(comms)) {
        if (!link.connected && !kernel.hasComm(id)) {
          link.attach(kernel.createComm(TARGET, id));
          link.send({ type: 'hello' });
        }
      }
    } catch {
      // A kernel without comm_info (or a dead one): nothing to adopt.
    } finally {
      this._adopting.delete(link);
    }
  }

  get current(): KernelLink | null {
    const kernel = this._current?.sessionContext.session?.kernel;
    if (!kernel) {
      return null;
    }
    return this.link(kernel);
  }

  setCurrent(panel: NotebookPanel | null): void {
    if (panel && !this._watched.has(panel)) {
      this._watched.add(panel);
      const sync = () => {
        const kernel = panel.sessionContext.session?.kernel;
        if (kernel) {
          this.link(kernel);
        }
        this.changed.emit();
      };
      panel.sessionContext.kernelChanged.connect(sync);
      void panel.sessionContext.ready.then(sync);
      panel.disposed.connect(() => this._watched.delete(panel));
    }
    this._current = panel;
    this.changed.emit();
  }

  get all(): KernelLink[] {
    return [...this._links.values()];
  }

  private _links = new Map<string, KernelLink>();
  private _watched = new Set<NotebookPanel>();
  private _adopting = new Set<KernelLink>();
  private _current: NotebookPanel | null = null;
}

/** The status-bar item: "tpu_nb · simulated TPU 8×1 · train 1,200/5,000 · 3,456 ex/s". */
class StatusItem extends Widget {
  constructor(registry: Registry) {
    super();
    this.addClass('tpunb-status');
    this.node.title = 'tpu_nb: the kernel backend and the active run';
    this._registry = registry;
    registry.changed.connect(() => this.render());
    this.render();
  }

  render(): void {
    const status = this._registry.current?.status ?? null;
    if (!status) {
      this.node.textContent = '';
      this.node.dataset.state = 'none';
      return;
    }
    const parts = ['tpu_nb', backendLabel(status.backend)];
    const run = status.runs.find(r => r.id === status.active) ?? null;
    if (run) {
      parts.push(progressText(run));
      if (run.examples_per_sec) {
        parts.push(`${fmt(run.examples_per_sec, 3)} ex/s`);
      }
    }
    // Written only on change: each status message (up to 4 a second) would otherwise lay out the bar.
    const text = parts.join(' · ');
    const state = run ? run.phase : 'idle';
    // The whole state (a failed run's error line) on hover; the bar itself stays one short line.
    const title = run ? `tpu_nb: ${run.name}: ${run.state}` : 'tpu_nb: the kernel backend and the active run';
    if (this.node.title !== title) {
      this.node.title = title;
    }
    if (this.node.textContent !== text) {
      this.node.textContent = text;
    }
    if (this.node.dataset.state !== state) {
      this.node.dataset.state = state;
    }
    const seq = run ? String(run.seq ?? '') : '';
    if (this.node.dataset.seq !== seq) {
      this.node.dataset.seq = seq;
    }
  }

  private _registry: Registry;
}

/** The side panel: the current kernel's runs with name, state, step, last loss, sparkline, Stop. */
class RunsPanel extends Widget {
  constructor(registry: Registry) {
    super();
    this.id = 'tpu-nb-runs';
    this.addClass('tpunb-panel');
    this.title.icon = tpuIcon;
    this.title.caption = 'tpu_nb runs';
    this._registry = registry;
    registry.changed.connect(() => this.render());
    this.render();
  }

  /** Shown again: catch up on the statuses that arrived while hidden. */
  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.render();
  }

  render(): void {
    // A closed panel is not rebuilt on every status message (up to 4 a second during a run); it
    // renders when shown.
    if (!this.isVisible && this.node.childElementCount > 0) {
      return;
    }
    const link = this._registry.current;
    const status = link?.status ?? null;
    const node = this.node;
    node.textContent = '';
    const head = document.createElement('div');
    head.className = 'tpunb-panel-head';
    head.textContent = 'tpu_nb runs';
    node.appendChild(head);
    const note = (text: string) => {
      const empty = document.createElement('p');
      empty.className = 'tpunb-panel-empty';
      empty.textContent = text;
      node.appendChild(empty);
    };
    if (!link || !status) {
      note('Run %load_ext tpu_nb in the current notebook to list its runs here.');
      return;
    }
    const backend = document.createElement('div');
    backend.className = 'tpunb-panel-backend';
    backend.textContent = `kernel backend: ${backendLabel(status.backend)}`;
    node.appendChild(backend);
    if (status.runs.length === 0) {
      note('No runs in this kernel yet.');
      return;
    }
    // One card per run, not a wide table: at the sidebar's default width (~250 px) a six-column
    // table hid step, loss, sparkline and Stop behind a horizontal scroll.
    const list = document.createElement('div');
    list.className = 'tpunb-runs';
    for (const run of [...status.runs].reverse()) {
      list.appendChild(this._card(link, run));
    }
    node.appendChild(list);
  }

  private _card(link: KernelLink, run: RunInfo): HTMLElement {
    const card = document.createElement('div');
    card.className = 'tpunb-run';
    card.dataset.runId = String(run.id);
    card.dataset.phase = run.phase;
    card.dataset.seq = String(run.seq ?? ''); // which view of the run it shows (as the dashboard's)
    const part = (parent: HTMLElement, text: string, cls: string) => {
      const span = document.createElement('span');
      span.className = cls;
      span.textContent = text;
      parent.appendChild(span);
      return span;
    };
    const top = document.createElement('div');
    top.className = 'tpunb-run-top';
    part(top, run.name, 'tpunb-run-name').title = `${run.name}\n${run.model_dir ?? ''}`;
    const button = document.createElement('button');
    button.className = 'jp-Button tpunb-stop';
    button.textContent = 'Stop';
    const live = run.phase === 'running' || run.phase === 'starting';
    button.disabled = !live || run.mode !== 'train';
    button.onclick = () => {
      button.disabled = true;
      link.stop(run.id);
    };
    top.appendChild(button);
    const facts = document.createElement('div');
    facts.className = 'tpunb-run-facts';
    // A failed run's state is its error's first line: wrapped in the card, never cut.
    part(facts, run.state, 'tpunb-run-state');
    if (run.step !== null || run.target !== null) {
      part(
        facts,
        // Written as the dashboard's header and the status bar write steps: "1,234/200,000".
        run.target !== null ? `step ${fmt(run.step ?? 0)}/${fmt(run.target)}` : `step ${fmt(run.step)}`,
        'tpunb-run-step'
      );
    }
    if (run.loss !== null) {
      part(facts, `loss ${fmt(run.loss)}`, 'tpunb-run-loss');
    }
    part(facts, backendLabel(run.backend), 'tpunb-run-backend').title = run.backend;
    const spark = document.createElement('div');
    spark.className = 'tpunb-run-spark';
    const svg = sparkline(run.spark, 200, 22);
    // Scales to the card's width: the sidebar can be any width.
    svg.setAttribute('viewBox', '0 0 200 22');
    svg.setAttribute('width', '100%');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.querySelector('polyline')?.setAttribute('vector-effect', 'non-scaling-stroke');
    spark.appendChild(svg);
    card.append(top, facts, spark);
    return card;
  }

  private _registry: Registry;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'tpu_nb runs: status bar, side panel with Stop, palette commands',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const registry = new Registry();
    tracker.widgetAdded.connect((_, panel) => registry.setCurrent(tracker.currentWidget ?? panel));
    tracker.currentChanged.connect((_, panel) => registry.setCurrent(panel));
    registry.setCurrent(tracker.currentWidget);

    const panel = new RunsPanel(registry);
    try {
      app.shell.add(panel, 'left', { rank: 900 });
    } catch (error) {
      console.warn('tpu_nb: no left area for the runs panel', error);
    }

    if (statusBar) {
      const item = new StatusItem(registry);
      statusBar.registerStatusItem('tpu-nb:status', {
        item,
        align: 'left',
        rank: 10,
        isActive: () => registry.current?.status != null,
        activeStateChanged: registry.changed
      });
    }

    app.commands.addCommand(CMD_INSERT, {
      label: 'tpu_nb: Insert a %tpu_train cell',
      isEnabled: () => tracker.currentWidget !== null,
      execute: () => {
        const current = tracker.currentWidget;
        if (!current) {
          return;
        }
        NotebookActions.insertBelow(current.content);
        const cell = current.content.activeCell;
        if (cell) {
          cell.model.sharedModel.setSource(TRAIN_TEMPLATE);
        }
      }
    });
    app.commands.addCommand(CMD_STOP_ALL, {
      label: 'tpu_nb: Stop all runs',
      execute: () => {
        for (const link of registry.all) {
          link.stopAll();
        }
      }
    });
    if (palette) {
      palette.addItem({ command: CMD_INSERT, category: 'tpu_nb' });
      palette.addItem({ command: CMD_STOP_ALL, category: 'tpu_nb' });
    }
  }
};

export default plugin;
