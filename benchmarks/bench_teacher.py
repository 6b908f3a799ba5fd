r"""Benchmarks the JAX wav2vec2 teacher against transformers' PyTorch Wav2Vec2ForCTC.

The configuration is that of facebook/wav2vec2-large-robust-ft-libri-960h (written here by hand,
nothing is downloaded) with random weights saved locally with `save_pretrained`. Measured in one
run: conversion (time and peak RSS, in a child process), and the forward pass of both
implementations on identical inputs (median of --runs after warm-up, runs interleaved so load
changes hit both), with the max |logit difference| on valid frames. Inputs: normalized random
audio, the batch's utterances 100 %..85 % of the bucket length, with attention masks (this
family's processor default).

  nice -n 19 python -m benchmarks.bench_teacher --runs=5

Needs requirements-reference.txt (torch CPU, transformers).
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import common as bcommon

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 5, "Timed runs per case (median reported).")
flags.DEFINE_string("cases", "4:1,8:4", "Comma-separated SECONDS:BATCH cases.")
flags.DEFINE_string("workdir", None, "Where to write the checkpoints (default: a temp dir).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "JAX compute dtype.")
flags.DEFINE_bool("convert", True, "Measure conversion (time, peak RSS) in a child process.")

# facebook/wav2vec2-large-robust-ft-libri-960h (transformers config.json fields).
LARGE_ROBUST = dict(
    vocab_size=32, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
    intermediate_size=4096, hidden_act="gelu", hidden_dropout=0.1, activation_dropout=0.1,
    attention_dropout=0.1, feat_proj_dropout=0.1, final_dropout=0.1, layerdrop=0.1,
    layer_norm_eps=1e-5, feat_extract_norm="layer", feat_extract_activation="gelu",
    conv_dim=[512] * 7, conv_stride=[5, 2, 2, 2, 2, 2, 2], conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_bias=True, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    do_stable_layer_norm=True, apply_spec_augment=True, mask_time_prob=0.05,
    mask_time_length=10, mask_feature_prob=0.0, ctc_loss_reduction="sum",
    ctc_zero_infinity=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)

_CONVERT_CHILD = r"""
import json, sys, time


def hwm_mb():  # peak RSS of this process image (ru_maxrss would include the parent's, pre-exec)
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024


t0 = time.perf_counter()
from distill_jax.convert import hf_wav2vec2
rss_import = hwm_mb()
t1 = time.perf_counter()
config, params, tok = hf_wav2vec2.load_hf_folder(sys.argv[1])
t2 = time.perf_counter()
rss_load = hwm_mb()
sha = hf_wav2vec2.weights_sha256(sys.argv[1])
t3 = time.perf_counter()
hf_wav2vec2.save_teacher(sys.argv[2], config, params, tok, source=sys.argv[1], source_sha256=sha)
t4 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, sha256_s=t3 - t2, orbax_save_s=t4 - t3,
                      rss_after_import_mb=rss_import, peak_rss_load_mb=rss_load,
                      peak_rss_mb=hwm_mb())))
