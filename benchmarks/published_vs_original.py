"""Published tensorflow/tpu programs, unchanged, on the original TPUEstimator and on tpu_nb (issue 19).

Runs one program of https://github.com/tensorflow/tpu's ``models/official`` (a checkout given by
--models-dir, never copied here) byte-for-byte as published, N times on each side:

* ``original``: TF 2.15 + tensorflow-estimator in its own interpreter (--original-python), on CPU
  (``use_tpu=False``: the original cannot run ``use_tpu=True`` without a TPU);
* ``tpu_nb 1``: ``python -m tpu_nb run PROGRAM ...`` with ``use_tpu=False`` (one device);
* ``tpu_nb 8``: ``python -m tpu_nb run --simulate 8x1 PROGRAM ... --use_tpu=True`` (8 shards, same
  global batch).

Each run gets a fresh model_dir. The final evaluation (the last ``Saving dict for global step`` line the
estimator logs) is parsed, with the last training step's loss (``Loss for final step``), with whether a SavedModel was exported (or, for MNIST, how many predictions
were printed). The table shows min-max (mean) over the runs of each side and whether tpu_nb's runs fall within
the original's range widened by --slack (a fraction of the original's own spread, default 0 = strictly
inside; runs of a program without seeds differ by their random initialisation), and how far each tpu_nb
side's mean lies from the original's mean in units of the original's standard deviation. With few runs the
min-max test is strict: m runs drawn from the very same distribution all land inside the range of n
original runs with probability n(n-1)/((n+m)(n+m-1)), e.g. 3 original and 2+2 tpu_nb runs: 6/42 = 0.14,
so read the sd offsets too (and raise --runs where runs are cheap).

    python benchmarks/published_vs_original.py --models-dir ~/src/tpu/models \\
        --original-python /tmp/orig/bin/python mnist [--runs 3] [--sides original,one,shards]

Programs (small settings; ImageNet programs on their own ``--data_dir=null`` input: black images, label 0,
so top-1 measures how fast the bias learns that label; MNIST on synthetic digits generated here, where
each class has its own mean brightness; UNet-3D on synthetic 16^3 volumes generated here, an organ and a
lesion inside it, each class with its own mean intensity): see PROGRAMS, or ``--list``.

UNet-3D's published model_fn cannot evaluate with ``use_tpu=False`` on the original (it returns
``EstimatorSpec(eval_metrics=...)``, a TypeError there and on tpu_nb alike), so ``unet3d`` compares the
training loss with the original, and ``unet3d_eval`` runs train_and_eval on tpu_nb only, on 1 simulated
shard and on 8. Its ``adaptive_dice32`` training loss is computed over each shard's batch (not a mean of
per-example values), so with 8 shards of 1 volume the loss itself is a different quantity than over 8
volumes on one device, as on a real TPU; its eval metrics (accuracy, categorical_crossentropy,
adaptice_dice32) are computed by metric_fn over the whole gathered batch and should not depend on the
sharding.
"""

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# name -> (path under models/official, common flags, flags for one device, flags for 8 shards).
# {data} and {model_dir} are filled in per run. --tpu=local: the programs build a TPUClusterResolver,
# which needs a TPU name off Cloud TPU VMs even with use_tpu=False.
# unet3d: tiny volumes and network, float32 on CPU, a learning rate that learns in 40 steps; the step
# counts the program derives from item counts are given directly (params_override is applied last).
def unet3d_params(train_steps, steps_per_eval):
    return json.dumps({
        "input_image_size": [16, 16, 16], "num_base_filters": 4, "depth": 3, "use_bfloat16": False,
        "train_batch_size": 8, "eval_batch_size": 8, "train_steps": train_steps,
        "num_steps_per_eval": steps_per_eval, "eval_steps": 4, "init_learning_rate": 0.003,
        "lr_decay_steps": 1000}, separators=(",", ":"))



IMAGENET_COMMON = ["--tpu=local", "--data_dir=null", "--model_dir={model_dir}", "--export_dir={model_dir}/export",
                   "--train_batch_size=16", "--eval_batch_size=16", "--num_train_images=64",
                   "--num_eval_images=32", "--iterations_per_loop=4", "--train_steps=8"]
