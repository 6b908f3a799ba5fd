"""wav2vec2 CTC as a `Teacher` (models/teacher.py): the frozen model behind the one interface.

    teacher = Wav2Vec2Teacher(config, params, vocab)
    out = teacher.forward(params, waveform [B, S], paddings [B, S], layers=(7,))
    # out.log_probs [B, Tt, V], out.hidden [1, B, Tt, D], out.frame_paddings [B, Tt]

The waveform is normalized first when the config asks for it (`do_normalize`, as its processor
would); dropout is off; log-probabilities are `log_softmax` of the CTC logits in float32. Frames
are every `config.frame_rate_samples` samples (320 = 20 ms for the hub models).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from distill_jax.models import teacher as teacher_lib
from distill_jax.models import wav2vec2 as w2v


class Wav2Vec2Teacher(teacher_lib.Teacher):
  """A frozen `Wav2Vec2ForCTC` (any family: group-norm or stable-layer-norm).

  Args:
    config: the architecture (transformers `Wav2Vec2Config` fields).
    params: its params (from `convert.hf_wav2vec2`).
    vocab: {token: id} of its CTC head (the folder's vocab.json).
    dtype: compute dtype (bfloat16 on accelerators; log-probs stay float32).
  """
  family = "wav2vec2"

  def __init__(self, config: w2v.Wav2Vec2Config, params: Any, vocab: Mapping[str, int],
               dtype: Any = jnp.float32):
    self.config = config
    self.params = params
    self.vocab = dict(vocab)
    self.compute_dtype = jnp.dtype(dtype).name
    self.model = w2v.Wav2Vec2ForCTC(config, dtype=dtype)
    self.sample_rate = config.sampling_rate
    self.frame_samples = config.frame_rate_samples
    self.hidden_size = config.hidden_size
    self.num_hidden_states = config.num_hidden_layers + 1
    # Layer-norm feature extractor + attention mask: a row's valid frames ignore the padding.
    self.padding_invariant = bool(config.attention_mask and config.feat_extract_norm == "layer")

  def forward(self, params: Any, waveform: jax.Array, paddings: jax.Array,
              layers: Sequence[int] = ()) -> teacher_lib.TeacherOutput:
    layers = self.check_layers(layers)
    waveform = jnp.asarray(waveform, jnp.float32)
    x = (w2v.normalize_waveform(waveform, paddings) if self.config.do_normalize else waveform)
    out = self.model.apply({"params": params}, x, paddings, deterministic=True)
    states = out["hidden_states"]
    hidden = (states[jnp.asarray(layers)].astype(jnp.float32) if layers
              else jnp.zeros((0,) + states.shape[1:], jnp.float32))
    return teacher_lib.TeacherOutput(log_probs=jax.nn.log_softmax(out["logits"], axis=-1),
                                     hidden=hidden, frame_paddings=out["frame_paddings"])

  def num_frames(self, num_samples: int) -> int:
    return w2v.num_frames(self.config, num_samples)

  def describe(self) -> dict[str, Any]:
    return {"config": self.config.to_hf_dict(), "preprocessor": self.config.preprocessor_dict()}

  @property
  def vocab_size(self) -> int:
    """V of the log-probs: the CTC head's width (the vocab.json may list fewer tokens)."""
    return self.config.vocab_size
