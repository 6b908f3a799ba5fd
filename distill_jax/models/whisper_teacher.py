"""Whisper + its character-CTC head as a `Teacher` (models/teacher.py).

    teacher = WhisperCtcTeacher(model, params, vocab)   # model: models.whisper_ctc.WhisperCtc
    out = teacher.forward(params, waveform [B, S], paddings [B, S], layers=(2, 4))
    # out.log_probs [B, T', V], out.hidden [2, B, T', D] (Whisper encoder states: 0 = the
    # conv stem's output, L = the final layer norm's), out.frame_paddings [B, T']

Frames are 20 ms (320 samples), the students' wav2vec2-teacher rate. With a fixed window
(`window_samples`, e.g. Whisper's 30 s) every clip sees the same window, so a row's posteriors do
not depend on how far its batch is padded; with shortened windows (0) they do, and a cache
records each utterance's padded length (`padding_invariant`).

Frame counts. Whatever the window, the forward returns the frames of the batch's own padded
length S, `num_frames(S)` = ceil((S // 160) / 2) (a fixed window's frames past S are padding
and are cropped: the student's frame alignment, `losses/frame_align.py`, and the cache need
the batch's frame count, not the window's 1500). A row of n valid samples has `num_frames(n)`
valid frames, whatever S: the frame whose 2 mel frames straddle the end of the audio (n not a
multiple of 320) counts as padding, so the cache writer's per-utterance frame count holds in
every batch.
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
    paddings = jnp.asarray(paddings, jnp.float32)
    out = self.model.apply({"params": params}, jnp.asarray(waveform, jnp.float32), paddings,
                           train=False)
    t = self.num_frames(waveform.shape[1])  # crops a fixed window to the batch's frames
    states = out["hidden_states"][:, :, :t]
    hidden = (states[jnp.asarray(layers)].astype(jnp.float32) if layers
              else jnp.zeros((0,) + states.shape[1:], jnp.float32))
    # Valid frames: those of num_frames(n) for the row's n valid samples (right padding).
    n = jnp.sum(1.0 - paddings, axis=1).astype(jnp.int32)
    num_valid = (n // whisper_ctc.whisper_features.HOP_LENGTH + 1) // 2
    beyond = jnp.arange(t)[None, :] >= num_valid[:, None]
    frame_paddings = jnp.maximum(out["paddings"][:, :t], beyond.astype(jnp.float32))
    return teacher_lib.TeacherOutput(
        log_probs=jax.nn.log_softmax(out["logits"][:, :t].astype(jnp.float32), axis=-1),
        hidden=hidden, frame_paddings=frame_paddings)

  def num_frames(self, num_samples: int) -> int:
    """Frames of a batch padded to `num_samples` (and the valid frames of a row that long).

    Raises ValueError (naming the lengths) when the audio does not fit the teacher's window.
    """
    self.model.num_frames(num_samples)  # checks the window
    return whisper_ctc.window_frames(self.model.whisper, 0, num_samples)

  def describe(self) -> dict[str, Any]:
    head = {f.name: getattr(self.model, f.name) for f in dataclasses.fields(self.model)
            if f.name not in ("whisper", "dtype", "parent", "name")}
    return {"whisper": self.model.whisper.to_hf_dict(), "ctc_head": head}