PROGRAMS = {
    "mnist": ("mnist/mnist_tpu.py",
              ["--tpu=local", "--data_dir={data}", "--model_dir={model_dir}", "--batch_size=32",
               "--train_steps=200", "--eval_steps=4", "--iterations=50"],
              ["--use_tpu=False"], ["--use_tpu=True"]),
    "resnet": ("resnet/resnet_main.py",
               IMAGENET_COMMON + ["--resnet_depth=18", "--image_size=32", "--precision=float32",
                                  "--steps_per_eval=8", "--mode=train_and_eval"],
               ["--use_tpu=False"], ["--use_tpu=True", "--num_cores=8"]),
    "efficientnet": ("efficientnet/main.py",
                     IMAGENET_COMMON + ["--model_name=efficientnet-b0", "--input_image_size=32",
                                        "--use_bfloat16=False", "--steps_per_eval=8", "--mode=train_and_eval"],
                     ["--use_tpu=False"], ["--use_tpu=True"]),
    "mnasnet": ("mnasnet/mnasnet_main.py",
                IMAGENET_COMMON + ["--model_name=mnasnet-a1", "--input_image_size=32", "--precision=float32",
                                   "--steps_per_eval=8", "--mode=train_and_eval"],
                ["--use_tpu=False"], ["--use_tpu=True"]),
    "mixnet": ("mnasnet/mnasnet_main.py",
               IMAGENET_COMMON + ["--model_name=mixnet-s", "--input_image_size=32", "--precision=float32",
                                  "--steps_per_eval=8", "--mode=train_and_eval"],
               ["--use_tpu=False"], ["--use_tpu=True"]),
    # 3D segmentation on synthetic 16^3 volumes (unet3d_records). Training only: with use_tpu=False the
    # published model_fn returns EstimatorSpec(eval_metrics=...), which the original's EstimatorSpec
    # refuses (TypeError), so the original cannot evaluate off a TPU; unet3d_eval evaluates on tpu_nb.
    "unet3d": ("unet3d/unet_main.py",
               ["--tpu=local", "--model_dir={model_dir}", "--training_file_pattern={data}/train-*",
                "--eval_file_pattern={data}/eval-*", "--iterations_per_loop=5", "--mode=train",
                "--params_override=" + unet3d_params(40, 40)],
               ["--use_tpu=False"], ["--use_tpu=True"]),
    # The same training, then evaluation (train_and_eval: 20 steps, evaluate, 20 more, evaluate), on
    # tpu_nb only: 1 simulated shard (use_tpu=True, num_cores=1) vs 8, the same global batches.
    "unet3d_eval": ("unet3d/unet_main.py",
                    ["--tpu=local", "--model_dir={model_dir}", "--training_file_pattern={data}/train-*",
                     "--eval_file_pattern={data}/eval-*", "--iterations_per_loop=5", "--mode=train_and_eval",
                     "--params_override=" + unet3d_params(20, 20)],
                    ["--use_tpu=True", "--num_cores=1"], ["--use_tpu=True"]),
}
# Folders (under official/) a program imports from besides its own: mnas_utils appends
# 'tpu/models/official/efficientnet' to sys.path, relative to a working directory above the checkout.
EXTRA_PATHS = {"mnasnet": ["efficientnet"], "mixnet": ["efficientnet"]}
SIDES = {"original": "original", "one": "tpu_nb 1 device", "shards": "tpu_nb 8 shards"}
SAVING_DICT = re.compile(r"Saving dict for global step (\d+): (.*)")


def mnist_records(data_dir, train=512):
    """train/validation/test.tfrecords in the published MNIST program's format, digits as noisy flat images."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.RandomState(0)
    for name, count in (("train", train), ("validation", 128), ("test", 32)):
        with tf.io.TFRecordWriter(os.path.join(data_dir, f"{name}.tfrecords")) as writer:
            for _ in range(count):
                label = int(rng.randint(10))
                image = np.clip(rng.normal(20 * label + 30, 40, (28, 28)), 0, 255).astype(np.uint8)
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
                writer.write(example.SerializeToString())


def unet3d_records(data_dir, train=64, evaluation=32, size=16, files=4):
    """GZIP TFRecords in the published UNet-3D program's format (unet3d/input_reader.py's LiverInputFn).

    Each example: ``image/ct_image``, a float32 [size, size, size, 1] volume in [0, 1], and ``image/label``,
    float32 one-hot [size, size, size, 3] (background, organ, lesion), both as raw bytes. The organ is a
    random ellipsoid, the lesion a smaller sphere inside it; each class has its own mean intensity under
    Gaussian noise, so a few filters separate them. Written as train-0000i-of-... / eval-... shards.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.RandomState(0)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(np.float32)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for name, count in (("train", train), ("eval", evaluation)):
        writers = [tf.io.TFRecordWriter(os.path.join(data_dir, f"{name}-{i:05d}-of-{files:05d}"), options)
                   for i in range(files)]
        for n in range(count):
            center = rng.uniform(0.35, 0.65, 3) * size
            radii = rng.uniform(0.2, 0.35, 3) * size
            organ = (((grid - center) / radii) ** 2).sum(-1) <= 1
            lesion_center = center + rng.uniform(-0.3, 0.3, 3) * radii
            lesion = organ & ((((grid - lesion_center) / (0.6 * radii.min())) ** 2).sum(-1) <= 1)
            classes = organ.astype(np.int64) + lesion
            image = np.array([0.2, 0.5, 0.8], np.float32)[classes] + rng.normal(0, 0.1, classes.shape)
            image = np.clip(image, 0, 1).astype(np.float32)[..., None]
            label = np.eye(3, dtype=np.float32)[classes]
            example = tf.train.Example(features=tf.train.Features(feature={
                "image/ct_image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                "image/label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.tobytes()]))}))
            writers[n % files].write(example.SerializeToString())
        for writer in writers:
            writer.close()


