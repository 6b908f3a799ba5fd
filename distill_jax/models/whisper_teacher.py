"""Whisper + its character-CTC head as a `Teacher` (models/teacher.py).

    teacher = WhisperCtcTeacher(model, params, vocab)   # model: models.whisper_ctc.WhisperCtc
    out = teacher.forward(params, waveform [B, S], paddings [B, S], layers=(2, 4))
    # out.log_probs [B, T', V], out.hidden [2, B, T', D] (Whisper encoder states: 0 = the
    # conv stem's output, L = the final layer norm's), out.frame_paddings [B, T']

Frames are 20 ms (320 samples), the students' wav2vec2-teacher rate. With a fixed window
(`window_samples`, e.g. Whisper's 30 s) every clip sees the same window, so a row's posteriors do
not depend on how far its batch is padded; with shortened windows (0) they do, and a cache
records each utterance's padded length (`padding_invariant`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from distill_jax.models import teacher as teacher_lib
from distill_jax.models import whisper_ctc


class WhisperCtcTeacher(teacher_lib.Teacher):
  """A frozen Whisper encoder + trained CTC head behind the one teacher interface.

  Args:
    model: the `WhisperCtc` module (its `dtype` is the compute dtype).
    params: its params (`encoder`, `layer_weights`, `ctc_head`).
    vocab: {token: id} of the head's classes (the student's character vocabulary).
  """
  family = "whisper"

  def __init__(self, model: whisper_ctc.WhisperCtc, params: Any, vocab: Mapping[str, int]):
    if len(vocab) != model.vocab_size:
      raise ValueError(f"the Whisper CTC head has {model.vocab_size} outputs but its vocabulary "
                       f"lists {len(vocab)} tokens")
    self.model = model
    self.params = params
    self.vocab = dict(vocab)
    self.compute_dtype = jnp.dtype(model.dtype).name
    self.sample_rate = whisper_ctc.whisper_features.SAMPLE_RATE
    self.frame_samples = whisper_ctc.FRAME_SAMPLES
    self.hidden_size = model.whisper.d_model
    self.num_hidden_states = model.whisper.encoder_layers + 1
    self.padding_invariant = bool(model.window_samples)

  def forward(self, params: Any, waveform: jax.Array, paddings: jax.Array,
              layers: Sequence[int] = ()) -> teacher_lib.TeacherOutput:
    layers = self.check_layers(layers)
    out = self.model.apply({"params": params}, jnp.asarray(waveform, jnp.float32), paddings,
                           train=False)
    states = out["hidden_states"]
    hidden = (states[jnp.asarray(layers)].astype(jnp.float32) if layers
              else jnp.zeros((0,) + states.shape[1:], jnp.float32))
    return teacher_lib.TeacherOutput(
        log_probs=jax.nn.log_softmax(out["logits"].astype(jnp.float32), axis=-1),
        hidden=hidden, frame_paddings=out["paddings"])

  def num_frames(self, num_samples: int) -> int:
    return self.model.num_frames(num_samples)

  def describe(self) -> dict[str, Any]:
    head = {f.name: getattr(self.model, f.name) for f in dataclasses.fields(self.model)
            if f.name not in ("whisper", "dtype", "parent", "name")}
    return {"whisper": self.model.whisper.to_hf_dict(), "ctc_head": head}
