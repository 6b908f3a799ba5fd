"""The runtime runs in a process where importing jax (or flax, onnx, scipy, soxr) fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import distill_jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(distill_jax.__file__)))
BLOCKED = ("jax", "jaxlib", "flax", "optax", "orbax", "ml_collections", "onnx", "scipy", "soxr",
           "tensorflow", "torch", "transformers")

_CHILD = textwrap.dedent("""
    import json, sys
    for name in {blocked!r}:
      sys.modules[name] = None          # `import name` now raises ImportError
    from distill_jax.ondevice.transcribe import Transcriber
    res = []
    for int8 in (False, True):
      t = Transcriber.load({folder!r}, int8=int8, decoder="beam", beam_size=4)
      res.append(t.transcribe_file({audio!r}).text)
    mods = sorted(m for m in sys.modules if m.startswith("distill_jax"))
    print(json.dumps(dict(texts=res, distill_jax_modules=mods)))
""")


def test_transcribes_without_jax(exported, speech_wav):
  code = _CHILD.format(blocked=BLOCKED, folder=exported[0], audio=speech_wav[0])
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert len(out["texts"]) == 2
  allowed = {"distill_jax"} | {m for m in out["distill_jax_modules"]
                               if m.startswith("distill_jax.ondevice")}
  assert set(out["distill_jax_modules"]) == allowed


def test_the_block_is_real():
  """The same child set-up makes `import jax` fail (so the test above could fail)."""
  code = "import sys; sys.modules['jax'] = None\nimport jax"
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode != 0 and "import of jax halted" in proc.stderr
