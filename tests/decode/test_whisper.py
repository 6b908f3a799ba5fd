"""Tests of Whisper decoding (distill_jax/decode/whisper.py).

* Greedy search equals transformers' `generate(num_beams=1, do_sample=False)` token for token on
  tiny random checkpoints (English-only and multilingual), given the same prompt and the same
  suppression lists (passed to transformers as `suppress_tokens` / `begin_suppress_tokens`).
* Beam search is checked against an independent numpy re-implementation of CTranslate2's beam
  rule (faster-whisper's engine) driven by transformers' PyTorch model without a cache, not
  against transformers' own beam search, whose semantics differ (it divides by a length that
  counts EOS, keeps only the K best finished hypotheses and stops on another heuristic): token
  for token, and the score within SCORE_ATOL.
* The slow test decodes the vendored LibriVox clips with the real Whisper tiny.en
  (tests/models/whisper_tiny.py: REAL_FOLDER).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distill_jax.decode import whisper as dec
from distill_jax.models import whisper as w
from tests.models import whisper_tiny as tiny
from tests.models.whisper_tiny import hf_fixture  # noqa: F401  pylint: disable=unused-import

SCORE_ATOL = 1e-4  # beam score (sum log p / length), ours vs the float64 numpy reference.
MAX_NEW = 10


def _generation_config(kind: str) -> dict:
  cfg = tiny.flax_config()
  return {"decoder_start_token_id": tiny.SOT, "eos_token_id": tiny.EOS,
          "suppress_tokens": list(cfg.suppress_tokens),
          "begin_suppress_tokens": list(cfg.begin_suppress_tokens),
          **tiny.generation_fields(kind)}


def test_prompts_and_suppression_lists():
  cfg = tiny.flax_config()
  timestamps = set(range(tiny.NO_TIMESTAMPS + 1, tiny.VOCAB))
  s = dec.decode_settings(cfg, _generation_config("en"))
  assert s.prompt == (tiny.SOT, tiny.NO_TIMESTAMPS) and s.eos_id == tiny.EOS
  assert set(s.suppress) == set(tiny.SUPPRESS) | {tiny.SOT, tiny.SOT_PREV} | timestamps
  assert s.begin_suppress == (tiny.BLANK, tiny.EOS)
  assert s.max_new_tokens == 20  # max_target_positions // 2
  s = dec.decode_settings(cfg, _generation_config("multi"), suppress_timestamps=False,
                          suppress_blank=False, max_new_tokens=5)
  assert s.prompt == (tiny.SOT, tiny.EN, tiny.TRANSCRIBE, tiny.NO_TIMESTAMPS)
  assert set(s.suppress) == set(tiny.SUPPRESS) | {tiny.SOT, tiny.SOT_PREV, tiny.TRANSLATE,
                                                  tiny.TRANSCRIBE}
  assert s.begin_suppress == () and s.max_new_tokens == 5
  s = dec.decode_settings(cfg, _generation_config("multi"), language="<|de|>", task="translate",
                          suppress_control_tokens=False)
  assert s.prompt == (tiny.SOT, tiny.DE, tiny.TRANSLATE, tiny.NO_TIMESTAMPS)
  assert set(s.suppress) == set(tiny.SUPPRESS) | timestamps
  # -1 stands for the non-speech symbols.
  gen = {**_generation_config("en"), "suppress_tokens": [-1, 5]}
  s = dec.decode_settings(cfg, gen, non_speech_ids=[40, 41])
  assert {5, 40, 41} <= set(s.suppress) and -1 not in s.suppress
  with pytest.raises(ValueError, match="contains -1.*non_speech_ids"):
    dec.decode_settings(cfg, gen)
  with pytest.raises(ValueError, match="language='de': this is an English-only model"):
    dec.decode_settings(cfg, _generation_config("en"), language="de")
  with pytest.raises(ValueError, match=r"language='fr': <\|fr\|> is not in generation_config"):
    dec.decode_settings(cfg, _generation_config("multi"), language="fr")
  with pytest.raises(ValueError, match="task='summarize'"):
    dec.decode_settings(cfg, _generation_config("multi"), task="summarize")
  with pytest.raises(ValueError, match="multilingual model .*needs generation_config lang_to_id"):
    dec.decode_settings(w.WhisperConfig(), {"no_timestamps_token_id": 50363})
  with pytest.raises(ValueError, match="no no_timestamps_token_id"):
    dec.decode_settings(cfg, {})
  with pytest.raises(ValueError, match=r"prompt \(2 tokens\) \+ max_new_tokens \(39\) = 41 > "
                                       r"max_target_positions=40"):
    dec.decode_settings(cfg, _generation_config("en"), max_new_tokens=39)
  with pytest.raises(ValueError, match="eos_id=250 is in suppress"):
    dec.decode_settings(cfg, {**_generation_config("en"), "suppress_tokens": [tiny.EOS]})


def test_non_speech_token_ids_rule():
  """openai-whisper's rule on a toy tokenizer (one id per character, in order)."""
  encode = lambda s: [ord(c) for c in s]
  ids = dec.non_speech_token_ids(encode)
  assert ord(" ") in ids                        # " -" and " '" give their first token
  assert ord("#") in ids and ord("「") in ids    # single-token symbols
  assert ord("♪") in ids and ord("♯") in ids    # music signs, first token
  assert ord("a") not in ids and ord("-") not in ids  # "--" etc. are two tokens here
  assert ids == sorted(set(ids))


