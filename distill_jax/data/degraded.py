"""A degraded copy of a manifest: every utterance reverberated and noised (audio/degrade.py).

`degrade_manifest(src, out_dir, cfg, seed)` writes OUT_DIR/audio/<id>.wav (16-bit PCM, 16 kHz)
and OUT_DIR/<name>.jsonl with the same ids, transcripts, speakers and engines, so the copy is a
new acoustic domain for the same sentences (for example the target domain of teacher
adaptation, launch/adapt.py). Each utterance's generator is seeded from (seed, id), so the copy
does not depend on the order or the subset of utterances, and a rerun rewrites nothing that is
already there with the same parameters (OUT_DIR/degrade.json records them; other parameters in
an existing folder are an error naming both). Unreadable audio is an error naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import soundfile as sf

from distill_jax.audio import degrade as degrade_lib
from distill_jax.audio import io as audio_io
from distill_jax.data import manifest as manifest_lib

PARAMS_FILE = "degrade.json"


def utterance_seed(seed: int, uid: str) -> int:
  digest = hashlib.sha256(f"{seed}:{uid}".encode()).digest()
  return int.from_bytes(digest[:8], "little")


def degrade_manifest(src: str, out_dir: str, cfg: degrade_lib.DegradeConfig, seed: int = 0,
                     *, name: str | None = None, progress: bool = True) -> str:
  """Writes the degraded copy of manifest `src`; returns the new manifest's path."""
  utts = manifest_lib.read_manifest(src)
  name = name or os.path.splitext(os.path.basename(src))[0]
  os.makedirs(os.path.join(out_dir, "audio"), exist_ok=True)
  record = dict(config=dataclasses.asdict(cfg), seed=seed)
  params_path = os.path.join(out_dir, PARAMS_FILE)
  if os.path.exists(params_path):
    with open(params_path) as f:
      old = json.load(f)
    if old != json.loads(json.dumps(record)):
      raise ValueError(f"{out_dir} holds a copy degraded with {old}, not {record}: use another "
                       "folder")
  else:
    with open(params_path, "w") as f:
      json.dump(record, f, indent=1)
  it = utts
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    it = tqdm(utts, desc=f"degrade {name}", unit="utt")
  out, drawn = [], {}
  for u in it:
    path = os.path.join(out_dir, "audio", f"{u.id}.wav")
    if os.path.exists(path):
      frames = sf.info(path).frames
    else:
      y, p = degrade_lib.degrade(audio_io.load_audio(u.path), cfg, utterance_seed(seed, u.id))
      sf.write(path + ".tmp.wav", y, audio_io.DEFAULT_SAMPLE_RATE, subtype="PCM_16")
      os.replace(path + ".tmp.wav", path)
      frames, drawn[u.id] = y.shape[0], p
    out.append(dataclasses.replace(u, path=path,
                                   duration=frames / audio_io.DEFAULT_SAMPLE_RATE))
  manifest_path = os.path.join(out_dir, f"{name}.jsonl")
  manifest_lib.write_manifest(manifest_path, out)
  if drawn:
    log_path = os.path.join(out_dir, f"{name}_params.jsonl")
    with open(log_path, "a") as f:
      for uid, p in drawn.items():
        f.write(json.dumps(dict(id=uid, **p)) + "\n")
  return manifest_path

