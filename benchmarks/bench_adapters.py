r"""Full fine-tuning vs LoRA vs QLoRA on the wav2vec2 large-robust teacher, and NF4 vs Qwix.

One training step (CTC loss, dropout on, AdamW) on --seconds of random audio with random
labels, on the configuration of facebook/wav2vec2-large-robust-ft-libri-960h
(`bench_teacher.LARGE_ROBUST`, random weights, nothing downloaded). Each variant runs in a
fresh child process, so no variant sees another's buffers or compilation caches:

* full: every param trained (float32 params, gradients and Adam moments for all of them).
* lora: float32 base frozen (an argument of the step, never in the optimizer state); adapters
  of rank --rank on --targets trained.
* qlora: the same adapters; the base's --quantize kernels stored as NF4 (block 64, double
  quantization) and dequantized per layer inside the step.

Memory is measured two ways, both printed:
* XLA: `jit(step).lower(...).compile().memory_analysis()`: argument + output + temp - alias
  bytes of the step program (params / adapters / optimizer state donated). Deterministic; what
  the step needs, whatever else shares the machine. This is the figure the target ratio
  (QLoRA <= 0.35x full) is checked on.
* RSS: the child's peak resident set (VmHWM) from after the base params are in memory to the
  end of the timed steps (reset with /proc/self/clear_refs), so it covers compilation and the
  steps, plus the peak of the whole child including building the random weights.

Step time: median of --steps steps after the compiled program's first call, as wall time and as
process CPU time (all threads); on a shared machine where other jobs pre-empt or pause this one,
the CPU time is the steadier figure. The NF4-vs-Qwix part runs
one layer of the config (the feed-forward intermediate Dense, 1024 -> 4096) on the frames of
--seconds of audio: relative output error of each 4-bit layer against the float layer and
the forward time ratio. Qwix (requirements-qwix.txt) is imported only there; without it that
part prints how to install it.

  nice -n 19 python -m benchmarks.bench_adapters
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_float("seconds", 4.0, "Audio length of the one-utterance batch.")
flags.DEFINE_integer("steps", 3, "Timed steps per variant after the compiling one (median).")
flags.DEFINE_integer("rank", 8, "LoRA rank.")
flags.DEFINE_float("alpha", 16.0, "LoRA alpha.")
flags.DEFINE_list("variants", ["qlora", "lora", "full"], "Variants to run.")
flags.DEFINE_list("targets", [r".*attention/(q|k|v|out)_proj/kernel",
                              r".*feed_forward/(intermediate|output)_dense/kernel"],
                  "LoRA target patterns.")
flags.DEFINE_list("quantize", [r".*kernel", r".*weight_v"],
                  "QLoRA: patterns of the base params stored as NF4.")
flags.DEFINE_bool("xla_memory_scheduler", False,
                  "Children run with XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler="
                  "false: XLA:CPU's default scheduler keeps every layer's dequantized NF4 kernel "
                  "(and any other per-layer temporary) alive at once.")
flags.DEFINE_bool("qwix", True, "Compare our NF4 layer with Qwix's on one layer.")
flags.DEFINE_integer("layers", None, "Override the 24 transformer layers (quick smoke runs).")
flags.DEFINE_string("child", None, "Internal: run one variant and print its JSON result.")


_MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _config():
  from distill_jax.models import wav2vec2 as w2v  # pylint: disable=import-outside-toplevel
  from benchmarks.bench_teacher import LARGE_ROBUST  # pylint: disable=import-outside-toplevel
  hf = dict(LARGE_ROBUST, model_type="wav2vec2")
  if FLAGS.layers:
    hf["num_hidden_layers"] = FLAGS.layers
  return w2v.Wav2Vec2Config.from_hf_dict(hf)


def _bytes(tree) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def run_variant(variant: str) -> dict:
  """One variant in this process; returns its measurements."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from distill_jax.adapters import lora  # pylint: disable=import-outside-toplevel
  from distill_jax.losses.ctc import ctc_loss  # pylint: disable=import-outside-toplevel
  from distill_jax.models import wav2vec2 as w2v  # pylint: disable=import-outside-toplevel

  config = _config()
  model = w2v.Wav2Vec2ForCTC(config)
  t0 = time.perf_counter()
  params = jax.device_put(w2v.init_params(config, 0))  # the numpy copy is freed on return
  float_bytes = _bytes(params)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  adapters = None
  if variant != "full":
    adapters = lora.init_lora(params, FLAGS.targets, FLAGS.rank, FLAGS.alpha,
                              jax.random.key(1), dropout=0.05)
  if variant == "qlora":
    params = lora.quantize_base(params, FLAGS.quantize)
    jax.block_until_ready(params)
  base_bytes = _bytes(params)
  setup_s = time.perf_counter() - t0
  rss_setup_peak_mb = common.status_kb("VmHWM") / 1024
  reset_ok = common.reset_peak_rss()

  s = int(FLAGS.seconds * 16000)
  rng = np.random.RandomState(0)
  wave = jnp.asarray(rng.randn(1, s).astype(np.float32))
  wave_pad = jnp.zeros((1, s), jnp.float32)
  num_labels = int(FLAGS.seconds * 12)  # ~12 characters per second of speech
  labels = jnp.asarray(rng.randint(3, config.vocab_size, (1, num_labels)), jnp.int32)
  label_pad = jnp.zeros((1, num_labels), jnp.float32)
  tx = optax.adamw(1e-4)

  def forward(base, adapters, key):
    kwargs = dict(deterministic=False, rngs={"dropout": key})
    if adapters is None:
      return model.apply({"params": base}, wave, wave_pad, **kwargs)
    return lora.lora_apply(model, {"params": base}, adapters, wave, wave_pad,
                           lora_deterministic=False, **kwargs)

  def loss_of(out):
    return ctc_loss(out["logits"], out["frame_paddings"], labels, label_pad)["loss"]

  if variant == "full":
    trained, frozen = params, None

    def step(trained, opt_state, frozen, key):
      del frozen
      loss, grads = jax.value_and_grad(lambda p: loss_of(forward(p, None, key)))(trained)
      updates, opt_state = tx.update(grads, opt_state, trained)
      return optax.apply_updates(trained, updates), opt_state, loss
  else:
    trained, frozen = adapters, params

    def step(trained, opt_state, frozen, key):
      loss, grads = jax.value_and_grad(lambda a: loss_of(forward(frozen, a, key)))(trained)
      updates, opt_state = tx.update(grads, opt_state, trained)
      return optax.apply_updates(trained, updates), opt_state, loss

  opt_state = tx.init(trained)
  trained_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trained))
  opt_bytes = _bytes(opt_state)
  jstep = jax.jit(step, donate_argnums=(0, 1))
  key = jax.random.key(2)
  t = time.perf_counter()
  compiled = jstep.lower(trained, opt_state, frozen, key).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  xla = dict(argument=mem.argument_size_in_bytes, output=mem.output_size_in_bytes,
             temp=mem.temp_size_in_bytes, alias=mem.alias_size_in_bytes)
  xla["peak"] = xla["argument"] + xla["output"] + xla["temp"] - xla["alias"]
  times, cpu_times, losses = [], [], []
  for i in range(FLAGS.steps + 1):
    t, c = time.perf_counter(), time.process_time()
    trained, opt_state, loss = compiled(trained, opt_state, frozen, jax.random.fold_in(key, i))
    losses.append(float(loss))  # blocks
    times.append(time.perf_counter() - t)
    cpu_times.append(time.process_time() - c)
  return dict(variant=variant, num_params=num_params, trained_params=trained_params,
              float_bytes=float_bytes, base_bytes=base_bytes, opt_bytes=opt_bytes, xla=xla,
              compile_s=compile_s, first_step_s=times[0], step_s=float(np.median(times[1:])),
              step_cpu_s=float(np.median(cpu_times[1:])), step_times=times, losses=losses,
              setup_s=setup_s,
              rss_step_peak_mb=common.status_kb("VmHWM") / 1024 if reset_ok else None,
              rss_whole_peak_mb=max(rss_setup_peak_mb, common.status_kb("VmHWM") / 1024))