# Programs whose data is written here (in a child process: the parent holds no TensorFlow while runs go).
DATA_WRITERS = {"mnist": mnist_records, "unet3d": unet3d_records, "unet3d_eval": unet3d_records}
# Programs whose "one" side runs use_tpu=True on this simulated topology instead of one plain device.
ONE_SIMULATE = {"unet3d_eval": "1x1"}
# Sides run when --sides is not given, where not all three (the original cannot run these settings).
DEFAULT_SIDES = {"unet3d_eval": "one,shards"}


def command(side, python, tpu_nb_python, program, flags, one, shards, one_simulate=None):
    if side == "original":
        return [python, program, *flags, *one]
    if side == "one":
        simulate = ["--simulate", one_simulate] if one_simulate else []
        return [tpu_nb_python, "-m", "tpu_nb", "run", *simulate, program, *flags, *one]
    return [tpu_nb_python, "-m", "tpu_nb", "run", "--simulate", "8x1", program, *flags, *shards]


def run_once(cmd, cwd, env, model_dir, timeout, log_path):
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        log, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        log = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        rc = "timeout"
    seconds = time.time() - start
    with open(log_path, "w") as f:
        f.write(" ".join(cmd) + "\n" + log)
    result = {"rc": rc, "seconds": seconds, "log": log_path}
    found = SAVING_DICT.findall(log)
    if found:
        step, pairs = found[-1]
        for pair in pairs.split(", "):
            key, _, value = pair.partition(" = ")
            try:
                result[key.strip()] = float(value)
            except ValueError:
                pass
    final = re.findall(r"Loss for final step: ([-0-9.e+naninf]+)", log)
    if final:
        result["final_train_loss"] = float(final[-1].rstrip("."))
    result["exported"] = bool(glob.glob(os.path.join(model_dir, "**", "saved_model.pb"), recursive=True))
    predictions = len(re.findall(r'Prediction is "\d+"', log))
    if predictions:
        result["predictions"] = predictions
    if rc != 0:
        lines = [line for line in log.splitlines() if line.strip()]
        result["error"] = next((line for line in reversed(lines) if "Error" in line or "error" in line),
                               lines[-1] if lines else "")
    return result


