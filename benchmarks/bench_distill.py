r"""Distillation train-step throughput against the plain CTC step, measured in the same run:

  nice -n 19 python -m benchmarks.bench_distill --compare_devices  # --config: configs/demo.py

Three steps on one random batch (random audio, lengths 100 %..85 % of --seconds, random labels;
random student and teacher weights, no corpus or checkpoint needed):
  ctc       `make_train_step` (the reference),
  kd_cache  `make_distill_train_step` without a teacher: the batch carries the teacher fields as
            `TeacherCache.batch` returns them (computed once by the teacher, rounded through the
            cache's float16, top-k densified when --top_k, host numpy), so every step includes
            their host->device transfer like the cached training path (reading the memory-mapped
            shards and assembling the batch on the host are not timed),
  kd_online `make_distill_train_step` with the wav2vec2 teacher inside the step (its params the
            frozen argument).
Each timed step is `put_batch` + step + `block_until_ready`; the modes' steps are interleaved
(so load changes hit all of them) after --warmup untimed steps (the first compiles). Reported:
median step ms, valid audio seconds per second, and the ratio to `ctc` on the same devices.
The distillation settings are config.distill's (alpha, beta, temperature, layer mapping, frame
ratio), with gamma from --kd_gamma (hidden-state term on by default).

--compare_devices re-runs this script in one child process per --device_counts entry with
XLA_FLAGS=--xla_force_host_platform_device_count=N (fixed when JAX starts) and prints one table.
Also printed: the teacher cache's disk bytes per audio hour for this teacher, layers and --top_k.
"""

import functools
import json
import math
import os
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags

from distill_jax.data import teacher_cache
from distill_jax.models import build
from distill_jax.models import wav2vec2 as w2v
from distill_jax.models.wav2vec2_teacher import Wav2Vec2Teacher
from distill_jax.train import parallel, splits, state as state_lib, steps
from distill_jax.train import teacher as teacher_lib
from distill_jax.train import teacher_cache as cache_writer
from launch import common

_CONFIG = common.define_config_flag()
_BATCH = flags.DEFINE_integer("batch", 12, "Utterances per step (a multiple of the devices).")
_SECONDS = flags.DEFINE_float("seconds", 8.0, "Padded utterance length in seconds.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per mode (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per mode first (compilation).")
_T_HIDDEN = flags.DEFINE_integer("teacher_hidden", 320, "Teacher hidden size.")
_T_LAYERS = flags.DEFINE_integer("teacher_layers", 8, "Teacher transformer layers.")
_T_HEADS = flags.DEFINE_integer("teacher_heads", 4, "Teacher attention heads.")
_T_FFN = flags.DEFINE_integer("teacher_ffn", 1280, "Teacher feed-forward size.")
_T_CONV = flags.DEFINE_integer("teacher_conv_dim", 256, "Channels of the 7 feature convs.")
_KD_GAMMA = flags.DEFINE_float("kd_gamma", 0.5, "Hidden-state term weight (0 = KL + CTC only);"
                               " overrides config.distill.gamma.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Cache stores the top-k log-probs (0 = all V).")
_COMPARE = flags.DEFINE_bool("compare_devices", False, "Run one child process per "
                             "--device_counts entry and print one combined table.")
_COUNTS = flags.DEFINE_list("device_counts", ["1", "2"], "Host device counts to compare.")
_JSON = flags.DEFINE_bool("json", False, "Print the results as one JSON line (child mode).")

MODES = ("ctc", "kd_cache", "kd_online")