def compare_qwix(seconds: float) -> list[str]:
  """Our NF4 Dense vs Qwix's PTQ NF4 Dense vs the float layer, on one large-robust FFN layer."""
  try:
    import qwix  # pylint: disable=import-outside-toplevel
  except ImportError:
    return ["Qwix is not installed: `pip install -r requirements-qwix.txt` to compare with it."]
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from distill_jax.adapters import lora, nf4  # pylint: disable=import-outside-toplevel
  from distill_jax.models import wav2vec2 as w2v  # pylint: disable=import-outside-toplevel
  from benchmarks.bench_teacher import LARGE_ROBUST  # pylint: disable=import-outside-toplevel

  d_in, d_out = LARGE_ROBUST["hidden_size"], LARGE_ROBUST["intermediate_size"]
  config = _config()
  frames = w2v.num_frames(config, int(seconds * 16000))
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(1, frames, d_in).astype(np.float32))
  layer = nn.Dense(d_out)
  params = {"kernel": jnp.asarray((rng.randn(d_in, d_out) / np.sqrt(d_in)).astype(np.float32)),
            "bias": jnp.asarray((0.02 * rng.randn(d_out)).astype(np.float32))}
  ours_params = lora.quantize_base(params, "kernel")
  provider = qwix.PtqProvider([qwix.QtRule(module_path=".*", weight_qtype="nf4", tile_size=64)])
  qlayer = qwix.quantize_model(layer, provider)
  abstract = jax.eval_shape(qlayer.init, jax.random.key(0), x)["params"]
  qwix_params = qwix.quantize_params(params, abstract)

  fns = {
      "float": (jax.jit(lambda p, x: layer.apply({"params": p}, x)), params),
      "ours NF4": (jax.jit(lambda p, x: lora.lora_apply(layer, {"params": p}, None, x)),
                   ours_params),
      "qwix NF4": (jax.jit(lambda p, x: qlayer.apply({"params": p}, x)), qwix_params),
  }
  ref = np.asarray(fns["float"][0](params, x))
  results = {}
  for name, (fn, p) in fns.items():
    y = np.asarray(fn(p, x))  # compile
    times = []
    for _ in range(20):
      t = time.perf_counter()
      jax.block_until_ready(fn(p, x))
      times.append(time.perf_counter() - t)
    err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    results[name] = (float(np.median(times)) * 1000, err, float(np.abs(y - ref).max()))
  kernel = ours_params["kernel"]
  qk = qwix_params["kernel"].array
  qwix_bits = 8 * (qk.qvalue.size * 0.5 + qk.scale.size * 4) / (d_in * d_out)
  lines = [f"One Dense layer [{d_in} -> {d_out}] on x [1, {frames}, {d_in}] (float32 compute), "
           f"qwix {getattr(qwix, '__version__', '?')}: ours = bitsandbytes NF4 (64-blocks "
           "row-major, double-quantized absmax); qwix = PtqProvider nf4, tile_size=64 along "
           "d_in per output channel, float32 scales.",
           "| layer | bits/param | forward ms (median of 20) | x float | rel. L2 error vs float "
           "| max abs error |", "|---|---|---|---|---|---|"]
  bits = {"float": 32.0, "ours NF4": nf4.bits_per_param(kernel), "qwix NF4": qwix_bits}
  for name, (ms, err, mx) in results.items():
    lines.append(f"| {name} | {bits[name]:.3f} | {ms:.2f} | {ms / results['float'][0]:.2f} "
                 f"| {err:.4f} | {mx:.4f} |")
  lines.append(f"ours / qwix forward time: {results['ours NF4'][0] / results['qwix NF4'][0]:.2f}"
               f"; error ratio ours / qwix: {results['ours NF4'][1] / results['qwix NF4'][1]:.3f}")
  return lines