"""


def _make_checkpoint(folder: str) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from distill_jax import text  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**LARGE_ROBUST))
  model.save_pretrained(folder)
  text.CharTokenizer().save(folder)
  with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as f:
    json.dump({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
               "do_normalize": True, "return_attention_mask": True, "padding_value": 0.0,
               "padding_side": "right", "sampling_rate": 16000}, f)


def _inputs(seconds: float, batch: int, seed: int = 0):
  """Normalized random audio, batch of decreasing lengths (last = 85 %), right-padded."""
  from distill_jax.models import wav2vec2 as w2v  # pylint: disable=import-outside-toplevel
  s = int(seconds * 16000)
  rng = np.random.RandomState(seed)
  x = rng.randn(batch, s).astype(np.float32)
  pad = np.zeros_like(x)
  for i in range(batch):
    n = s - int(0.15 * s * i / max(batch - 1, 1))
    pad[i, n:] = 1.0
  x = np.asarray(w2v.normalize_waveform(x, pad))
  return x, pad


def _median_ms(times):
  return 1000.0 * float(np.median(times))


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from distill_jax.convert import hf_wav2vec2  # pylint: disable=import-outside-toplevel
  from distill_jax.models import wav2vec2 as w2v  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(os.cpu_count())
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="bench_teacher_")
  hf_dir = os.path.join(workdir, "hf")
  if not os.path.isfile(os.path.join(hf_dir, "model.safetensors")):
    t = time.perf_counter()
    _make_checkpoint(hf_dir)
    print(f"random large-robust checkpoint saved to {hf_dir} in {time.perf_counter() - t:.1f} s")
  size_gb = os.path.getsize(os.path.join(hf_dir, "model.safetensors")) / 2**30

  rows = []
  if FLAGS.convert:
    out_dir = tempfile.mkdtemp(prefix="teacher_", dir=workdir)
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _CONVERT_CHILD, hf_dir, out_dir], check=True,
                         capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wall = time.perf_counter() - t
    conv = json.loads(res.stdout.strip().splitlines()[-1])
    rows.append(("conversion", conv, wall))

  config, params, _ = hf_wav2vec2.load_hf_folder(hf_dir)
  params = jax.device_put(params)
  dtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
  flax_model = w2v.Wav2Vec2ForCTC(config, dtype=dtype)
  fwd = jax.jit(lambda p, w, m: flax_model.apply({"params": p}, w, m))
  model = transformers.Wav2Vec2ForCTC.from_pretrained(hf_dir).eval()

  results = []
  for case in FLAGS.cases.split(","):
    seconds, batch = float(case.split(":")[0]), int(case.split(":")[1])
    x, pad = _inputs(seconds, batch)
    xt, mt = torch.tensor(x), torch.tensor((1 - pad).astype(np.int64))

    def run_jax():
      return jax.block_until_ready(fwd(params, x, pad))

    def run_torch():
      with torch.inference_mode():
        return model(xt, attention_mask=mt).logits

    t = time.perf_counter()
    fwd.lower(params, x, pad).compile()
    compile_s = time.perf_counter() - t
    out = run_jax()  # warm-up
    ref = run_torch()
    run_jax()
    run_torch()
    tj, tt = [], []
    for _ in range(FLAGS.runs):  # Interleaved; a pause lets the other runtime's threads idle.
      time.sleep(0.5)
      t = time.perf_counter()
      run_jax()
      tj.append(time.perf_counter() - t)
      time.sleep(0.5)
      t = time.perf_counter()
      run_torch()
      tt.append(time.perf_counter() - t)
    valid = np.asarray(out["frame_paddings"]) < 0.5
    diff = float(np.abs(np.asarray(out["logits"]) - ref.numpy())[valid].max())
    results.append((f"{seconds:g} s x {batch}", _median_ms(tj), _median_ms(tt), diff,
                    compile_s, min(tj) * 1000, min(tt) * 1000))
    print(f"{case}: jax {tj} torch {tt}", flush=True)

  print()
  print(f"wav2vec2-large-robust config, random weights ({size_gb:.2f} GiB float32), "
        f"{bcommon.cpu_description()}, jax {jax.__version__} ({FLAGS.dtype}), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, "
        f"median of {FLAGS.runs}")
  for _, conv, wall in rows:
    print(f"conversion (child process, wall {wall:.1f} s incl. imports): load_hf_folder "
          f"{conv['load_s']:.1f} s (peak RSS {conv['peak_rss_load_mb']:.0f} MB), sha256 "
          f"{conv['sha256_s']:.1f} s, Orbax save {conv['orbax_save_s']:.1f} s; peak RSS "
          f"{conv['peak_rss_mb']:.0f} MB (after imports {conv['rss_after_import_mb']:.0f} MB)")
  print()
  print("| case | JAX ms | PyTorch ms | JAX/PyTorch | JAX min ms | PyTorch min ms "
        "| max abs logit diff | JAX compile s |")
  print("|---|---|---|---|---|---|---|---|")
  for name, j, t, d, c, jmin, tmin in results:
    print(f"| {name} | {j:.0f} | {t:.0f} | {j / t:.2f} | {jmin:.0f} | {tmin:.0f} | {d:.2e} "
          f"| {c:.1f} |")
  print(f"\nmax RSS of this process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
  app.run(main)