def _teacher_config(vocab_size: int) -> w2v.Wav2Vec2Config:
  """A small stable-layer-norm wav2vec2 (the large-robust family), 20 ms frames."""
  return w2v.Wav2Vec2Config(
      vocab_size=vocab_size, hidden_size=_T_HIDDEN.value, num_hidden_layers=_T_LAYERS.value,
      num_attention_heads=_T_HEADS.value, intermediate_size=_T_FFN.value,
      conv_dim=(_T_CONV.value,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
      conv_bias=True)


def _host_batch(b: int, s: int, vocab_size: int) -> dict[str, np.ndarray]:
  """waveform/wave_paddings [b, s] (rows 100 %..85 % valid), labels ~15 chars/s, weights 1."""
  rng = np.random.default_rng(0)
  n = s - (0.15 * s * np.arange(b) / max(b - 1, 1)).astype(int)
  wave_pad = (np.arange(s)[None] >= n[:, None]).astype(np.float32)
  wave = (0.1 * rng.standard_normal((b, s)) * (1 - wave_pad)).astype(np.float32)
  max_len = int(math.ceil(15 * s / 16000))
  label_pad = (np.arange(max_len)[None] >= (15 * n // 16000)[:, None]).astype(np.float32)
  labels = (rng.integers(1, vocab_size, (b, max_len)) * (1 - label_pad)).astype(np.int32)
  return dict(waveform=wave, wave_paddings=wave_pad, labels=labels, label_paddings=label_pad,
              weights=np.ones((b,), np.float32))


def _cached_fields(teacher, layers, batch) -> dict[str, np.ndarray]:
  """The teacher fields as `TeacherCache.batch` returns them: float16-rounded values, top-k
  densified, log(1/V) / zeros at padded frames, hidden batch-major [B, P, Tt, D]; float32."""
  out = jax.device_get(cache_writer.make_cache_fn(teacher, layers, _TOP_K.value)(
      teacher.params, batch["waveform"], batch["wave_paddings"]))
  pad = np.asarray(out["frame_paddings"], np.float32)
  f16 = lambda x: np.asarray(x).astype(teacher_cache.LOG_PROBS_DTYPE).astype(np.float32)
  if _TOP_K.value:
    lp = teacher_cache.densify(f16(out["topk_log_probs"]), out["topk_ids"],
                               out["rest_log_mass"], teacher.vocab_size)
  else:
    lp = f16(out["log_probs"])
  lp = np.where(pad[..., None] > 0.5, -math.log(teacher.vocab_size), lp).astype(np.float32)
  fields = dict(teacher_log_probs=lp, teacher_paddings=pad)
  if layers:
    h = np.asarray(out["hidden"]).astype(teacher_cache.HIDDEN_DTYPE).astype(np.float32)
    fields["teacher_hidden"] = np.swapaxes(h * (1 - pad)[None, ..., None], 0, 1).copy()
  return fields


def _cache_bytes_per_hour(t_cfg: w2v.Wav2Vec2Config, num_layers: int) -> dict:
  v, k = t_cfg.vocab_size, _TOP_K.value
  lp = (k * (np.dtype(teacher_cache.LOG_PROBS_DTYPE).itemsize + (1 if v <= 256 else 2))
        + np.dtype(teacher_cache.REST_DTYPE).itemsize) if k else (
            v * np.dtype(teacher_cache.LOG_PROBS_DTYPE).itemsize)
  hid = num_layers * t_cfg.hidden_size * np.dtype(teacher_cache.HIDDEN_DTYPE).itemsize
  fps = t_cfg.sampling_rate / t_cfg.frame_rate_samples
  return dict(frames_per_s=fps, log_probs_bytes_per_frame=lp, hidden_bytes_per_frame=hid,
              bytes_per_hour=(lp + hid) * fps * 3600)


def measure() -> dict:
  """Times the three modes on all of this process's devices; returns rows and set-up facts."""
  common.enable_compilation_cache()
  config = _CONFIG.value
  config.distill.gamma = _KD_GAMMA.value
  n_dev = jax.device_count()
  if _BATCH.value % n_dev:
    raise ValueError(f"--batch={_BATCH.value} is not a multiple of the {n_dev} devices")
  tok = splits.load_tokenizer(config)
  model = build.build_student(config.model, tok.vocab_size)
  host = _host_batch(_BATCH.value, int(_SECONDS.value * 16000), tok.vocab_size)
  student = jax.jit(functools.partial(model.init, train=False))(
      {"params": jax.random.key(config.seed)}, host["waveform"][:1],
      host["wave_paddings"][:1])["params"]

  t_cfg = _teacher_config(tok.vocab_size)
  t_params = w2v.init_params(t_cfg, seed=1)
  frozen_teacher = Wav2Vec2Teacher(t_cfg, t_params, tok.vocab)
  layers = tuple(t for _, t in teacher_lib.layer_pairs(config, frozen_teacher))
  teacher = teacher_lib.RunTeacher(path="(random)", teacher=frozen_teacher, fingerprint="",
                                   layers=layers)
  spec = teacher_lib.kd_spec(config, teacher)
  kd_params = steps.init_distill_params(model, spec, student, teacher_lib.student_layers(config),
                                        jax.random.key(config.seed + 1))
  # Host copies: each mode's state gets its own device buffers (the steps donate the state).
  student, kd_params = jax.device_get((student, kd_params))
  cached = {**host, **_cached_fields(frozen_teacher, layers, host)}

  tx = state_lib.make_optimizer(config.train)
  lr = state_lib.learning_rate_schedule(config.train)
  mesh = parallel.make_mesh()
  runs = {}
  for mode in MODES:
    if mode == "ctc":
      par = parallel.parallelize(steps.make_train_step(model, tx, lr, tok.blank_id), mesh,
                                 mode=config.parallel)
      frozen, params, batch = (), student, host
    else:
      fn = teacher.forward if mode == "kd_online" else None
      par = parallel.parallelize(
          steps.make_distill_train_step(model, tx, lr, spec, teacher_fn=fn,
                                        blank_id=tok.blank_id),
          mesh, mode=config.parallel, num_frozen=1)
      frozen = (par.put_frozen(t_params if fn else None),)
      params, batch = kd_params, (host if fn else cached)
    runs[mode] = dict(par=par, frozen=frozen, batch=batch, times=[],
                      state=par.put_state(state_lib.create_state(params, tx, config.seed)))

  def one_step(r) -> float:
    t0 = time.perf_counter()
    r["state"], m = r["par"].step(r["state"], r["par"].put_batch(r["batch"]), *r["frozen"])
    jax.block_until_ready((r["state"], m))
    return time.perf_counter() - t0

  for r in runs.values():
    r["first_s"] = sum(one_step(r) for _ in range(max(_WARMUP.value, 1)))
  for _ in range(_STEPS.value):
    for r in runs.values():
      r["times"].append(one_step(r))
  audio_s = float(np.sum(1.0 - host["wave_paddings"])) / 16000
  rows = []
  for mode, r in runs.items():
    ms = 1000 * float(np.median(r["times"]))
    rows.append(dict(mode=mode, devices=n_dev, ms=ms, audio_s_per_s=audio_s / (ms / 1000),
                     warmup_s=r["first_s"], skipped=int(jax.device_get(r["state"].skipped))))
  return dict(rows=rows, audio_s=audio_s, batch=list(host["waveform"].shape),
              student_params=state_lib.count_params(student),
              projection_params=state_lib.count_params(kd_params["projections"]),
              teacher_params=state_lib.count_params(t_params), spec=repr(spec),
              layers=list(layers), cache=_cache_bytes_per_hour(t_cfg, len(layers)),
              cpus=os.cpu_count(), jax=jax.__version__)


def _children() -> list[dict]:
  """One child process per --device_counts entry; their JSON results."""
  results = []
  for n in _COUNTS.value:
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                      f" --xla_force_host_platform_device_count={n}").strip())
    argv = [a for a in sys.argv[1:] if not a.lstrip("-").startswith(
        ("compare_devices", "nocompare_devices", "device_counts", "json", "nojson"))]
    cmd = [sys.executable, "-m", "benchmarks.bench_distill", *argv, "--json"]
    print(f"XLA_FLAGS=--xla_force_host_platform_device_count={n} python {' '.join(cmd[1:])}",
          flush=True)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if res.returncode:
      raise RuntimeError(f"child with {n} device(s) failed:\n{res.stderr[-4000:]}")
    results.append(json.loads(res.stdout.strip().splitlines()[-1]))
  return results


def _report(results: list[dict]) -> None:
  r0, c = results[0], results[0]["cache"]
  print(f"\nstudent {r0['student_params']:,} params (+{r0['projection_params']:,} hidden "
        f"projections), teacher wav2vec2 {r0['teacher_params']:,} params (random); batch "
        f"{r0['batch'][0]} x {r0['batch'][1] / 16000:g} s, {r0['audio_s']:.1f} s valid audio; "
        f"{r0['cpus']} CPUs, jax {r0['jax']}; median of {_STEPS.value} steps after "
        f"{_WARMUP.value} warm-up")
  print(f"KdSpec: {r0['spec']}")
  print(f"\n{'mode':<10} {'devices':>7} {'step ms':>9} {'audio s/s':>10} {'vs ctc':>7} "
        f"{'warm-up s':>10}")
  key = []
  for res in results:
    ctc = next(r for r in res["rows"] if r["mode"] == "ctc")
    for r in res["rows"]:
      print(f"{r['mode']:<10} {r['devices']:>7} {r['ms']:>9.0f} {r['audio_s_per_s']:>10.1f} "
            f"{ctc['ms'] / r['ms']:>7.2f} {r['warmup_s']:>10.1f}"
            + (f"  ({r['skipped']} skipped updates)" if r["skipped"] else ""))
    by = {r["mode"]: r["ms"] for r in res["rows"]}
    key.append(f"{ctc['devices']} device(s): KD from cache / plain CTC = "
               f"{by['ctc'] / by['kd_cache']:.2f}, KD online / plain CTC = "
               f"{by['ctc'] / by['kd_online']:.2f}, cache vs online speed-up = "
               f"{by['kd_online'] / by['kd_cache']:.2f}x")
  print("\n" + "\n".join(key) + "\n(target: KD from cache / plain CTC >= 0.8)")
  print(f"\nteacher cache for this configuration (top_k={_TOP_K.value}, layers {r0['layers']}): "
        f"{c['log_probs_bytes_per_frame']} B log-probs + {c['hidden_bytes_per_frame']} B hidden "
        f"per frame, {c['frames_per_s']:g} frames/s -> {c['bytes_per_hour'] / 1e6:.1f} MB per "
        f"audio hour (index files not counted)")


def main(argv):
  del argv
  if _COMPARE.value:
    _report(_children())
    return
  res = measure()
  if _JSON.value:
    print(json.dumps(res))
  else:
    _report([res])


if __name__ == "__main__":
  flags.FLAGS.set_default("config", "configs/demo.py")
  app.run(main)
