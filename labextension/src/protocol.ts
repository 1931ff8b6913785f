// The messages on the 'tpu_nb' comm (kept in step with tpu_nb/notebook/lab_bridge.py).
//
// kernel -> front end: {type: 'status', backend, active, runs: RunInfo[]}, at most a few per second.
// front end -> kernel: {type: 'hello'} (send the status now), {type: 'stop', run_id},
// {type: 'stop_all'}; each with a `nonce` so a message is acted on once.

export const TARGET = 'tpu_nb';

export interface RunInfo {
  id: number;
  name: string;
  mode: string;
  phase: string; // 'running', 'stopping', 'stopped', 'failed', 'done'
  state: string; // for people: 'stopped at step 800'
  step: number | null;
  start: number | null;
  target: number | null;
  fraction: number | null; // step / target, counted from step 0 as the step is
  seq: number; // the number of the run's view shown (the dashboard shows the same views)
  loss: number | null; // raw, never smoothed
  examples_per_sec: number | null;
  steps_per_sec: number | null;
  backend: string;
  model_dir: string | null;
  spark: number[];
}

export interface Status {
  type: 'status';
  backend: string;
  active: number | null;
  runs: RunInfo[];
}