@pytest.fixture(name="checkpoint", scope="module")
def _checkpoint(tmp_path_factory):
  """kind -> (transformers model, our config, params, generation config) of a saved tiny
  checkpoint, built once per kind for the module (the tests using it request `hf` too)."""
  from distill_jax.convert import hf_whisper  # pylint: disable=import-outside-toplevel
  built = {}

  def get(kind: str):
    if kind not in built:
      model = tiny.hf_model(kind)
      folder = tiny.save(model, tmp_path_factory.mktemp(kind))
      config, params = hf_whisper.load_hf_folder(folder)
      built[kind] = (model, config, params, hf_whisper.read_generation_config(folder))
    return built[kind]
  return get


def _hf_generate(model, feats, settings, kind, **kw) -> list[list[int]]:
  import torch  # pylint: disable=import-outside-toplevel
  lang = dict(language="en", task="transcribe") if kind == "multi" else {}
  with torch.inference_mode():
    out = model.generate(input_features=torch.tensor(feats.transpose(0, 2, 1)),
                         max_new_tokens=settings.max_new_tokens, do_sample=False,
                         suppress_tokens=list(settings.suppress),
                         begin_suppress_tokens=list(settings.begin_suppress), **lang, **kw)
  eos = settings.eos_id
  return [row[:row.index(eos)] if eos in row else row for row in out.numpy().tolist()]


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["en", "multi"])
def test_greedy_matches_transformers_generate(hf, checkpoint, kind):
  del hf
  model, config, params, gen = checkpoint(kind)
  settings = dec.decode_settings(config, gen, max_new_tokens=MAX_NEW)
  feats = tiny.features(4, config.num_frames, seed=2)
  ref = _hf_generate(model, feats, settings, kind, num_beams=1)
  out = dec.generate(w.WhisperForConditionalGeneration(config), params, feats, settings)
  ours = dec.token_lists(out)
  assert ours == ref
  finished = np.asarray(out["finished"])
  assert finished.tolist() == [len(r) < MAX_NEW for r in ref]
  # Non-trivial: rows differ, some end with EOS and some run to max_new_tokens.
  assert len({tuple(r) for r in ref}) > 1 and finished.any() and not finished.all(), ref


# --- beam search against a numpy reference -------------------------------------------------------

def _reference_beam(step_logits, settings: dec.DecodeSettings, vocab: int):
  """CTranslate2's beam rule for one utterance, in plain Python / float64 numpy.

  step_logits(hyps: list of token lists) -> [len(hyps), V] next-token logits after prompt + hyp.
  Returns (tokens without EOS, score).
  """
  k, eos, n = settings.beam_size, settings.eos_id, settings.max_new_tokens
  every = np.zeros(vocab, bool)
  every[list(settings.suppress)] = True
  first = every.copy()
  first[list(settings.begin_suppress)] = True
  alive = [([], 0.0)]                     # only the first beam exists at the first step
  finished = []
  top_finished = False
  for i in range(n):
    logits = step_logits([h for h, _ in alive]).astype(np.float64)
    logits[:, first if i == 0 else every] = -np.inf
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    cands = [(s + logp[j, v], h + [v]) for j, (h, s) in enumerate(alive) for v in range(vocab)
             if np.isfinite(logp[j, v])]
    cands.sort(key=lambda c: -c[0])
    top = cands[:2 * k]
    for rank, (s, h) in enumerate(top[:k]):
      if h[-1] == eos or i == n - 1:
        finished.append((h[:-1] if h[-1] == eos else h, s))
        top_finished |= rank == 0
    alive = [(h, s) for s, h in top if h[-1] != eos][:k]
    if settings.length_penalty:
      stop = len(finished) >= settings.max_candidates
    else:  # no penalty: stop once the best candidate has finished
      stop = top_finished
    if stop:
      break
  scored = [(s / len(h) ** settings.length_penalty if h else -np.inf, h) for h, s in finished]
  score, tokens = max(scored, key=lambda c: c[0])
  return tokens, score