def main(argv):
  del argv
  if FLAGS.child:
    print(json.dumps(run_variant(FLAGS.child)))
    return
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  results = {}
  for variant in FLAGS.variants:
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.bench_adapters", f"--child={variant}"] + [
        a for a in sys.argv[1:] if not a.startswith("--child")]
    env = dict(os.environ)
    if FLAGS.xla_memory_scheduler:
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + _MEMORY_SCHEDULER).strip()
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False, env=env)
    if res.returncode:
      raise RuntimeError(f"variant {variant} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    results[variant] = json.loads(res.stdout.strip().splitlines()[-1])
    r = results[variant]
    print(json.dumps(r))
    print(f"{variant}: done in {time.perf_counter() - t:.0f} s, step times "
          f"{[round(x, 2) for x in r['step_times']]}, losses {[round(x, 3) for x in r['losses']]}",
          flush=True)

  mb = lambda b: b / 2**20
  first = next(iter(results.values()))
  scheduler = (f"memory-minimizing ({_MEMORY_SCHEDULER})" if FLAGS.xla_memory_scheduler
               else "default (concurrency-optimized)")
  print(f"\nwav2vec2-large-robust config, random weights, {first['num_params'] / 1e6:.1f} M params "
        f"({mb(first['float_bytes']):.0f} MiB float32); one step on {FLAGS.seconds:g} s of audio "
        f"(batch 1, CTC, dropout on, AdamW); LoRA rank {FLAGS.rank} on {FLAGS.targets}; QLoRA "
        f"NF4 on {FLAGS.quantize}; {os.cpu_count()} CPUs shared with other jobs (nice 19), so "
        f"times are indicative. XLA:CPU scheduler: {scheduler}.")
  print("| variant | trained params | base bytes (MiB) | base / float32 | optimizer state (MiB) "
        "| XLA peak (MiB): args + out + temp - alias | XLA temp (MiB) | RSS peak compile+steps "
        "(MiB) | RSS peak whole child (MiB) | compile s | step wall s | step CPU s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for v, r in results.items():
    rss = f"{r['rss_step_peak_mb']:.0f}" if r["rss_step_peak_mb"] is not None else "n/a"
    share = 100 * r["trained_params"] / r["num_params"]
    print(f"| {v} | {r['trained_params'] / 1e6:.2f} M ({share:.2f} %) | {mb(r['base_bytes']):.0f} "
          f"| {r['base_bytes'] / r['float_bytes']:.3f} "
          f"| {mb(r['opt_bytes']):.1f} | {mb(r['xla']['peak']):.0f} | {mb(r['xla']['temp']):.0f} "
          f"| {rss} | {r['rss_whole_peak_mb']:.0f} | {r['compile_s']:.0f} | {r['step_s']:.2f} "
          f"| {r['step_cpu_s']:.2f} |")
  if "full" in results:
    full = results["full"]
    for v in ("lora", "qlora"):
      if v in results:
        r = results[v]
        rss_ratio = (f"{r['rss_step_peak_mb'] / full['rss_step_peak_mb']:.3f}"
                     if r["rss_step_peak_mb"] and full["rss_step_peak_mb"] else "n/a")
        print(f"{v} / full: XLA peak memory {r['xla']['peak'] / full['xla']['peak']:.3f}, "
              f"RSS peak (compile+steps) {rss_ratio}, step wall time "
              f"{r['step_s'] / full['step_s']:.2f}, step CPU time "
              f"{r['step_cpu_s'] / full['step_cpu_s']:.2f}")
  if "qlora" in results:
    q = results["qlora"]
    ok = q["base_bytes"] / q["float_bytes"] <= 0.14
    print(f"QLoRA base weight bytes / float32: {q['base_bytes'] / q['float_bytes']:.3f} "
          f"(target <= 0.14: {'met' if ok else 'NOT met'})")
    if "full" in results:
      ratio = q["xla"]["peak"] / results["full"]["xla"]["peak"]
      print(f"QLoRA / full XLA peak memory: {ratio:.3f} (target <= 0.35: "
            f"{'met' if ratio <= 0.35 else 'NOT met'})")
  if FLAGS.qwix:
    print()
    print("\n".join(compare_qwix(FLAGS.seconds)))


if __name__ == "__main__":
  app.run(main)
