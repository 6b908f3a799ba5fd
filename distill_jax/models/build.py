"""Config -> module. The one place that reads `config.model`."""

from __future__ import annotations

import math

import ml_collections

from distill_jax.audio import features as feats_lib
from distill_jax.models import encoders
from distill_jax.models import wav2vec2 as w2v
from distill_jax.models import whisper as whisper_lib
from distill_jax.models import whisper_ctc
from distill_jax.models.wav2vec2_trainee import Wav2Vec2Trainee
from distill_jax.models.heads import attention_decoder, transducer
from distill_jax.models.student import (AttentionStudent, CtcStudent, SpecAugment,
                                        TransducerStudent, Vtlp)

HEADS = ("ctc", "attention", "transducer")

# `config.model.encoder` value selecting a whole wav2vec2 CTC model instead of a student
# encoder behind the log-mel front end (the demo teacher, trained from scratch).
WAV2VEC2 = "wav2vec2"
# ... selecting Whisper's (frozen) encoder with a character-CTC head (the Whisper teacher's head).
WHISPER_CTC = "whisper_ctc"


def build_encoder(cfg: ml_collections.ConfigDict):
  """`cfg.encoder` names a class in `encoders.ENCODERS`; `cfg[cfg.encoder]` holds its fields."""
  name = cfg.encoder
  if name not in encoders.ENCODERS:
    raise ValueError(f"config.model.encoder={name!r} is not one of {sorted(encoders.ENCODERS)}")
  return encoders.ENCODERS[name](**cfg[name].to_dict())


def wav2vec2_config(cfg: ml_collections.ConfigDict,
                    vocab_size: int | None = None) -> w2v.Wav2Vec2Config:
  """`cfg.wav2vec2` (transformers `Wav2Vec2Config` fields) with the tokenizer's vocab size
  (None: the config's, for shape-only uses)."""
  if WAV2VEC2 not in cfg:
    raise ValueError("config.model.encoder='wav2vec2' needs config.model.wav2vec2 (transformers "
                     "Wav2Vec2Config fields; see configs/demo_teacher.py)")
  fields = cfg.wav2vec2.to_dict()
  if vocab_size is not None and fields.setdefault("vocab_size", vocab_size) != vocab_size:
    raise ValueError(f"config.model.wav2vec2.vocab_size={fields['vocab_size']} but the tokenizer "
                     f"has {vocab_size} tokens")
  try:
    return w2v.Wav2Vec2Config(**fields)
  except TypeError as e:  # an unknown field name
    raise ValueError(f"config.model.wav2vec2: {e}") from None


def build_wav2vec2(cfg: ml_collections.ConfigDict, vocab_size: int) -> Wav2Vec2Trainee:
  """A wav2vec2 CTC model with the student's contract; the log-mel `frontend` is not used."""
  if cfg.head != "ctc":
    raise ValueError(f"config.model.head={cfg.head!r}: the wav2vec2 model has a CTC head only")
  if cfg.vtlp_enabled:
    raise ValueError("config.model.vtlp_enabled=True: VTLP warps the log-mel front end, which "
                     "the wav2vec2 model does not use (it reads the waveform); set it False")
  speed = None
  # .get: runs saved before the key existed (their saved configs lack it) trained without it.
  if cfg.get("speed_perturb_enabled", False):
    lo, hi = cfg.speed_perturb.min_factor, cfg.speed_perturb.max_factor
    if not 0.0 < lo <= hi:
      raise ValueError(f"config.model.speed_perturb: needs 0 < min_factor <= max_factor, got "
                       f"{lo}, {hi}")
    speed = (float(lo), float(hi))
  return Wav2Vec2Trainee(wav2vec2_config(cfg, vocab_size), time_masking=cfg.specaug_enabled,
                         speed=speed)


def whisper_config(cfg: ml_collections.ConfigDict) -> whisper_lib.WhisperConfig:
  """`cfg.whisper_ctc.whisper`: transformers `WhisperConfig` fields (the encoder's matter)."""
  if WHISPER_CTC not in cfg or "whisper" not in cfg.whisper_ctc:
    raise ValueError("config.model.encoder='whisper_ctc' needs config.model.whisper_ctc.whisper "
                     "(transformers WhisperConfig fields; see configs/whisper_head.py)")
  try:
    return whisper_lib.WhisperConfig.from_hf_dict(cfg.whisper_ctc.whisper.to_dict(),
                                                  source="config.model.whisper_ctc.whisper")
  except ValueError as e:
    raise ValueError(str(e)) from None


