"""Greedy and beam search for Whisper (`models.whisper`), jitted and batched, with the KV cache.

Prompt. Decoding starts from Whisper's start-of-transcript sequence, read from the model's
(generation) config, never hard-coded: `<|startoftranscript|>` (`decoder_start_token_id`), then
for a multilingual model the language and task tokens (`lang_to_id["<|en|>"]`,
`task_to_id["transcribe"]`), then `<|notimestamps|>` (`no_timestamps_token_id`): we always decode
without timestamps. One decoder call per loop iteration feeds one token at its position, the
prompt's first and then the generated ones, reading and extending the self-attention cache (the
compiled program holds a single copy of the decoder; the prompt is at most 4 tokens).

Suppression (`decode_settings`), as openai-whisper and faster-whisper do by default:
* every step: the generation config's `suppress_tokens` (-1 in it stands for the non-speech
  symbols: pass `non_speech_ids`, e.g. from `non_speech_token_ids(tokenizer.encode)`; the
  configs of the released checkpoints list them expanded), plus the control tokens the
  generation config names (`<|startoftranscript|>`, the task tokens of `task_to_id`,
  `prev_sot_token_id`); openai also suppresses `<|startoflm|>` and `<|nospeech|>`, which have
  no generation-config field but are in the released checkpoints' `suppress_tokens`;
* with `suppress_timestamps` (default): every timestamp token (`no_timestamps_token_id` + 1 ..
  vocab_size - 1). openai-whisper and faster-whisper do not suppress them in no-timestamps mode
  (the model rarely emits one after `<|notimestamps|>`); `suppress_timestamps=False` reproduces
  them exactly;
* `suppress_blank` (default): `begin_suppress_tokens` (the blank " " and `<|endoftext|>`) at the
  first sampled position only.
Suppressed logits are set to -inf before the log-softmax (openai-whisper and CTranslate2
renormalize; transformers' beam search applies them after, which changes scores, not the greedy
choice).

Greedy search: arg-max per row until `<|endoftext|>` (`eos_token_id`) or `max_new_tokens`; a row
that has ended is padded with EOS while the others go on (the loop exits once every row ended).
It matches transformers' `generate(num_beams=1, do_sample=False)` with the same prompt and
suppression token for token (tests/decode/test_whisper.py).

Beam search follows CTranslate2's `BeamSearch` (faster-whisper's engine; openai-whisper's
differs in small ways noted below), per utterance: from the K open hypotheses, the 2K best
extensions by cumulative log-probability; of the first K of them, those ending in EOS (or all K
at the last step) are finished, and the open set becomes the first K candidates not ending in EOS.
Decoding stops once round(K * patience) hypotheses have finished (with `length_penalty` 0: once
the best candidate has finished), or at `max_new_tokens`. The answer is the finished hypothesis
with the best score  sum(log p) / length ** length_penalty, where the sum includes EOS and the
length does not (openai-whisper's and CTranslate2's default, length_penalty 1: "sum logprob /
length"). transformers' beam search differs (length counting EOS, only the best K finished kept,
a different stopping heuristic), so the tests check ours against an independent numpy
re-implementation of the rule above driven by transformers' PyTorch model. openai-whisper's
beam search differs from CTranslate2's in that EOS candidates ranked past K but before the K-th
non-EOS one also finish, and per hypothesis only its K + 1 best tokens are candidates.

Static shapes throughout (`lax.while_loop` over a fixed-size cache and token buffer), so
`generate` compiles one program per (batch shape, prompt, suppression lists, max_new_tokens,
beam size); patience and length penalty are traced.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.decode import attention
from distill_jax.models.whisper import WhisperConfig, WhisperForConditionalGeneration

Array = jax.Array

# openai-whisper's non-speech symbols (tokenizer.non_speech_tokens): punctuation and music signs
# that do not transcribe speech; -1 in `suppress_tokens` stands for their token ids.
_NON_SPEECH_SYMBOLS = (list("\"#()*+/:;<=>@[\\]^_`{|}~「」『』")
                       + "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
                       .split())
_MUSIC_SYMBOLS = tuple("♩♪♫♬♭♮♯")


def non_speech_token_ids(encode: Callable[[str], Sequence[int]]) -> list[int]:
  """Token ids of openai-whisper's non-speech symbols (what -1 in `suppress_tokens` means).

  Args:
    encode: text -> token ids without special tokens, e.g. a transformers Whisper tokenizer's
      `lambda s: tok.encode(s, add_special_tokens=False)`.

  Returns:
    Sorted ids: " -" and " '" (first token), each symbol alone or after a space when it is a
    single token, and the first token of each music sign (alone and after a space).
  """
  ids = {encode(" -")[0], encode(" '")[0]}
  for symbol in _NON_SPEECH_SYMBOLS + list(_MUSIC_SYMBOLS):
    for toks in (encode(symbol), encode(" " + symbol)):
      if len(toks) == 1 or (symbol in _MUSIC_SYMBOLS and toks):
        ids.add(int(toks[0]))
  return sorted(ids)


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """Everything a search needs besides the model (hashable: a static argument under jit).

  Attributes:
    prompt: start-of-transcript token ids.
    eos_id: `<|endoftext|>`.
    suppress: ids never emitted.
    begin_suppress: ids not emitted at the first sampled position.
    max_new_tokens: most tokens generated after the prompt (EOS included).
    beam_size: 1 = greedy search, K > 1 = beam search.
    patience: beam search stops after round(K * patience) finished hypotheses.
    length_penalty: beam score = sum log p / length ** length_penalty.
  """
  prompt: tuple[int, ...]
  eos_id: int
  suppress: tuple[int, ...]
  begin_suppress: tuple[int, ...]
  max_new_tokens: int
  beam_size: int = 1
  patience: float = 1.0
  length_penalty: float = 1.0

  def __post_init__(self):
    if not self.prompt:
      raise ValueError("prompt: at least <|startoftranscript|> is needed")
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")
    if self.beam_size < 1:
      raise ValueError(f"beam_size={self.beam_size}: must be >= 1")
    if self.beam_size > 1 and round(self.beam_size * self.patience) < 1:
      raise ValueError(f"patience={self.patience}: beam_size * patience rounds to 0")
    if self.eos_id in self.suppress:
      raise ValueError(f"eos_id={self.eos_id} is in suppress: decoding could never end")

  @property
  def max_candidates(self) -> int:
    """Finished hypotheses that stop a beam search."""
    return int(round(self.beam_size * self.patience))

  def validate_for(self, config: WhisperConfig) -> None:
    """Checks ids and lengths against a model config (ValueError naming the field)."""
    v = config.vocab_size
    for name in ("prompt", "suppress", "begin_suppress"):
      bad = [i for i in getattr(self, name) if not 0 <= i < v]
      if bad:
        raise ValueError(f"{name} has ids outside the vocabulary (vocab_size={v}): {bad[:10]}")
    if not 0 <= self.eos_id < v:
      raise ValueError(f"eos_id={self.eos_id} is outside the vocabulary (vocab_size={v})")
    total = len(self.prompt) + self.max_new_tokens
    if total > config.max_target_positions:
      raise ValueError(f"prompt ({len(self.prompt)} tokens) + max_new_tokens "
                       f"({self.max_new_tokens}) = {total} > max_target_positions="
                       f"{config.max_target_positions}")
    if self.beam_size > 1 and 2 * self.beam_size > v:
      raise ValueError(f"beam_size={self.beam_size}: needs 2 * beam_size <= vocab_size={v}")


def _single_id(value: Any, name: str) -> int:
  if isinstance(value, (list, tuple)):
    if len(value) != 1:
      raise ValueError(f"{name}={value!r}: expected one token id")
    value = value[0]
  if value is None:
    raise ValueError(f"{name} is not set in the config or the generation config")
  return int(value)


def decode_settings(config: WhisperConfig, generation_config: Mapping[str, Any] | None = None,
                    *, language: str | None = None, task: str = "transcribe",
                    max_new_tokens: int | None = None, beam_size: int = 1,
                    patience: float = 1.0, length_penalty: float = 1.0,
                    suppress_blank: bool = True, suppress_timestamps: bool = True,
                    suppress_control_tokens: bool = True,
                    non_speech_ids: Iterable[int] | None = None) -> DecodeSettings:
  """Builds the prompt and the suppression lists from a model's configs.

  Args:
    config: the model config (`decoder_start_token_id`, `eos_token_id`, `suppress_tokens`,
      `begin_suppress_tokens`, `vocab_size`, used when the generation config lacks them).
    generation_config: the folder's generation_config.json as a dict
      (`convert.hf_whisper.read_generation_config`); needed for `no_timestamps_token_id` and, for
      a multilingual model, `lang_to_id` / `task_to_id`.
    language: for a multilingual model, a code ("en") or token ("<|en|>"); default "en". An
      English-only model takes None or "en".
    task: "transcribe" or "translate" (multilingual models).
    max_new_tokens: default min(max_target_positions // 2, what the positions leave) = 224 for
      the released models (openai-whisper's `sample_len`, CTranslate2's max_length / 2).
    beam_size, patience, length_penalty: see `DecodeSettings`.
    suppress_blank, suppress_timestamps, suppress_control_tokens: see the module docstring.
    non_speech_ids: what -1 in `suppress_tokens` stands for (required when -1 is there).

  Raises:
    ValueError: a needed id missing from both configs (named), an unknown language or task.
  """
  gen = dict(generation_config or {})
  get = lambda key, default=None: gen[key] if gen.get(key) is not None else default
  sot = _single_id(get("decoder_start_token_id", config.decoder_start_token_id),
                   "decoder_start_token_id")
  eos = _single_id(get("eos_token_id", config.eos_token_id), "eos_token_id")
  if get("no_timestamps_token_id") is None:
    raise ValueError("generation_config has no no_timestamps_token_id (transformers' Whisper "
                     "generation_config.json has it); it is needed for the prompt")
  no_ts = int(gen["no_timestamps_token_id"])
  lang_to_id = get("lang_to_id", {}) or {}
  task_to_id = get("task_to_id", {}) or {}
  multilingual = bool(get("is_multilingual", bool(lang_to_id) or config.is_multilingual))
  prompt = [sot]
  if multilingual and not lang_to_id:
    raise ValueError(f"a multilingual model (vocab_size={config.vocab_size}, generation_config "
                     f"is_multilingual={gen.get('is_multilingual')}) needs generation_config "
                     "lang_to_id and task_to_id for its prompt")
  if multilingual:
    lang = language or "en"
    token = lang if lang.startswith("<|") else f"<|{lang.lower()}|>"
    if token not in lang_to_id:
      raise ValueError(f"language={language!r}: {token} is not in generation_config lang_to_id "
                       f"({len(lang_to_id)} languages, e.g. {sorted(lang_to_id)[:5]})")
    if task not in task_to_id:
      raise ValueError(f"task={task!r} is not in generation_config task_to_id "
                       f"{sorted(task_to_id)}")
    prompt += [int(lang_to_id[token]), int(task_to_id[task])]
  elif language not in (None, "en", "<|en|>"):
    raise ValueError(f"language={language!r}: this is an English-only model "
                     "(generation_config is_multilingual false / no lang_to_id)")
  prompt.append(no_ts)

  suppress: set[int] = set()
  listed = get("suppress_tokens", config.suppress_tokens) or ()
  for t in listed:
    if int(t) == -1:
      if non_speech_ids is None:
        raise ValueError("suppress_tokens contains -1 (the non-speech symbols): pass "
                         "non_speech_ids, e.g. non_speech_token_ids(tokenizer.encode)")
      suppress.update(int(i) for i in non_speech_ids)
    else:
      suppress.add(int(t))
  if suppress_control_tokens:
    suppress.add(sot)
    suppress.update(int(i) for i in task_to_id.values())
    if get("prev_sot_token_id") is not None:
      suppress.add(int(gen["prev_sot_token_id"]))
  if suppress_timestamps:
    suppress.update(range(no_ts + 1, config.vocab_size))
  begin = ()
  if suppress_blank:
    begin = tuple(int(t) for t in (get("begin_suppress_tokens", config.begin_suppress_tokens)
                                   or ()))
  if max_new_tokens is None:
    max_new_tokens = min(config.max_target_positions // 2,
                         config.max_target_positions - len(prompt))
  settings = DecodeSettings(prompt=tuple(prompt), eos_id=eos, suppress=tuple(sorted(suppress)),
                            begin_suppress=begin, max_new_tokens=int(max_new_tokens),
                            beam_size=int(beam_size), patience=float(patience),
                            length_penalty=float(length_penalty))
  settings.validate_for(config)
  return settings


# --- searches ------------------------------------------------------------------------------------

def _masks(settings: DecodeSettings, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  every = np.zeros(vocab_size, bool)
  every[list(settings.suppress)] = True
  first = every.copy()
  first[list(settings.begin_suppress)] = True
  return every, first


def _log_probs(logits: Array, step: Array, settings: DecodeSettings) -> Array:
  """logits [N, V] at generated position `step` -> suppressed, renormalized log-probs [N, V]."""
  every, first = _masks(settings, logits.shape[-1])
  mask = jnp.where(step == 0, jnp.asarray(first), jnp.asarray(every))
  return jax.nn.log_softmax(jnp.where(mask, -jnp.inf, logits.astype(jnp.float32)), axis=-1)


def _start(model: WhisperForConditionalGeneration, params: Any, encoder_hidden: Array,
           settings: DecodeSettings, group: int) -> tuple[Any, Array, Callable]:
  """Cache for B * group rows, the prompt as an array, and the one-token decoder step.

  The prompt is fed one token per loop iteration through the same step as the generated
  tokens (so the compiled program holds one copy of the decoder; the prompt is <= 4 tokens).
  """
  t_max = len(settings.prompt) + settings.max_new_tokens - 1
  variables = {"params": params}
  cache = model.apply(variables, encoder_hidden, max(t_max, 1), group, method=model.init_cache)

  def step(tokens: Array, cache: Any, position: Array) -> tuple[Array, Any]:
    """tokens [N] at `position` -> (logits [N, V] for the next position, cache)."""
    logits, cache = model.apply(variables, tokens[:, None], cache, position,
                                method=model.decode)
    return logits[:, 0], cache

  return cache, jnp.asarray(settings.prompt, jnp.int32), step


def greedy_search(model: WhisperForConditionalGeneration, params: Any, encoder_hidden: Array,
                  settings: DecodeSettings) -> dict[str, Array]:
  """Arg-max decoding of a batch (jittable; `model` and `settings` static).

  Args:
    model: the Flax module. params: its params.
    encoder_hidden: [B, S, D] encoder output (`model.encode(...)["last_hidden_state"]`).
    settings: prompt, suppression and length (beam_size is ignored).

  Returns:
    dict with tokens [B, max_new_tokens] int32 (the generated ids, EOS at and after the end),
    lengths [B] (tokens before EOS), log_prob [B] (sum of the suppressed, renormalized
    log-probabilities of the tokens, EOS included), finished [B] bool (EOS emitted).
  """
  b = encoder_hidden.shape[0]
  n, p, eos = settings.max_new_tokens, len(settings.prompt), settings.eos_id
  cache, prompt, step = _start(model, params, encoder_hidden, settings, 1)

  def cond(c):
    return (c["pos"] < p - 1 + n) & ~jnp.all(c["done"])

  def body(c):
    pos = c["pos"]
    logits, cache = step(c["tok"], c["cache"], pos)
    i = pos - (p - 1)                       # index of the token chosen now; < 0: still prompt
    forced = i < 0
    lp = _log_probs(logits, i, settings)
    choice = jnp.where(c["done"], eos, jnp.argmax(lp, axis=-1).astype(jnp.int32))
    gain = jnp.take_along_axis(lp, choice[:, None], axis=1)[:, 0]
    keep = forced | c["done"]
    tokens = c["tokens"].at[:, jnp.maximum(i, 0)].set(choice)
    return dict(
        pos=pos + 1, cache=cache,
        tok=jnp.where(forced, prompt[jnp.minimum(pos + 1, p - 1)], choice),
        tokens=jnp.where(forced, c["tokens"], tokens),
        log_prob=c["log_prob"] + jnp.where(keep, 0.0, gain),
        done=c["done"] | (~forced & (choice == eos)))

  init = dict(pos=jnp.int32(0), cache=cache, tok=jnp.full((b,), prompt[0], jnp.int32),
              tokens=jnp.full((b, n), eos, jnp.int32), log_prob=jnp.zeros((b,), jnp.float32),
              done=jnp.zeros((b,), bool))
  c = jax.lax.while_loop(cond, body, init)
  lengths = jnp.sum(c["tokens"] != eos, axis=1).astype(jnp.int32)
  return dict(tokens=c["tokens"], lengths=lengths, log_prob=c["log_prob"], finished=c["done"])


def beam_search(model: WhisperForConditionalGeneration, params: Any, encoder_hidden: Array,
                settings: DecodeSettings,
                penalties: tuple[Array, Array] | None = None) -> dict[str, Array]:
  """CTranslate2-style beam search of a batch (see the module docstring; jittable).

  Args: as `greedy_search`, with settings.beam_size = K >= 1, and
    penalties: (length_penalty float32, max_candidates int32) scalars that replace the settings'
      (`generate` passes them traced, so that one program serves every length penalty and
      patience); None takes them from `settings`.

  Returns:
    dict with tokens [B, max_new_tokens] int32 (best hypothesis, EOS at and after its end),
    lengths [B], log_prob [B] (raw sum, EOS included), score [B] (log_prob / lengths **
    length_penalty), finished [B] bool (ended by EOS rather than by max_new_tokens).
  """
  b, k = encoder_hidden.shape[0], settings.beam_size
  n, p, eos = settings.max_new_tokens, len(settings.prompt), settings.eos_id
  if penalties is None:
    penalties = (settings.length_penalty, settings.max_candidates)
  alpha = jnp.asarray(penalties[0], jnp.float32)
  max_candidates = jnp.asarray(penalties[1], jnp.int32)
  no_penalty = alpha == 0.0
  cache, prompt, step = _start(model, params, encoder_hidden, settings, k)
  ar2k = jnp.arange(2 * k)

  def cond(c):
    return (c["pos"] < p - 1 + n) & ~jnp.all(c["done"])

  def forced(c, logits):
    del logits  # still in the prompt: every row feeds the next prompt token
    return dict(c, tok=jnp.full((b * k,), prompt[jnp.minimum(c["pos"] + 1, p - 1)], jnp.int32))

  def search(c, logits):
    i = c["pos"] - (p - 1)
    lp = _log_probs(logits, i, settings)                                     # [B*K, V]
    v = lp.shape[-1]
    cand = (c["alive_lp"][:, :, None] + lp.reshape(b, k, v)).reshape(b, k * v)
    top_lp, flat = jax.lax.top_k(cand, 2 * k)                                # [B, 2K]
    src, tok = flat // v, (flat % v).astype(jnp.int32)
    is_eos = tok == eos
    last = i == n - 1
    # Of the K best candidates, those ending in EOS (all K at the last step) finish.
    fin = (is_eos | last) & (ar2k < k)[None, :] & ~c["done"][:, None]
    length = jnp.where(is_eos, i, i + 1)                                     # EOS not counted
    # sum log p / length ** alpha; length 0 (EOS first) scores -inf unless alpha is 0.
    norm = jnp.where(no_penalty, 1.0, jnp.maximum(length, 1).astype(jnp.float32) ** alpha)
    score = jnp.where((length > 0) | no_penalty, top_lp / norm, -jnp.inf)
    hyp = jnp.take_along_axis(c["alive_tokens"], src[:, :, None], axis=1)    # [B, 2K, N]
    hyp = hyp.at[:, :, i].set(tok)                                          # EOS stays EOS
    fin_score = jnp.where(fin, score, -jnp.inf)
    j = jnp.argmax(fin_score, axis=1)
    take = lambda x: jnp.take_along_axis(x, j[:, None], axis=1)[:, 0]
    better = take(fin_score) > c["best_score"]
    best = dict(
        best_tokens=jnp.where(better[:, None],
                              jnp.take_along_axis(hyp, j[:, None, None], axis=1)[:, 0],
                              c["best_tokens"]),
        best_score=jnp.where(better, take(fin_score), c["best_score"]),
        best_lp=jnp.where(better, take(top_lp), c["best_lp"]),
        best_len=jnp.where(better, take(length), c["best_len"]),
        best_eos=jnp.where(better, take(is_eos), c["best_eos"]))
    n_fin = c["n_fin"] + jnp.sum(fin, axis=1)
    top_fin = c["top_fin"] | fin[:, 0]
    # The open set: the first K candidates not ending in EOS (>= K exist: one EOS per beam).
    sel = jnp.argsort(jnp.where(is_eos, 2 * k + ar2k[None, :], ar2k[None, :]), axis=1)[:, :k]
    pick = lambda x: jnp.take_along_axis(x, sel.reshape(sel.shape + (1,) * (x.ndim - 2)), 1)
    alive_src = pick(src)
    stop = jnp.where(no_penalty, top_fin & (n_fin >= 1), n_fin >= max_candidates)
    # Cross-attention K/V are per utterance (shared by its K rows): only self K/V move.
    moved = attention.gather_beams(
        {"self_k": c["cache"]["self_k"], "self_v": c["cache"]["self_v"]}, alive_src, b, k)
    return dict(c, cache=dict(c["cache"], **moved), tok=pick(tok).reshape(b * k),
                alive_lp=pick(top_lp), alive_tokens=pick(hyp), n_fin=n_fin, top_fin=top_fin,
                done=c["done"] | stop | last, **best)

  def body(c):
    logits, cache = step(c["tok"], c["cache"], c["pos"])
    c = dict(c, cache=cache)
    c = jax.lax.cond(c["pos"] < p - 1, forced, search, c, logits)
    return dict(c, pos=c["pos"] + 1)

  init = dict(
      pos=jnp.int32(0), cache=cache, tok=jnp.full((b * k,), prompt[0], jnp.int32),
      alive_lp=jnp.full((b, k), -jnp.inf, jnp.float32).at[:, 0].set(0.0),
      alive_tokens=jnp.full((b, k, n), eos, jnp.int32),
      n_fin=jnp.zeros((b,), jnp.int32), top_fin=jnp.zeros((b,), bool),
      done=jnp.zeros((b,), bool),
      best_tokens=jnp.full((b, n), eos, jnp.int32),
      best_score=jnp.full((b,), -jnp.inf, jnp.float32),
      best_lp=jnp.full((b,), -jnp.inf, jnp.float32),
      best_len=jnp.zeros((b,), jnp.int32), best_eos=jnp.zeros((b,), bool))
  c = jax.lax.while_loop(cond, body, init)
  return dict(tokens=c["best_tokens"], lengths=c["best_len"], log_prob=c["best_lp"],
              score=c["best_score"], finished=c["best_eos"])


# --- end to end ----------------------------------------------------------------------------------

def generate(model: WhisperForConditionalGeneration, params: Any, features: Array,
             settings: DecodeSettings, allow_shorter: bool = False) -> dict[str, Array]:
  """Encodes log-mel features and decodes them (greedy for beam_size 1, else beam search).

  Compiled once per (model, features shape, settings except patience and length_penalty,
  allow_shorter): those two are passed traced.

  Args:
    model: the Flax module (static). params: its params.
    features: [B, T, M] from `audio.whisper_features.log_mel_spectrogram`.
    settings: from `decode_settings`.
    allow_shorter: see `models.whisper.WhisperEncoder`.

  Returns:
    The dict of `greedy_search` / `beam_search`; `token_lists` turns it into Python lists.
  """
  penalties = (jnp.float32(settings.length_penalty), jnp.int32(settings.max_candidates))
  static = dataclasses.replace(settings, patience=1.0, length_penalty=1.0)
  return _generate(model, params, features, penalties, static, allow_shorter)


@functools.partial(jax.jit, static_argnames=("model", "settings", "allow_shorter"))
def _generate(model: WhisperForConditionalGeneration, params: Any, features: Array,
              penalties: tuple[Array, Array], settings: DecodeSettings,
              allow_shorter: bool) -> dict[str, Array]:
  enc = model.apply({"params": params}, features, allow_shorter, method=model.encode)
  hidden = enc["last_hidden_state"]
  if settings.beam_size == 1:
    return greedy_search(model, params, hidden, settings)
  return beam_search(model, params, hidden, settings, penalties)


def token_lists(result: Mapping[str, Array]) -> list[list[int]]:
  """The generated ids of each row, without EOS (detokenize with the model's tokenizer)."""
  tokens = np.asarray(result["tokens"])
  lengths = np.asarray(result["lengths"])
  return [tokens[r, :lengths[r]].tolist() for r in range(tokens.shape[0])]