def span(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}-{hi:.4g} ({sum(values) / len(values):.4g})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("program", nargs="?", choices=sorted(PROGRAMS))
    parser.add_argument("--models-dir", help="the models/ folder of a tensorflow/tpu checkout")
    parser.add_argument("--original-python", help="interpreter with TF 2.15 + tensorflow-estimator (+ tf-keras)")
    parser.add_argument("--tpu-nb-python", default=sys.executable, help="interpreter with tpu_nb (default: this one)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--tpu-nb-runs", type=int, help="runs per tpu_nb side (default: --runs)")
    parser.add_argument("--sides", help="comma-separated: original,one,shards (default: all three, or the "
                        "program's own: unet3d_eval has no original side)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run")
    parser.add_argument("--slack", type=float, default=0.0,
                        help="widen the original's range by this fraction of its spread before judging")
    parser.add_argument("--extra", action="append", default=[], help="one more flag for the program, all sides")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, model_dirs)")
    parser.add_argument("--list", action="store_true", help="print the programs and their flags")
    parser.add_argument("--write-data", nargs=2, metavar=("PROGRAM", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_data:
        DATA_WRITERS[args.write_data[0]](args.write_data[1])
        return 0
    if args.list:
        for name, (path, flags, one, shards) in PROGRAMS.items():
            print(f"{name}: {path} {' '.join(flags)}\n    one device: {' '.join(one)}; 8 shards: {' '.join(shards)}")
        return 0
    if not args.program or not args.models_dir:
        parser.error("give a program and --models-dir")
    official = os.path.join(os.path.abspath(os.path.expanduser(args.models_dir)), "official")
    if not os.path.isdir(official):
        parser.error(f"{args.models_dir!r} has no official/ folder: pass the models/ folder of tensorflow/tpu")
    sides = (args.sides or DEFAULT_SIDES.get(args.program, "original,one,shards")).split(",")
    labels = dict(SIDES)
    if args.program in ONE_SIMULATE:
        labels["one"] = f"tpu_nb {ONE_SIMULATE[args.program]} simulated"
    if "original" in sides and not args.original_python:
        parser.error("--original-python is needed for the original side")
    path, flags, one, shards = PROGRAMS[args.program]
    program = os.path.join(official, path)
    work = tempfile.mkdtemp(prefix=f"published-{args.program}-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    if args.program in DATA_WRITERS:  # in a child process: this one holds no TensorFlow while the runs go
        subprocess.run([args.tpu_nb_python, os.path.abspath(__file__), "--write-data", args.program, data],
                       check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    # The programs import `official.x`, `hyperparameters`, `common` and their own folder's modules.
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(official), os.path.dirname(program)]
                                        + [os.path.join(official, d) for d in EXTRA_PATHS.get(args.program, [])]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    results = {side: [] for side in sides}
    for side in sides:
        runs = args.runs if side == "original" or args.tpu_nb_runs is None else args.tpu_nb_runs
        for i in range(runs):
            model_dir = os.path.join(work, f"{side}{i}")
            # Not str.format: a flag may hold JSON braces (unet3d's --params_override).
            filled = [flag.replace("{data}", data).replace("{model_dir}", model_dir)
                      for flag in flags + args.extra]
            cmd = command(side, args.original_python, args.tpu_nb_python, program, filled, one, shards,
                          ONE_SIMULATE.get(args.program))
            result = run_once(cmd, os.path.dirname(program), env, model_dir, args.timeout,
                              os.path.join(work, f"{side}{i}.log"))
            results[side].append(result)
            shown = {k: v for k, v in result.items() if k != "log"}
            print(f"[{labels[side]} run {i + 1}] {shown}", file=sys.stderr, flush=True)
    keys = [k for k in ("final_train_loss", "loss", "accuracy", "top_1_accuracy", "top_5_accuracy",
                       "adaptice_dice32", "categorical_crossentropy", "global_step")
            if any(k in r for rs in results.values() for r in rs)]
    print(f"\n{args.program}: {program}")
    print(f"{'':24s}" + "".join(f"{labels[s]:>28s}" for s in sides) + ("   all tpu_nb runs within original min-max; mean offset" if "original" in sides else ""))
    verdicts = []
    for key in keys + ["exported", "predictions", "ok runs", "seconds"]:
        row = []
        for side in sides:
            rs = results[side]
            if key == "exported":
                row.append(f"{sum(r['exported'] for r in rs)}/{len(rs)}")
            elif key == "ok runs":
                row.append(f"{sum(r['rc'] == 0 for r in rs)}/{len(rs)}")
            else:
                row.append(span([r.get(key) for r in rs]))
        verdict = ""
        if "original" in sides and key in keys and key != "global_step":
            orig = [r[key] for r in results["original"] if key in r]
            ours = [r[key] for s in sides if s != "original" for r in results[s] if key in r]
            if orig and ours:
                lo, hi = min(orig), max(orig)
                pad = args.slack * (hi - lo)
                inside = all(lo - pad - 1e-9 <= v <= hi + pad + 1e-9 for v in ours)
                verdict = "yes" if inside else "NO"
                verdicts.append(inside)
                sd = statistics.stdev(orig) if len(orig) > 1 else 0.0
                for s in sides[1:] if sides[0] == "original" else [x for x in sides if x != "original"]:
                    mine = [r[key] for r in results[s] if key in r]
                    if mine and sd > 0:  # how far this side's mean is from the original's, in its sd
                        verdict += f" {s} {(statistics.mean(mine) - statistics.mean(orig)) / sd:+.1f}sd"
        print(f"{key:24s}" + "".join(f"{cell:>28s}" for cell in row) + (f"   {verdict}" if verdict else ""))
    for side in sides:
        for i, r in enumerate(results[side]):
            if r["rc"] != 0:
                print(f"{labels[side]} run {i + 1} failed ({r['rc']}): {r.get('error', '')[:300]}  log: {r['log']}")
    print(f"work folder: {work}")
    failed = any(r["rc"] != 0 for rs in results.values() for r in rs)
    if not args.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed or not all(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
