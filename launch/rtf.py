r"""Real-time factor of a student checkpoint or a converted teacher on a pinned number of CPUs:

  python -m launch.rtf --workdir=runs/demo/kd --threads=1 [--split=test | --manifest=FILE]
  python -m launch.rtf --config=configs/demo.py --teacher=runs/demo/teacher --threads=1

A run folder's saved config gives its data (--config overrides the data entries); a teacher
takes --config's (default configs/base.py).

The process re-executes itself pinned to `--threads` CPUs (sched_setaffinity, and one XLA
intra-op thread when --threads=1) before JAX starts, so the figure is what one core gives.
Each padded shape is compiled first (untimed); then the split is decoded greedily and timed.
Prints (and with --out writes) a JSON summary: rtf (compilation excluded, on `cpus` CPUs),
seconds, audio_seconds, cpus, ... (`launch.eval`'s `eval_rtf` is another figure: all CPUs,
compilation included).
"""

import json
import os
import sys

from absl import app, flags

from launch import common

_CONFIG = common.define_config_flag()
_CONFIG_JSON = flags.DEFINE_string("config_json", None, "A config saved as JSON (what the demo "
                                   "passes) instead of --config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Student run folder (or use --teacher).")
_CHECKPOINT = common.define_checkpoint_flag()
_TEACHER = flags.DEFINE_string("teacher", None, "Converted teacher folder instead of a student.")
_SPLIT = flags.DEFINE_string("split", "test", "config.data entry to decode.")
_MANIFEST = flags.DEFINE_string("manifest", None, "A JSONL manifest to decode instead.")
_THREADS = flags.DEFINE_integer("threads", 1, "CPUs to run on (0 = as many as the machine has).")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON summary here.")

_PINNED = "DISTILL_JAX_RTF_PINNED"


def _pin_and_reexec(threads: int) -> None:
  """Restarts this command on `threads` CPUs with matching XLA flags (JAX reads both once)."""
  cpus = sorted(os.sched_getaffinity(0))
  if threads > len(cpus):
    raise app.UsageError(f"--threads={threads} but this process may use {len(cpus)} CPU(s)")
  env = dict(os.environ, **{_PINNED: "1"})
  if threads == 1:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                        " intra_op_parallelism_threads=1").strip()
  os.sched_setaffinity(0, cpus[:threads])
  os.execve(sys.executable, [sys.executable, "-m", "launch.rtf"] + sys.argv[1:], env)


def _config():
  if _CONFIG.value and _CONFIG_JSON.value:
    raise app.UsageError("give at most one of --config and --config_json")
  if not _CONFIG_JSON.value:
    return _CONFIG.value
  import ml_collections  # pylint: disable=import-outside-toplevel
  with open(_CONFIG_JSON.value) as f:
    return ml_collections.ConfigDict(json.load(f))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _config()  # flag errors before the restart
  if bool(_WORKDIR.value) == bool(_TEACHER.value):
    raise app.UsageError("give exactly one of --workdir (a student) and --teacher")
  if _THREADS.value and not os.environ.get(_PINNED):
    _pin_and_reexec(_THREADS.value)
  common.setup_logging()
  # JAX is imported only now, after the re-exec pinned this process.
  from distill_jax.jobs import evaluate  # pylint: disable=import-outside-toplevel
  result = evaluate.measure_rtf(config=_config(), split=_SPLIT.value, manifest=_MANIFEST.value,
                                workdir=_WORKDIR.value, which=_CHECKPOINT.value,
                                teacher_dir=_TEACHER.value)
  if _THREADS.value and result["cpus"] != _THREADS.value:
    raise RuntimeError(f"pinned to {_THREADS.value} CPU(s) but JAX ran on {result['cpus']}")
  text = json.dumps(result, indent=2)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