@pytest.mark.torch
@pytest.mark.parametrize("beam_size,patience,length_penalty", [
    (3, 1.0, 1.0),    # faster-whisper's defaults but the beam size (5)
    (3, 2.0, 1.0),    # patience: stop after 6 finished hypotheses
    (3, 1.0, 0.0),    # no length normalization: stop once the best candidate finished
])  # one compiled program: patience and length_penalty are traced
def test_beam_matches_numpy_reference(hf, checkpoint, beam_size, patience, length_penalty):
  del hf
  import torch  # pylint: disable=import-outside-toplevel
  model, config, params, gen = checkpoint("en")
  settings = dec.decode_settings(config, gen, max_new_tokens=MAX_NEW, beam_size=beam_size,
                                 patience=patience, length_penalty=length_penalty)
  feats = tiny.features(4, config.num_frames, seed=2)
  out = dec.generate(w.WhisperForConditionalGeneration(config), params, feats, settings)
  ours, scores = dec.token_lists(out), np.asarray(out["score"])
  greedy = dec.token_lists(dec.generate(w.WhisperForConditionalGeneration(config), params, feats,
                                        dataclasses.replace(settings, beam_size=1, patience=1.0,
                                                            length_penalty=1.0)))
  with torch.inference_mode():
    enc = model.model.encoder(torch.tensor(feats.transpose(0, 2, 1))).last_hidden_state
  for b in range(feats.shape[0]):
    def step_logits(hyps, b=b):
      ids = torch.tensor([list(settings.prompt) + h for h in hyps])
      with torch.inference_mode():
        res = model(encoder_outputs=(enc[b:b + 1].expand(len(hyps), -1, -1),),
                    decoder_input_ids=ids, use_cache=False)
      return res.logits[:, -1].numpy()
    ref_tokens, ref_score = _reference_beam(step_logits, settings, config.vocab_size)
    assert ours[b] == ref_tokens, f"row {b}"
    assert abs(scores[b] - ref_score) < SCORE_ATOL, (b, scores[b], ref_score)
  assert ours != greedy, "the beam never differs from greedy here: the test would not see it"


# --- real checkpoint -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.torch
def test_real_tiny_en_greedy_equals_transformers(hf):
  """Whisper tiny.en on the vendored LibriVox clips: our greedy transcript equals transformers'
  greedy `generate` with the same suppression, token for token; beam 5 is printed beside it.
  Also our non-speech rule against transformers' NON_SPEECH_TOKENS list for English models."""
  from distill_jax.audio import whisper_features  # pylint: disable=import-outside-toplevel
  from distill_jax.convert import hf_whisper  # pylint: disable=import-outside-toplevel
  folder = tiny.real_folder()
  clips = tiny.real_clips()
  config, params = hf_whisper.load_hf_folder(folder)
  gen = hf_whisper.read_generation_config(folder)
  settings = dec.decode_settings(config, gen, max_new_tokens=100)
  batch = np.zeros((len(clips), max(len(x) for _, x in clips)), np.float32)
  pad = np.ones_like(batch)
  for i, (_, x) in enumerate(clips):
    batch[i, :len(x)], pad[i, :len(x)] = x, 0.0
  feats, _ = whisper_features.log_mel_spectrogram(batch, pad, num_mels=config.num_mel_bins)
  feats = np.asarray(feats)
  model = hf.WhisperForConditionalGeneration.from_pretrained(folder).eval()
  tok = hf.AutoTokenizer.from_pretrained(folder)
  ref = _hf_generate(model, feats, settings, "en", num_beams=1)
  ref = [r[len(settings.prompt):] if r[:len(settings.prompt)] == list(settings.prompt) else r
         for r in ref]
  flax_model = w.WhisperForConditionalGeneration(config)
  ours = dec.token_lists(dec.generate(flax_model, params, feats, settings))
  beam = dec.token_lists(dec.generate(flax_model, params, feats,
                                      dataclasses.replace(settings, beam_size=5)))
  for (c, _), g, bm in zip(clips, ours, beam):
    print(f"\n{c}\n  greedy: {tok.decode(g)}\n  beam 5: {tok.decode(bm)}")
  assert ours == ref
  # pylint: disable-next=import-outside-toplevel
  from transformers.models.whisper import configuration_whisper
  rule = dec.non_speech_token_ids(lambda s: tok.encode(s, add_special_tokens=False))
  listed = set(configuration_whisper.NON_SPEECH_TOKENS)
  assert set(rule) <= listed and all(t >= tok.convert_tokens_to_ids("<|endoftext|>")
                                     for t in listed - set(rule)), sorted(listed ^ set(rule))
