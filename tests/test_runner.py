"""``python -m tpu_nb run``: programs written for the original run with no line changed.

The programs run in their own processes, as a user's do: the runner installs the estimator modules and
Keras 2 there, never in the test process. tests/foreign_programs/estimator_module_mlp.py imports
``tensorflow.compat.v1.estimator``, ``tf.estimator.tpu`` and a ``tensorflow_estimator`` path and uses
``tf.layers``: without the runner it fails on TensorFlow >= 2.16.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tpu_nb.dropin import runner

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MLP = os.path.join(HERE, "foreign_programs", "estimator_module_mlp.py")
BEHAVIOR = os.environ.get("TPU_NB_TEST_BEHAVIOR", "tf2")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, TPU_NB_TEST_BEHAVIOR=BEHAVIOR, **extra)
    for name in ("TPU_NB_SIMULATE", "TF_USE_LEGACY_KERAS"):
        if name not in extra:
            env.pop(name, None)
    return env


def _tpu_nb_run(*args, cwd=None, timeout=600, python_code=None):
    command = [sys.executable, "-m", "tpu_nb", "run", *args]
    if python_code is not None:
        command = [sys.executable, "-c", python_code, *args]
    return subprocess.run(command, env=_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _last_json(done):
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("argv,expected", [
    (["prog.py", "--simulate", "4"], (None, None, "prog.py", ["--simulate", "4"])),  # the program's own flag
    (["--simulate", "8x2", "prog.py", "-x"], ("8x2", None, "prog.py", ["-x"])),
    (["--simulate=8", "-m", "pytest", "-q", "t.py"], ("8", "pytest", None, ["-q", "t.py"])),
])
def test_runner_options_come_before_the_program_and_the_rest_is_the_programs(argv, expected):
    assert runner.parse(argv) == expected


@pytest.mark.parametrize("argv,message", [
    (["run"], "give a program to run"),
    (["run", "--simulate", "8y2", "p.py"], "--simulate '8y2' is not valid"),
    (["run", "--simulate"], "--simulate needs a value"),
    (["run", "-m"], "-m needs a module name"),
    (["run", "--frob", "p.py"], "unknown option '--frob'"),
    (["run", "no_such_program.py"], "no such program file 'no_such_program.py'"),
    (["frob"], "unknown command 'frob'"),
])
def test_command_line_mistakes_say_what_was_wrong_and_change_nothing(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("TPU_NB_SIMULATE", raising=False)
    assert runner.main(argv) == 2
    assert message in capsys.readouterr().err
    assert "TPU_NB_SIMULATE" not in os.environ


def test_console_script_is_declared():
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["tpu-nb"] == "tpu_nb.dropin.runner:main" and callable(runner.main)


# ----------------------------------------------------------------------------- running programs


def test_module_mode_runs_as_python_dash_m_with_the_modules_installed(tmp_path):
    (tmp_path / "probe_module.py").write_text(textwrap.dedent("""
        import json, os, sys
        import tensorflow.compat.v1 as tf
        from tensorflow_estimator.python.estimator.tpu import tpu_estimator
        import tpu_nb
        print(json.dumps({"name": __name__, "argv": sys.argv[1:],
                          "tpu_estimator": tf.estimator.tpu.TPUEstimator is tpu_estimator.TPUEstimator
                                           is tpu_nb.TPUEstimator,
                          "simulate": os.environ.get("TPU_NB_SIMULATE"),
                          "legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS"),
                          "keras": type(tf.layers.Dense(1)).__module__.split(".")[0]}), flush=True)
        sys.exit(int(sys.argv[-1]))
    """))
    done = _tpu_nb_run("--simulate", "8x2", "-m", "probe_module", "--flag", "3", cwd=tmp_path)
    assert done.returncode == 3, done.stderr[-4000:]  # the module's exit status is the runner's
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "name": "__main__", "argv": ["--flag", "3"], "tpu_estimator": True, "simulate": "8x2",
        "legacy_keras": "1", "keras": "tf_keras"}


def test_pytest_runs_test_files_written_for_the_original(tmp_path):
    # As the original's TPU test files are written: absl flags read in tests, tensorflow_estimator imports.
    (tmp_path / "original_style_test.py").write_text(textwrap.dedent("""
        from absl import flags
        import tensorflow.compat.v1 as tf
        from tensorflow_estimator.python.estimator.tpu import tpu_config

        flags.DEFINE_integer("test_num_shards", 8, "number of replicas to test")
        FLAGS = flags.FLAGS


        class ConfigTest(tf.test.TestCase):

            def test_num_shards_flag_and_config(self):
                config = tpu_config.TPUConfig(iterations_per_loop=FLAGS.test_num_shards)
                self.assertEqual(8, config.iterations_per_loop)
    """))
    done = _tpu_nb_run("-m", "pytest", "-q", "-p", "no:cacheprovider", "original_style_test.py", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout


def test_missing_tf_keras_is_named_with_the_install_command(tmp_path):
    program = tmp_path / "uses_layers.py"
    program.write_text("import tensorflow.compat.v1 as tf\nprint(tf.layers.Dense(3))\n")
    block_tf_keras = textwrap.dedent("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):  # as if tf_keras were not installed
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "tf_keras":
                    raise ModuleNotFoundError("No module named 'tf_keras'", name=name)
        sys.meta_path.insert(0, Block())
        from tpu_nb.dropin.runner import main
        sys.exit(main(["run"] + sys.argv[1:]))
    """)
    done = _tpu_nb_run(str(program), python_code=block_tf_keras)
    assert done.returncode == 1
    assert "pip install tf-keras" in done.stderr.splitlines()[-1]


@pytest.mark.slow
def test_a_program_importing_the_estimator_module_runs_unchanged_on_one_device_and_eight_shards(tmp_path):
    one = _last_json(_tpu_nb_run(MLP, "--model_dir", str(tmp_path / "one"), "--use_tpu=False"))
    eight = _last_json(_tpu_nb_run("--simulate", "8", MLP, "--model_dir", str(tmp_path / "eight")))
    for out in (one, eight):
        assert out["global_step"] == 6 and out["predictions"] == 40 and out["hook_ends"] == 1
        assert out["keras"] == "tf_keras"  # tf.layers is Keras 2, as on TF <= 2.15
        assert os.path.isfile(os.path.join(out["export_dir"], "saved_model.pb"))
    assert (one["simulate"], eight["simulate"]) == ("", "8")
    # CrossShardOptimizer on 8 shards of 4 gives the one-device update of the batch of 32.
    assert eight["loss"] == pytest.approx(one["loss"], rel=1e-3)
    assert eight["accuracy"] == pytest.approx(one["accuracy"], abs=0.01)
    assert one["accuracy"] > 0.8
