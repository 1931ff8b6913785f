"""The zero-change runner behind ``python -m tpu_nb run`` and the ``tpu-nb`` console script.

It prepares the process as the original's environment was, then runs the program or module as
``python PROGRAM.py ARGS`` / ``python -m MODULE ARGS`` would (``__name__ == '__main__'``, ``sys.argv``,
the program's directory first on ``sys.path``):

* ``--simulate 8x2`` sets ``TPU_NB_SIMULATE`` (8 simulated cores on 2 hosts) for ``use_tpu=True`` runs;
* ``TF_USE_LEGACY_KERAS=1`` when tf_keras is installed, before the program uses any Keras
  (``tf.compat.v1.layers`` and ``tf.keras`` are Keras 2 then, as on TF <= 2.15);
* the estimator modules are installed where the original lived (``installing.install``).
"""

import os
import re
import runpy
import sys
import traceback

USAGE = """usage: python -m tpu_nb run [--simulate CORES[xHOSTS]] PROGRAM.py [ARGS...]
       python -m tpu_nb run [--simulate CORES[xHOSTS]] -m MODULE [ARGS...]

Runs a program written for TensorFlow <= 2.15's tf.estimator / TPUEstimator unchanged: tf.estimator,
tf.compat.v1.estimator and tensorflow_estimator resolve to tpu_nb, and Keras is Keras 2 (tf_keras).
  --simulate 8x2   run use_tpu=True on 8 simulated TPU cores over 2 hosts (TPU_NB_SIMULATE=8x2)
  -m MODULE        run a module as `python -m MODULE` does (e.g. -m pytest tests/)
"""

_SIMULATE = re.compile(r"[1-9][0-9]*(x[1-9][0-9]*)?")


class UsageError(ValueError):
    """A command line the runner cannot run; the message says what was wrong and the usage."""


def parse(argv):
    """``(simulate, module, program, args)`` from the words after ``run``; raises ``UsageError``."""
    simulate = None
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in ("-h", "--help"):
            raise UsageError("")
        if word == "--simulate" or word.startswith("--simulate="):
            if word == "--simulate":
                if index + 1 >= len(argv):
                    raise UsageError("--simulate needs a value, e.g. --simulate 8 or --simulate 8x2.")
                value, index = argv[index + 1], index + 2
            else:
                value, index = word.split("=", 1)[1], index + 1
            if not _SIMULATE.fullmatch(value):
                raise UsageError(f"--simulate {value!r} is not valid: give the number of cores, optionally "
                                 "with hosts, e.g. --simulate 8 or --simulate 8x2.")
            simulate = value
            continue
        if word == "-m":
            if index + 1 >= len(argv):
                raise UsageError("-m needs a module name, e.g. -m pytest.")
            return simulate, argv[index + 1], None, argv[index + 2:]
        if word.startswith("-"):
            raise UsageError(f"unknown option {word!r} before the program: runner options are --simulate "
                             "and -m; the program's own options go after its name.")
        return simulate, None, word, argv[index + 1:]
    raise UsageError("give a program to run (PROGRAM.py) or a module (-m MODULE).")


def _needs_keras_2(error: BaseException) -> bool:
    # The ways TensorFlow >= 2.16 fails for a program written with Keras 2 when tf_keras is missing.
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = f"{type(error).__name__}: {error}"
        if re.search(r"keras|'layers'", text, re.IGNORECASE):
            return True
        error = error.__cause__ or error.__context__
    return False


def run(argv) -> int:
    """Runs ``argv`` (the words after ``run``); returns the exit status."""
    try:
        simulate, module, program, args = parse(argv)
    except UsageError as error:
        print((f"tpu_nb run: {error}\n\n" if str(error) else "") + USAGE, file=sys.stderr)
        return 0 if not str(error) else 2
    if program is not None and not os.path.isfile(program):
        print(f"tpu_nb run: no such program file {program!r}; give the path of a .py file, or -m MODULE "
              "for a module.", file=sys.stderr)
        return 2
    if simulate is not None:
        os.environ["TPU_NB_SIMULATE"] = simulate

    from .installing import install

    keras_note = install(quiet=True)
    if program is not None:
        sys.argv = [program] + list(args)
        sys.path.insert(0, os.path.dirname(os.path.abspath(program)))
    else:
        sys.argv = [module] + list(args)
        sys.path.insert(0, os.getcwd())
    if module == "pytest":
        _absl_flags_at_their_defaults()
    try:
        if program is not None:
            runpy.run_path(program, run_name="__main__")
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    except BaseException as error:  # the program's own failure: its traceback, then what to do
        traceback.print_exc()
        if keras_note and _needs_keras_2(error):
            print(f"\ntpu_nb run: {keras_note}", file=sys.stderr)
        return 1
    return 0


def _absl_flags_at_their_defaults():
    # The original's test files read absl flags (FLAGS.test_num_shards) that absltest.main() parses; under
    # pytest nobody parses them and every read fails. Marked parsed, each flag reads as its default.
    try:
        from absl import flags
    except ImportError:
        return
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv=None) -> int:
    """``python -m tpu_nb COMMAND ...``; the only command is ``run``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] != "run":
        print(f"tpu_nb: unknown command {argv[0]!r}; the command is `run`.\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(argv[1:])