def build_whisper_ctc(cfg: ml_collections.ConfigDict, vocab_size: int) -> whisper_ctc.WhisperCtc:
  """Whisper's encoder + a character-CTC head (`models/whisper_ctc.py`); no log-mel frontend,
  SpecAugment or VTLP of the students (Whisper has its own front end)."""
  if cfg.head != "ctc":
    raise ValueError(f"config.model.head={cfg.head!r}: the Whisper CTC model has a CTC head only")
  for flag in ("vtlp_enabled", "specaug_enabled", "speed_perturb_enabled"):
    if cfg.get(flag, False):
      raise ValueError(f"config.model.{flag}=True: the Whisper CTC model has no such "
                       "augmentation (it reads the waveform through Whisper's front end)")
  c = cfg.whisper_ctc
  return whisper_ctc.WhisperCtc(
      whisper_config(cfg), vocab_size, head_layers=c.head_layers, head_heads=c.head_heads,
      head_ffn_dim=c.head_ffn_dim, layer_sum=c.layer_sum, tuned_layers=c.get("tuned_layers", 0),
      window_samples=c.window_samples)


def build_student(cfg: ml_collections.ConfigDict, vocab_size: int, *, bos_id: int = 1,
                  eos_id: int = 2, blank_id: int = 0):
  """`cfg.head` picks the student family: 'ctc' | 'attention' | 'transducer'.

  bos_id/eos_id (attention) and blank_id (transducer start symbol) come from the tokenizer.
  `cfg.encoder='wav2vec2'` builds `build_wav2vec2`'s model instead (CTC only); its
  `cfg.specaug_enabled` switches wav2vec2's own time masking (`mask_time_prob`).
  """
  if cfg.encoder == WAV2VEC2:
    return build_wav2vec2(cfg, vocab_size)
  if cfg.encoder == WHISPER_CTC:
    return build_whisper_ctc(cfg, vocab_size)
  if cfg.head not in HEADS:
    raise ValueError(f"config.model.head={cfg.head!r} is not one of {HEADS}")
  if cfg.get("speed_perturb_enabled", False):  # absent from runs saved before it existed
    raise ValueError("config.model.speed_perturb_enabled=True: speed perturbation is the "
                     "wav2vec2 model's augmentation (it changes the frame count, which the "
                     "teacher cache's frames must match); a log-mel student uses VTLP "
                     "(config.model.vtlp_enabled)")
  specaug = SpecAugment(**cfg.specaug.to_dict()) if cfg.specaug_enabled else None
  vtlp = Vtlp(**cfg.vtlp.to_dict()) if cfg.vtlp_enabled else None
  common = dict(encoder=build_encoder(cfg), vocab_size=vocab_size,
                frontend=feats_lib.LogMelConfig.from_config(cfg.frontend),
                specaug=specaug, vtlp=vtlp, head_dropout=cfg.head_dropout)
  if cfg.head == "ctc":
    return CtcStudent(**common)
  if cfg.ctc_weight and not cfg.aux_ctc:
    raise ValueError(f"config.model.ctc_weight={cfg.ctc_weight} needs the auxiliary CTC head "
                     "(config.model.aux_ctc=True)")
  if cfg.head == "attention":
    d = cfg.attention_decoder
    if d.kind not in attention_decoder.DECODERS:
      raise ValueError(f"config.model.attention_decoder.kind={d.kind!r} is not one of "
                       f"{sorted(attention_decoder.DECODERS)}")
    kwargs = dict(vocab_size=vocab_size, dim=d.dim, num_layers=d.num_layers,
                  attention=d.attention, num_heads=d.num_heads, dropout_rate=d.dropout_rate)
    if d.kind == "transformer":
      kwargs["ff_mult"] = d.ff_mult
    if bos_id is None or eos_id is None:
      raise ValueError("the attention student needs <s> and </s> in the vocabulary")
    return AttentionStudent(**common, aux_ctc=cfg.aux_ctc,
                            decoder=attention_decoder.DECODERS[d.kind](**kwargs),
                            bos_id=bos_id, eos_id=eos_id)
  t = cfg.transducer
  predictor = transducer.PredictionNetwork(vocab_size, t.pred_dim, t.predictor, t.pred_layers,
                                           t.dropout_rate)
  return TransducerStudent(**common, aux_ctc=cfg.aux_ctc, predictor=predictor,
                           joint_dim=t.joint_dim, blank_id=blank_id)


def output_frames(cfg: ml_collections.ConfigDict, num_samples: int) -> int:
  """Number of encoder frames the student emits for `num_samples` valid samples."""
  if cfg.encoder == WAV2VEC2:
    return w2v.num_frames(wav2vec2_config(cfg), num_samples)
  if cfg.encoder == WHISPER_CTC:  # valid frames: 20 ms each; the window is checked when run
    return whisper_config(cfg).encoder_length(max(num_samples // 160, 1))
  t = feats_lib.LogMelConfig.from_config(cfg.frontend).num_frames(num_samples)
  for _ in range(int(math.log2(cfg[cfg.encoder].subsampling))):
    t = -(-t // 2)
  return t
