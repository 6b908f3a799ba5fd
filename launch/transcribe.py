r"""Transcribe audio files with any model the project makes:

  python -m launch.transcribe exports/student clip.mp3 other.wav [--int8] [--decoder=beam_lm
      --lm=corpora/large/lm3.arpa --alpha=0.5 --beta=1.0]
  python -m launch.transcribe runs/demo_student clip.flac [--checkpoint=best]
  python -m launch.transcribe teachers/demo_hf clip.wav

MODEL is an exported on-device folder (export.json: runs on numpy + onnxruntime only), a
training run folder of a CTC student (checkpoints/: exported to a temporary on-device folder
first, so it decodes through the same runtime), or a teacher folder (converted or Hugging Face:
run with JAX through `models/teacher.py`'s interface). Audio: any format soundfile reads, any
sample rate (resampled), mono or stereo (averaged). Prints "<file>\t<text>" per file and the
real-time factor on stderr.
"""

import os
import sys
import tempfile
import types

from absl import app, flags

from distill_jax.ondevice import transcribe as transcribe_lib

_INT8 = flags.DEFINE_bool("int8", False, "Exported folder: run model.int8.onnx.")
_DECODER = flags.DEFINE_enum("decoder", "greedy", list(transcribe_lib.DECODERS), "CTC decoder.")
_BEAM = flags.DEFINE_integer("beam_size", 16, "Beam width (beam, beam_lm).")
_LM = flags.DEFINE_string("lm", None, "ARPA n-gram LM for --decoder=beam_lm.")
_ALPHA = flags.DEFINE_float("alpha", 0.5, "LM weight.")
_BETA = flags.DEFINE_float("beta", 1.0, "Word insertion bonus.")
_THREADS = flags.DEFINE_integer("threads", 1, "onnxruntime intra-op threads.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "Training run folder: which checkpoint.")


def _teacher_transcriber(folder: str) -> transcribe_lib.Transcriber:
  """A teacher folder behind the runtime's decoding (its forward runs in JAX)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from distill_jax.jobs import evaluate  # pylint: disable=g-import-not-at-top

  fwd, params, tokenizer = evaluate.teacher_forward(folder)
  vocab = [tokenizer.id_to_token[i] for i in range(tokenizer.vocab_size)]

  def log_probs(waveform):
    wav = jax.numpy.asarray(waveform)[None]
    out = fwd(params, dict(waveform=wav, wave_paddings=jax.numpy.zeros_like(wav)))
    n = int(np.sum(np.asarray(out["paddings"][0]) < 0.5))
    return np.asarray(out["log_probs"][0, :n])

  model = types.SimpleNamespace(
      blank_id=tokenizer.blank_id, log_probs=log_probs,
      meta=dict(vocabulary=vocab, word_delimiter="|",
                special_tokens=[t for t in ("<pad>", "<s>", "</s>", "<unk>") if t in vocab]))
  # The teacher reads the waveform (16 kHz) and computes its own features.
  return transcribe_lib.Transcriber(model, _DECODER.value, _BEAM.value, None, _ALPHA.value,
                                    _BETA.value, frontend=lambda w: w, sample_rate=16000)


def _load(model: str, tmp: str) -> transcribe_lib.Transcriber:
  kw = dict(decoder=_DECODER.value, beam_size=_BEAM.value, lm=_LM.value, alpha=_ALPHA.value,
            beta=_BETA.value, threads=_THREADS.value)
  if os.path.isfile(os.path.join(model, "export.json")):
    return transcribe_lib.Transcriber.load(model, int8=_INT8.value, **kw)
  if os.path.isdir(os.path.join(model, "checkpoints")):
    from distill_jax.export import folder  # pylint: disable=g-import-not-at-top
    from distill_jax.train import runs  # pylint: disable=g-import-not-at-top
    student, params, tokenizer, step = runs.restore_student(model, _CHECKPOINT.value)
    folder.export_folder(student, params, tokenizer, tmp, int8=_INT8.value,
                         source=dict(workdir=model, checkpoint=_CHECKPOINT.value, step=step))
    return transcribe_lib.Transcriber.load(tmp, int8=_INT8.value, **kw)
  if os.path.isdir(model):
    if _LM.value or _INT8.value:
      raise app.UsageError("--lm and --int8 apply to student models, not to a teacher folder")
    return _teacher_transcriber(model)
  raise app.UsageError(f"MODEL {model!r} is not a folder")


def main(argv):
  if len(argv) < 3:
    raise app.UsageError("usage: python -m launch.transcribe MODEL AUDIO [AUDIO ...]")
  model, audio = argv[1], argv[2:]
  with tempfile.TemporaryDirectory() as tmp:
    t = _load(model, tmp)
    seconds = compute = 0.0
    for path in audio:
      res = t.transcribe_file(path)
      seconds, compute = seconds + res.audio_seconds, compute + res.compute_seconds
      print(f"{path}\t{res.text}", flush=True)
  print(f"{len(audio)} file(s), {seconds:.1f} s of audio, RTF {compute / max(seconds, 1e-9):.4f}",
        file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
